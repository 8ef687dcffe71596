"""Settings, read from `OUTBOX_*` environment variables and an optional `.env` file.

The defaults are the embedded mode: SQLite under `.outbox/`, no broker server (an in-process
dispatcher), policies from `./policies`. Production mode refuses to start on defaults that are
only safe on a laptop.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from outbox.urls import parse_url


class UnsafeConfigurationError(RuntimeError):
    """Production settings that would put actions or credentials at risk."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OUTBOX_", env_file=".env", extra="ignore")

    environment: Literal["development", "production"] = "development"
    database_url: str = "sqlite:///.outbox/outbox.db"
    # None means embedded: actions are dispatched to worker threads inside the API process.
    broker_url: str | None = None
    policy_dir: Path = Path("policies")
    # A second policy directory that decides every submission again, never enforced: its
    # decision is recorded on the action for comparison (docs/shadow-policy.md). None: no shadow.
    shadow_policy_dir: Path | None = None
    data_dir: Path = Path(".outbox")
    admin_token: SecretStr | None = None
    # How many worker processes share this database; SQLite is refused above one in production.
    worker_processes: int = Field(default=1, ge=1)
    embedded_worker_threads: int = Field(default=2, ge=1, le=64)
    # Embedded backpressure: while more queued actions than this wait for a worker thread, a
    # submission's answer waits too, so accepting never outruns executing (README, Performance).
    embedded_queue_bound: int = Field(default=64, ge=1)

    # Execution: leases, sweeping and retries.
    lease_seconds: float = Field(default=120.0, gt=0)
    sweep_interval_seconds: float = Field(default=2.0, gt=0)
    # A queued action nobody claimed after this long is published again.
    republish_after_seconds: float = Field(default=5.0, gt=0)
    max_attempts: int = Field(default=5, ge=1)
    retry_base_seconds: float = Field(default=2.0, gt=0)
    retry_max_seconds: float = Field(default=600.0, gt=0)

    # Agent contract.
    idempotency_ttl_hours: int = Field(default=24, ge=24)
    max_request_bytes: int = Field(default=1_048_576, ge=1024)
    max_wait_seconds: int = Field(default=60, ge=0, le=60)
    page_size_max: int = Field(default=100, ge=1)

    # The port the API listens on (`outbox serve --port` sets it): the sandboxes' network
    # profiles are fenced off it, like off every other port of the outbox's own.
    api_port: int = Field(default=8000, ge=1, le=65535)

    # The MCP face at /mcp (docs/mcp.md). Host and Origin headers it answers: the SDK's DNS
    # rebinding protection, kept on. `host:*` allows any port of that host. Behind a proxy or on
    # a public name, add the name clients use (JSON lists).
    mcp_allowed_hosts: list[str] = Field(default_factory=lambda: ["127.0.0.1:*", "localhost:*", "[::1]:*"])
    mcp_allowed_origins: list[str] = Field(
        default_factory=lambda: ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
    )
    # A tools/call without a key in `_meta` is de-duplicated against the same call (agent, tool,
    # canonical arguments, on_behalf_of) made within this many seconds: a client's blind retry
    # never runs twice. 0 turns the derived key off (every keyless call is a new action).
    mcp_derived_key_window_seconds: int = Field(default=600, ge=0, le=86_400)
    # How long a tools/call waits for the action to settle before answering with it pending.
    mcp_call_wait_seconds: float = Field(default=10.0, ge=0, le=60)

    # The web console at /console (docs/console.md): sessions are server-side rows.
    console_session_minutes: int = Field(default=480, ge=5, le=10_080)
    # Failed sign-ins allowed per e-mail address and per client address in 15 minutes.
    console_login_attempts: int = Field(default=5, ge=1, le=1000)
    # Sign-in through an authenticating proxy (oauth2-proxy, Pomerium, …): the header carrying
    # the signed-in person's e-mail is trusted only from these addresses or networks (JSON list,
    # e.g. ["10.0.0.5", "10.0.1.0/24"]); from anywhere else it is refused. Empty: no proxy.
    console_trusted_proxies: list[str] = Field(default_factory=list)
    console_identity_header: str = "X-Forwarded-Email"

    # Policy: reload on file change (the embedded server and API replicas watch the directory).
    policy_watch: bool = True

    # http.request
    http_timeout_seconds: float = Field(default=10.0, gt=0)
    http_max_response_bytes: int = Field(default=1_048_576, ge=1024)

    log_level: str = "INFO"
    log_json: bool = True

    # Approvals and Slack (docs/approvals.md). Without a bot token no Slack message is posted;
    # without a signing secret /slack/interactions answers 503. The CLI and admin API always work.
    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    # The Web API base URL: Slack's, or a Slack-compatible gateway, or a local fake in tests.
    slack_api_url: str = "https://slack.com/api/"
    # Channel for approval requests whose approvals.yaml gate names none.
    slack_default_channel: str | None = None
    slack_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # Durable deliveries (Slack calls, agent callbacks): attempts and backoff before giving up.
    delivery_max_attempts: int = Field(default=12, ge=1)
    delivery_retry_base_seconds: float = Field(default=2.0, gt=0)
    delivery_retry_max_seconds: float = Field(default=600.0, gt=0)
    # HMAC-SHA256 key for the X-Outbox-Signature header of per-action callbacks; without it
    # callbacks are not sent (the delivery is recorded as dead with the reason).
    callback_secret: SecretStr | None = None
    callback_timeout_seconds: float = Field(default=5.0, gt=0, le=60)

    # Command tools and their sandbox (policies/tools/, outbox sandbox check).
    # Development only: run commands without bubblewrap when it cannot work here; refused in
    # production and recorded on every action that runs that way.
    allow_unsandboxed: bool = False
    sandbox_bwrap_path: Path | None = None
    sandbox_prlimit_path: Path = Path("/usr/bin/prlimit")
    sandbox_scratch_root: Path | None = None
    # The unprivileged host uid/gid commands run as (root is exempt from process limits).
    sandbox_host_uid: int = Field(default=65534, ge=1)
    sandbox_host_gid: int = Field(default=65534, ge=1)
    # Secrets tools may receive inside the sandbox only: JSON name→value, or a directory with one
    # file per secret (a Kubernetes Secret volume), re-read at each run.
    sandbox_secrets: dict[str, SecretStr] = Field(default_factory=dict)
    sandbox_secrets_dir: Path | None = None
    # Directories tools may see read-only (JSON name→path). Nothing by default: the working
    # directory holds the outbox's own data. `sandbox_repo_dir` names the `repo` mount (the
    # quickstart's fs and git tools); unset, those tools are unavailable and say why. A mount
    # that is, contains or lies inside the outbox's state is refused at start.
    sandbox_mounts: dict[str, Path] = Field(default_factory=dict)
    sandbox_repo_dir: Path | None = None
    # Sandbox egress (docs/operations.md, "Sandbox egress"): the named destinations tools reach
    # through the egress proxy, JSON name -> {"host", "port", "allow_private"} (checked at start),
    # e.g. {"staging": {"host": "api.staging.example.com", "port": 6443}}; and the nameserver the
    # proxy resolves them with ("ip", "ip:port", "[ipv6]:port"; None: /etc/resolv.conf's servers).
    sandbox_destinations: dict[str, dict[str, Any]] = Field(default_factory=dict)
    sandbox_egress_resolver: str | None = None

    # Mail (docs/mail.md): the `email.send` tool, its feedback endpoints and the local sink.
    # The mail configuration; None means <policy_dir>/mail.yaml (no such file: no email tool).
    mail_config: Path | None = None
    # Resolver for the SPF/DKIM/DMARC checks: "ip", "ip:port" or "[ipv6]:port"; None: the system's.
    dns_resolver: str | None = None
    dns_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # How often every subdomain's DNS is checked again (the result is stored for every process).
    mail_dns_check_interval_seconds: float = Field(default=900.0, ge=10)
    # HMAC key of the RFC 8058 unsubscribe tokens, at least 32 bytes. Required in production; in
    # development it is generated once into <data_dir>/unsubscribe-secret.
    unsubscribe_secret: SecretStr | None = None
    # Relative DKIM `key_file` paths in mail.yaml resolve against this (the working directory).
    dkim_key_dir: Path | None = None
    # The local SMTP sink (`outbox mail sink`; `outbox serve` starts it when a relay points at
    # 127.0.0.1:<mail_sink_port>). None means <data_dir>/maildir.
    mail_sink_dir: Path | None = None
    mail_sink_port: int = Field(default=2525, ge=1, le=65535)
    mail_embedded_sink: bool = True
    # The externally reachable URL of the API; unsubscribe links become
    # <public_base_url>/unsubscribe/<token>. Unset: mail.yaml's unsubscribe.base_url.
    public_base_url: str | None = None
    # Bearer token of POST /v1/mail/events and /v1/mail/dsn; unset, both answer 503.
    mail_events_token: SecretStr | None = None
    # A send that cannot go within this many hours of its submission fails with its reason.
    mail_max_deferral_hours: float = Field(default=72.0, gt=0)
    # Paused (kill switch, breaker) and DNS-blocked mail is looked at again this often.
    mail_pause_recheck_seconds: float = Field(default=60.0, gt=0)

    # Audit checkpoints (docs/audit.md): the chain head, signed with a key the database does not
    # hold, written to sinks the database writer cannot rewrite. The key: PEM (PKCS#8 Ed25519) or
    # the base64/base64url raw 32-byte seed, in a variable or in a file (a mounted secret). Neither
    # set: development keeps one in <data_dir>/audit-signing.key (0600); production refuses.
    audit_signing_key: SecretStr | None = None
    audit_signing_key_file: Path | None = None
    audit_checkpoint_sinks: list[Literal["file", "log"]] = ["file", "log"]  # pydantic copies the default
    # The append-only file sink; None means <data_dir>/audit-checkpoints.jsonl.
    audit_checkpoint_file: Path | None = None
    # Each turn seals the events committed since the last one, then checkpoints the head: an event
    # is chained and signed within about a second of its commit (the merge delay, docs/audit.md).
    audit_checkpoint_interval_seconds: float = Field(default=0.5, gt=0, le=60)
    # `outbox audit verify` fails when events older than this are covered by no checkpoint.
    audit_checkpoint_tolerance_seconds: float = Field(default=60.0, gt=0)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def is_embedded(self) -> bool:
        return self.broker_url is None

    # Outbound destinations are configuration only, parsed once here (policies/README.md,
    # "Outbound requests"): no agent-controlled value ever reaches them.
    @field_validator("slack_api_url")
    @classmethod
    def _slack_api_url(cls, value: str) -> str:
        # The canonical URL form (outbox/urls.py); the Slack client appends method names to it,
        # so it ends with "/" and carries no query.
        url = parse_url(value)
        if url.query is not None:
            raise ValueError("the Slack API base URL takes no query string")
        return url.wire if url.path.endswith("/") else f"{url.wire}/"

    @field_validator("dns_resolver")
    @classmethod
    def _dns_resolver(cls, value: str | None) -> str | None:
        return value if value is None or value == "system" else _canonical_resolver(value)

    @model_validator(mode="after")
    def _normalise_database_url(self) -> Settings:
        # `postgresql://` would pick psycopg2, which we do not ship; psycopg 3 is the driver.
        if self.database_url.startswith("postgresql://"):
            self.database_url = "postgresql+psycopg://" + self.database_url.removeprefix("postgresql://")
        return self

    def _mail_configured(self) -> bool:
        """Mail is configured (the email tool exists) when its configuration file does."""
        return (self.mail_config or self.policy_dir / "mail.yaml").is_file()

    def check_production_safety(self) -> None:
        """Refuse to run production on defaults that are only safe for a single developer."""
        if self.environment != "production":
            return
        problems: list[str] = []
        if self.admin_token is None or len(self.admin_token.get_secret_value()) < 24:
            problems.append("OUTBOX_ADMIN_TOKEN must be set to a secret of at least 24 characters")
        if self.is_sqlite and self.worker_processes > 1:
            problems.append(
                "SQLite cannot be shared by several worker processes: set OUTBOX_DATABASE_URL=postgresql+psycopg://…"
            )
        if self.is_embedded:
            problems.append("production needs a broker: set OUTBOX_BROKER_URL=redis://…")
        if self._mail_configured() and (
            self.unsubscribe_secret is None or len(self.unsubscribe_secret.get_secret_value().encode()) < 32
        ):
            problems.append(
                "OUTBOX_UNSUBSCRIBE_SECRET must be set to a secret of at least 32 bytes: it signs the "
                "unsubscribe links of agent mail, and every replica must share it"
            )
        if self.audit_signing_key is None and self.audit_signing_key_file is None:
            problems.append(
                "OUTBOX_AUDIT_SIGNING_KEY (or OUTBOX_AUDIT_SIGNING_KEY_FILE, a mounted secret) must be set: "
                "it signs the audit checkpoints and must not live beside the database"
            )
        if not self.audit_checkpoint_sinks:
            problems.append("OUTBOX_AUDIT_CHECKPOINT_SINKS is empty: audit checkpoints would be kept nowhere")
        if "log" in self.audit_checkpoint_sinks and self.log_level.upper() not in {"DEBUG", "INFO"}:
            problems.append(
                f"OUTBOX_LOG_LEVEL={self.log_level} drops the audit.checkpoint lines of the log sink: "
                "use INFO, or remove log from OUTBOX_AUDIT_CHECKPOINT_SINKS"
            )
        if self.allow_unsandboxed:
            problems.append("OUTBOX_ALLOW_UNSANDBOXED is for development only: commands must run sandboxed")
        if problems:
            raise UnsafeConfigurationError("; ".join(problems))


def _canonical_resolver(spec: str) -> str:
    """`ip`, `ip:port` or `[ipv6]:port` as `ip:port` / `[ipv6]:port`: an address, never a name
    (finding the resolver must not itself need DNS)."""
    host, port = spec, "53"
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise ValueError(f"resolver {spec!r}: expected ip, ip:port or [ipv6]:port")
        port = rest.removeprefix(":") or "53"
    elif spec.count(":") == 1:
        host, port = spec.split(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"resolver {spec!r}: expected ip, ip:port or [ipv6]:port (an address, not a name)") from None
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"resolver {spec!r}: the port must be a number from 1 to 65535")
    return f"[{address}]:{int(port)}" if address.version == 6 else f"{address}:{int(port)}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
