"""`outbox serve` before anything starts: what cannot work is refused at once, in one line, with
nothing created (no database, no threads); then a banner says what listens where and where the
data lives. The command itself (outbox/cli/main.py) only wires these to uvicorn."""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy.engine import make_url

from outbox.audit.checkpointer import checkpoint_file
from outbox.audit.signing import default_key_file
from outbox.commands.provider import sandbox_settings
from outbox.commands.sandbox import SandboxConfigurationError, sandbox_problem
from outbox.config import Settings
from outbox.mail.config import SINK_HOST, MailConfig, MailConfigError
from outbox.mail.embedded import runs_sink
from outbox.mail.environment import load_configured_mail, local_public_base_url, sink_dir
from outbox.policy.approval_gates import load_approvals_config
from outbox.policy.engine import load_policy

# uvicorn's default backlog; the socket listens from the moment it is bound, so a client that
# connects while the server starts waits instead of being refused.
BACKLOG = 2048
ALL_INTERFACES = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 - names, not a binding


class ServeRefused(Exception):
    """The server cannot start; the message is the one line to print."""


@dataclass(frozen=True)
class ServePlan:
    """This server's settings (its flags applied) and what it will run."""

    settings: Settings
    mail: MailConfig | None
    runs_sink: bool
    # One line on the command sandbox: how commands are confined, or that they are refused.
    sandbox: str = ""


def prepare_serve(
    settings: Settings, *, host: str, port: int, sink_port: int | None
) -> tuple[ServePlan, socket.socket]:
    """Everything that can fail at once, before a database or a thread exists: the plan, and the
    API's socket, bound. Raises ServeRefused."""
    plan = plan_serve(settings, port=port, sink_port=sink_port)
    sock = bind_api_socket(host, port)
    try:
        if plan.runs_sink:
            check_sink_port(plan.settings)
    except ServeRefused:
        sock.close()
        raise
    return plan, sock


def plan_serve(settings: Settings, *, port: int, sink_port: int | None) -> ServePlan:
    """Apply the flags and check what can be checked without creating anything.

    `--port` moves the URLs derived from it: when mail.yaml points unsubscribe links at this
    machine (the quickstart's http://127.0.0.1:8000/unsubscribe) and OUTBOX_PUBLIC_BASE_URL is
    unset, the links name the port this server listens on. Only the embedded server: with a
    broker, the workers write the links, and they read OUTBOX_PUBLIC_BASE_URL.
    """
    if not settings.policy_dir.is_dir():
        raise ServeRefused(
            f"no policy directory at {settings.policy_dir.resolve()}: run `outbox serve` in the directory "
            "that holds policies/ (the clone's root), or set OUTBOX_POLICY_DIR"
        )
    if settings.shadow_policy_dir is not None:
        check_shadow_policy(settings.shadow_policy_dir)
    settings = settings.model_copy(update={"api_port": port})
    if sink_port is not None:
        settings = settings.model_copy(update={"mail_sink_port": sink_port})
    mail = _mail_config(settings)
    if mail is not None and settings.is_embedded and settings.public_base_url is None:
        base_url = local_public_base_url(mail, port)
        if base_url is not None:
            settings = settings.model_copy(update={"public_base_url": base_url})
            mail = _mail_config(settings)
    sink = settings.is_embedded and mail is not None and runs_sink(mail, settings)
    return ServePlan(settings, mail, sink, sandbox_status(settings))


def check_shadow_policy(directory: Path) -> None:
    """A shadow policy that does not load refuses the start in one line (docs/shadow-policy.md):
    its rules and approval gates here; its tools load with the runtime, which refuses the same way."""
    try:
        load_policy(directory)
        load_approvals_config(directory)
    except Exception as exc:  # any load failure is the one line to print
        raise ServeRefused(f"the shadow policy {directory} did not load: {exc}") from None


