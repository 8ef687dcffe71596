"""Where mail's files and secrets are, resolved from the process settings (`OUTBOX_*`).

Every process (API replicas, workers, the CLI) resolves them the same way, so that a token signed
by a worker verifies in any API replica and a key written by `outbox mail dkim-keygen` is the one
workers sign with.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

import structlog

from outbox.config import Settings
from outbox.mail.config import (
    SINK_HOST,
    MailConfig,
    RelayConfig,
    UnsubscribeConfig,
    is_loopback_host,
    load_mail_config,
)
from outbox.mail.sending.unsubscribe import MIN_SECRET_BYTES
from outbox.state_files import private_directory

log = structlog.get_logger(__name__)
SECRET_FILE = "unsubscribe-secret"  # noqa: S105 - a file name, not a secret


def mail_config_path(settings: Settings, policy_dir: Path | None = None) -> Path:
    """`OUTBOX_MAIL_CONFIG`, else `mail.yaml` in the policy directory."""
    return settings.mail_config or (policy_dir or settings.policy_dir) / "mail.yaml"


def load_configured_mail(settings: Settings, policy_dir: Path | None = None) -> MailConfig | None:
    """The mail configuration with deployment overrides applied, or None when there is none."""
    path = mail_config_path(settings, policy_dir)
    if not path.is_file():
        return None
    return with_deployment_overrides(load_mail_config(path), settings)


def with_deployment_overrides(config: MailConfig, settings: Settings) -> MailConfig:
    """mail.yaml is reviewed in git; where this deployment listens is not.

    - Development subdomains deliver to this deployment's sink, `127.0.0.1:OUTBOX_MAIL_SINK_PORT`;
      production refuses them: they are left out, so an agent's mail from one is refused as from
      any unconfigured subdomain, and no message meant for a local sink goes anywhere.
    - When `OUTBOX_PUBLIC_BASE_URL` is set, unsubscribe links point at its `/unsubscribe` endpoint.
    """
    config = _development_subdomains_here(config, settings)
    if settings.public_base_url is None:
        return config
    base_url = settings.public_base_url.rstrip("/") + "/unsubscribe"
    unsubscribe = UnsubscribeConfig.model_validate({**config.unsubscribe.model_dump(), "base_url": base_url})
    return config.model_copy(update={"unsubscribe": unsubscribe})


def _development_subdomains_here(config: MailConfig, settings: Settings) -> MailConfig:
    development = config.development_subdomains()
    if not development:
        return config
    if settings.environment == "production":
        log.warning(
            "mail.development_subdomains_refused",
            subdomains=[s.domain for s in development],
            reason="production sends nothing from development subdomains (they deliver to a local sink only)",
        )
        return config.model_copy(update={"subdomains": [s for s in config.subdomains if not s.development]})
    sink = RelayConfig(host=SINK_HOST, port=settings.mail_sink_port, starttls=False)
    subdomains = [s.model_copy(update={"relay": sink}) if s.development else s for s in config.subdomains]
    return config.model_copy(update={"subdomains": subdomains})


def local_public_base_url(config: MailConfig, port: int) -> str | None:
    """The base URL the embedded server answers unsubscribe links on, when mail.yaml points them
    at this machine (a loopback host, as in the quickstart): the same host on the port this
    server listens on. None when they point elsewhere (a public https URL): that one is kept."""
    parts = urlsplit(config.unsubscribe.base_url)
    host = parts.hostname
    if host is None or not is_loopback_host(host):
        return None
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"{parts.scheme}://{netloc}"


def key_base_dir(settings: Settings) -> Path | None:
    """What relative `key_file` paths resolve against (None: the working directory)."""
    return settings.dkim_key_dir


def sink_dir(settings: Settings) -> Path:
    return settings.mail_sink_dir or settings.data_dir / "maildir"


def unsubscribe_secret(settings: Settings) -> bytes:
    """`OUTBOX_UNSUBSCRIBE_SECRET`; in development, a random secret kept in the data directory.

    Generated once: written to a private temporary file, then hard-linked into place, so two
    processes starting together agree on one and nobody reads a half-written file. Production
    refuses to start without the setting (`Settings.check_production_safety`): replicas on other
    machines could not share a file.
    """
    if settings.unsubscribe_secret is not None:
        secret = settings.unsubscribe_secret.get_secret_value().encode()
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"OUTBOX_UNSUBSCRIBE_SECRET needs at least {MIN_SECRET_BYTES} bytes")
        return secret
    if settings.environment == "production":
        raise ValueError("OUTBOX_UNSUBSCRIBE_SECRET is required in production")
    path = settings.data_dir / SECRET_FILE
    if not path.exists():
        private_directory(path.parent)  # the data directory is 0700 from whichever file comes first
        draft = path.with_name(f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(secrets.token_hex(32) + "\n")
        try:
            with contextlib.suppress(FileExistsError):
                os.link(draft, path)
        finally:
            draft.unlink()
    secret = path.read_text(encoding="ascii").strip().encode()
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"{path} holds no usable secret; delete it to generate a new one")
    return secret