def sandbox_status(settings: Settings) -> str:
    """Whether command tools can run confined here, said once at start.

    Inside a container that does not let bubblewrap create namespaces, command tools are refused
    (fail closed) rather than run unconfined, and the operator should hear it now, not from the
    first failed action. Production refuses OUTBOX_ALLOW_UNSANDBOXED (`check_production_safety`).
    """
    try:
        configured = sandbox_settings(settings)
    except SandboxConfigurationError as error:
        return f"UNAVAILABLE, command tools refused: {error}"
    problem = sandbox_problem(configured)
    if problem is None:
        limits = configured.resource_control().mode
        return f"bubblewrap + seccomp, limits by {limits}; each profile probed before its first command"
    if configured.allow_unsandboxed:
        return f"UNSANDBOXED (development only): {problem}"
    return f"UNAVAILABLE, command tools refused (fail closed): {problem}; see `outbox sandbox check`"


def _mail_config(settings: Settings) -> MailConfig | None:
    try:
        return load_configured_mail(settings)
    except MailConfigError as exc:
        raise ServeRefused(str(exc)) from None


def bind_api_socket(host: str, port: int) -> socket.socket:
    """The API's listening socket, bound now so that a taken port fails before anything starts;
    uvicorn serves on it."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ServeRefused(f"cannot listen on {host}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ServeRefused(
                f"{host}:{port} is already in use (another `outbox serve`?): stop it, or choose another --port"
            ) from None
        raise ServeRefused(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def check_sink_port(settings: Settings) -> None:
    """The embedded sink binds its port later, in the server's startup: try it now."""
    port = settings.mail_sink_port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((SINK_HOST, port))
        except OSError as exc:
            taken = exc.errno == errno.EADDRINUSE
            raise ServeRefused(
                f"the mail sink's port {SINK_HOST}:{port} is "
                + ("already in use" if taken else f"unusable ({exc.strerror})")
                + ": choose another with --sink-port (or OUTBOX_MAIL_SINK_PORT), or set "
                "OUTBOX_MAIL_EMBEDDED_SINK=false if an `outbox mail sink` already runs there"
            ) from None


def banner(plan: ServePlan, *, host: str, port: int, workers: int, mcp: bool) -> list[str]:
    """What listens where and where the data lives, for a person reading the terminal."""
    settings = plan.settings
    shown = "127.0.0.1" if host in ALL_INTERFACES else host
    url = f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"
    where = " (all interfaces)" if host in ALL_INTERFACES else ""
    if settings.is_embedded:
        mode = "embedded: the workers and the sweeper run in this process"
    else:
        mode = f"{workers} API process(es); workers take actions from {_without_password(settings.broker_url or '')}"
    lines = [f"agent-outbox ({settings.environment}), {mode}", f"  API          {url}{where}"]
    lines.append(f"  API docs     {url}/docs")
    if mcp:
        lines.append(f"  MCP          {url}/mcp")
    lines.append(f"  console      {url}/console (sign-in: `outbox users add`)")
    lines.append(f"  metrics      {url}/metrics")
    if plan.mail is not None and plan.runs_sink:
        lines.append(f"  mail sink    smtp://{SINK_HOST}:{settings.mail_sink_port} → {sink_dir(settings)}")
    if plan.mail is not None and (development := [s.domain for s in plan.mail.development_subdomains()]):
        elsewhere = "" if plan.runs_sink else f" (smtp://{SINK_HOST}:{settings.mail_sink_port}: `outbox mail sink`)"
        lines.append(f"  dev mail     {', '.join(development)}: to the sink only{elsewhere}, no DNS checks")
    lines.append(f"  database     {_database(settings)}")
    watch = " (reloaded when a file changes)" if settings.policy_watch else ""
    lines.append(f"  policies     {settings.policy_dir}/{watch}")
    if "file" in settings.audit_checkpoint_sinks:
        lines.append(f"  audit        checkpoints in {checkpoint_file(settings)}")
    if settings.audit_signing_key is None and settings.audit_signing_key_file is None:
        lines.append(f"  signing key  {default_key_file(settings)} (development; keep its public key elsewhere)")
    lines.append(f"  data dir     {settings.data_dir}/")
    if plan.sandbox:
        lines.append(f"  sandbox      {plan.sandbox}")
    return lines


def _database(settings: Settings) -> str:
    url = make_url(settings.database_url)
    if settings.is_sqlite:
        return f"{url.database} (SQLite)"
    return url.render_as_string(hide_password=True)


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
