"""`outbox mail …`: status, DNS checks, DKIM keys, suppressions, kill switches, the local sink.

Thin: each command parses, calls `outbox.mail.service` (or the library), prints. Whoever can run
this CLI can write the database, so the acting identity (`--as`) is recorded, not authenticated.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from outbox.cli.context import cli_runtime
from outbox.mail.models import SuppressionReason

if TYPE_CHECKING:
    from outbox.mail.config import MailConfig, SubdomainConfig
    from outbox.mail.dns.checks import SubdomainDnsReport
    from outbox.mail.schemas import MailStatusOut

mail_app = typer.Typer(no_args_is_help=True, help="Agent mail: status, DNS, DKIM keys, suppressions, kill switches.")
suppression_app = typer.Typer(no_args_is_help=True, help="Recipients who must not be mailed.")
mail_app.add_typer(suppression_app, name="suppression")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
AsOption = Annotated[str, typer.Option("--as", help="Who is acting (recorded in the audit log).")]


def _config() -> MailConfig:
    from outbox.config import get_settings
    from outbox.mail.config import MailConfigError
    from outbox.mail.environment import load_configured_mail, mail_config_path

    settings = get_settings()
    try:
        config = load_configured_mail(settings)
    except MailConfigError as exc:
        _fail(str(exc))
    if config is None:
        _fail(f"mail is not configured: {mail_config_path(settings)} does not exist")
    return config


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _subdomain(config: MailConfig, domain: str) -> SubdomainConfig:
    sub = config.subdomain(domain)
    if sub is None:
        _fail(f"{domain} is not a configured subdomain ({', '.join(config.allowed_sender_domains())})")
    return sub


# --- Status --------------------------------------------------------------------------------


def _status_text(status: MailStatusOut) -> str:
    lines: list[str] = []
    if status.all_paused:
        lines.append(f"ALL MAIL PAUSED by {status.all_paused.paused_by}: {status.all_paused.reason}")
    for agent in status.agents_paused:
        lines.append(f"agent {agent.target} paused by {agent.paused_by}: {agent.reason}")
    for sub in status.subdomains:
        lines.append("")
        lines.append(f"{sub.domain}  [{sub.sending}]")
        lines.extend(f"  ! {reason}" for reason in sub.reasons)
        if sub.warm_up:
            day = f"day {sub.warm_up.day}" if sub.warm_up.day is not None else "complete"
            lines.append(
                f"  warm-up     {day} (from {sub.warm_up.start_date}): {sub.warm_up.daily_cap_today} of "
                f"{sub.warm_up.full_daily_cap} per day"
            )
        for cap in [*sub.caps, *sub.recipient_domains, *sub.agents]:
            lines.append(f"  {cap.used:>6} / {cap.limit:<6} {cap.name}  (resets {cap.resets_at:%Y-%m-%d %H:%M} UTC)")
        if sub.per_recipient_daily is not None:
            lines.append(
                f"  {sub.recipients_at_daily_cap:>6} recipient(s) at their daily cap of {sub.per_recipient_daily}"
            )
        b = sub.breaker
        lines.append(
            f"  breaker     {'TRIPPED' if b.tripped else 'closed'}: {b.sent} sent, bounces {b.bounce_rate:.2%} "
            f"(pause at {b.bounce_threshold:.2%}), complaints {b.complaint_rate:.2%} (pause at "
            f"{b.complaint_threshold:.2%}), minimum sample {b.minimum_sample}, since {b.since:%Y-%m-%d %H:%M} UTC"
        )
        d = sub.dns
        if d.development:
            lines.append("  dns         development: sink only, DNS never checked")
            continue
        verdict = "not checked" if d.ok is None else ("ok" if d.ok else "FAILING")
        enforced = "enforced" if d.enforced else "not enforced"
        checked = f", checked {d.checked_at:%Y-%m-%d %H:%M} UTC" if d.checked_at else ""
        lines.append(f"  dns         {verdict} ({enforced}{checked})" + (f": {d.reason}" if d.reason else ""))
    counts = ", ".join(f"{n} {reason}" for reason, n in sorted(status.suppressions.items())) or "none"
    lines.append("")
    lines.append(f"suppressions: {counts}")
    return "\n".join(lines).lstrip("\n")


@mail_app.command("status")
def status_command(as_json: JsonOption = False) -> None:
    """Usage against every cap, warm-up day, breaker, pause and DNS state per subdomain."""
    from outbox.mail.service import MailOperationError, mail_status

    with cli_runtime() as runtime:
        try:
            status = mail_status(runtime)
        except MailOperationError as exc:
            _fail(str(exc))
    typer.echo(status.model_dump_json(indent=2) if as_json else _status_text(status))


# --- DNS and DKIM --------------------------------------------------------------------------


@mail_app.command("check-dns")
def check_dns_command(as_json: JsonOption = False) -> None:
    """Check SPF, DKIM and DMARC for every subdomain, print a table, and store the verdicts.

    Exits 1 when a subdomain that enforces its checks fails (it is blocked from sending)."""
    from outbox.mail.dns.verdicts import blocks_sending
    from outbox.mail.service import check_dns, mail_config

    with cli_runtime() as runtime:
        config = mail_config(runtime)
        reports = check_dns(runtime)

    def blocks(report: SubdomainDnsReport) -> bool:
        sub = config.subdomain(report.subdomain)
        return blocks_sending(sub is not None and sub.enforce_dns_checks, report.ok)

    if as_json:
        typer.echo(json.dumps([r.model_dump(mode="json") for r in reports], indent=2))
    else:
        for report in reports:
            verdict = "ok" if report.ok else ("FAIL: blocked from sending" if blocks(report) else "FAIL (not enforced)")
            typer.echo(f"{report.subdomain}  {verdict}")
            typer.echo(f"  {'CHECK':<6} {'STATUS':<6} {'QUERY':<48} REASON")
            for check in report.checks:
                typer.echo(f"  {check.name:<6} {check.status.value:<6} {check.query:<48} {check.reason}")
                if check.record:
                    typer.echo(f"  {'':<6} {'':<6} {'':<48} record: {check.record}")
            typer.echo("")
    if any(blocks(report) for report in reports):
        raise typer.Exit(1)


@mail_app.command("dkim-keygen")
def dkim_keygen_command(
    subdomain: Annotated[str, typer.Option("--subdomain", help="The sending subdomain, as in mail.yaml.")],
    out: Annotated[
        Path | None, typer.Option(help="Write here instead (needed when the key comes from an environment variable).")
    ] = None,
) -> None:
    """Generate the subdomain's DKIM key (algorithm from mail.yaml), write it where mail.yaml's
    key_file says (never overwriting), and print the DNS TXT record to publish."""
    from outbox.config import get_settings
    from outbox.mail.environment import key_base_dir
    from outbox.mail.sending.dkim_signing import dkim_record_name, generate_key, write_private_key

    sub = _subdomain(_config(), subdomain)
    base = key_base_dir(get_settings())
    path = out
    if path is None:
        if sub.dkim.key_file is None:
            _fail(
                f"{sub.domain} reads its key from ${sub.dkim.key_env}: give --out FILE, then put the file's "
                "content into that variable (and delete the file)"
            )
        path = sub.dkim.key_file if base is None else base / sub.dkim.key_file
    key = generate_key(sub.dkim.algorithm)
    try:
        write_private_key(path, key)
    except FileExistsError:
        _fail(f"{path} exists; a key is never overwritten (move it away to rotate, with a new selector)")
    typer.echo(f"wrote {sub.dkim.algorithm} key to {path} (mode 600)", err=True)
    typer.echo(f"{dkim_record_name(sub.dkim.selector, sub.domain)}. IN TXT {_txt_strings(key.txt_record())}")


def _txt_strings(value: str) -> str:
    """A zone-file TXT value: quoted strings of at most 255 characters (RFC 1035 §3.3.14)."""
    return " ".join(f'"{value[i : i + 255]}"' for i in range(0, len(value), 255))


@mail_app.command("dkim-record")
def dkim_record_command(
    subdomain: Annotated[str | None, typer.Option("--subdomain", help="Only this subdomain.")] = None,
) -> None:
    """Print the DKIM TXT record each subdomain's key needs (from the configured private key)."""
    from outbox.config import get_settings
    from outbox.mail.environment import key_base_dir
    from outbox.mail.sending.dkim_signing import DkimKeyError, dkim_record_name, load_signing_key

    config = _config()
    subs = [_subdomain(config, subdomain)] if subdomain else config.subdomains
    failed = False
    for sub in subs:
        name = dkim_record_name(sub.dkim.selector, sub.domain)
        try:
            key = load_signing_key(sub.dkim, key_base_dir(get_settings()))
        except DkimKeyError as exc:
            typer.echo(f"; {name}: {exc}", err=True)
            failed = True
            continue
        typer.echo(f"{name}. IN TXT {_txt_strings(key.txt_record())}")
    if failed:
        raise typer.Exit(1)


# --- Suppressions --------------------------------------------------------------------------


@suppression_app.command("list")
def suppression_list(
    recipient: Annotated[str | None, typer.Option(help="Only this address.")] = None,
    subdomain: Annotated[str | None, typer.Option(help='Only this scope ("*": every subdomain).')] = None,
    reason: Annotated[SuppressionReason | None, typer.Option(help="Only this reason.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 100,
    as_json: JsonOption = False,
) -> None:
    """List suppressed recipients, newest first."""
    from outbox.mail.service import MailOperationError, list_suppressions

    with cli_runtime() as runtime:
        try:
            page = list_suppressions(runtime, recipient=recipient, subdomain=subdomain, reason=reason, limit=limit)
        except MailOperationError as exc:
            _fail(str(exc))
    if as_json:
        typer.echo(page.model_dump_json(indent=2))
        return
    typer.echo(f"{'RECIPIENT':<40} {'SCOPE':<32} {'REASON':<12} {'SINCE':<17} SOURCE")
    for row in page.items:
        typer.echo(
            f"{row.recipient:<40} {row.scope:<32} {row.reason:<12} {row.created_at:%Y-%m-%d %H:%M} {row.source}"
            + (f"  ({row.detail})" if row.detail else "")
        )
    typer.echo(
        f"total: {sum(page.counts.values())} ({', '.join(f'{n} {r}' for r, n in page.counts.items()) or 'none'})",
        err=True,
    )


@suppression_app.command("add")
def suppression_add(
    recipient: Annotated[str, typer.Argument(help="The address to stop mailing.")],
    subdomain: Annotated[str | None, typer.Option(help="Only from this subdomain (default: every one).")] = None,
    reason: Annotated[SuppressionReason, typer.Option(help="Why.")] = SuppressionReason.MANUAL,
    detail: Annotated[str | None, typer.Option(help="A note kept with the entry.")] = None,
    actor: AsOption = "cli",
) -> None:
    """Suppress a recipient (takes effect for the next send)."""
    from pydantic import ValidationError

    from outbox.mail.schemas import SuppressionIn
    from outbox.mail.service import MailOperationError, add_suppression

    try:
        request = SuppressionIn(recipient=recipient, subdomain=subdomain, reason=reason, detail=detail)
    except ValidationError as exc:
        _fail(exc.errors()[0]["msg"])
    with cli_runtime() as runtime:
        try:
            row, added = add_suppression(runtime, request, f"cli:{actor}")
        except MailOperationError as exc:
            _fail(str(exc))
    typer.echo(f"{'suppressed' if added else 'already suppressed'}: {row.recipient} ({row.scope}, {row.reason})")


@suppression_app.command("remove")
def suppression_remove(
    recipient: Annotated[str, typer.Argument(help="The address.")],
    subdomain: Annotated[str | None, typer.Option(help='Only this scope ("*": the every-subdomain entry).')] = None,
    actor: AsOption = "cli",
) -> None:
    """Remove a recipient's suppression (all of them unless --subdomain is given)."""
    from outbox.mail.service import MailOperationError, remove_suppression

    with cli_runtime() as runtime:
        try:
            removed = remove_suppression(runtime, recipient, subdomain, f"cli:{actor}")
        except MailOperationError as exc:
            _fail(str(exc))
    if not removed:
        _fail(f"{recipient} is not suppressed" + (f" for {subdomain}" if subdomain else ""))
    for row in removed:
        typer.echo(f"removed: {row.recipient} ({row.scope}, {row.reason})")


# --- Kill switches -------------------------------------------------------------------------

SubdomainOption = Annotated[str | None, typer.Option("--subdomain", help="One sending subdomain.")]
AgentOption = Annotated[str | None, typer.Option("--agent", help="One agent's mail.")]
AllOption = Annotated[bool, typer.Option("--all", help="All agent mail.")]


def _one_scope(subdomain: str | None, agent: str | None, everything: bool) -> None:
    if sum([subdomain is not None, agent is not None, everything]) != 1:
        _fail("give exactly one of --subdomain, --agent or --all", code=2)


@mail_app.command("pause")
def pause_command(
    subdomain: SubdomainOption = None,
    agent: AgentOption = None,
    everything: AllOption = False,
    reason: Annotated[str, typer.Option(help="Why (shown in deferral reasons and status).")] = "paused by an operator",
    actor: AsOption = "cli",
) -> None:
    """Kill switch: stop sending now. Paused mail is deferred and waits; nothing is lost."""
    from outbox.mail.service import MailOperationError, pause

    _one_scope(subdomain, agent, everything)
    with cli_runtime() as runtime:
        try:
            result = pause(runtime, subdomain=subdomain, agent=agent, reason=reason, actor=f"cli:{actor}")
        except MailOperationError as exc:
            _fail(str(exc))
    typer.echo(("paused: " if result.changed else "") + result.detail)


@mail_app.command("resume")
def resume_command(
    subdomain: SubdomainOption = None,
    agent: AgentOption = None,
    everything: AllOption = False,
    reason: Annotated[str, typer.Option(help="Why (recorded in the audit event).")] = "resumed by an operator",
    actor: AsOption = "cli",
) -> None:
    """Lift a pause (a tripped breaker included: resuming a subdomain resets its count)."""
    from outbox.mail.service import MailOperationError, resume

    _one_scope(subdomain, agent, everything)
    with cli_runtime() as runtime:
        try:
            result = resume(runtime, subdomain=subdomain, agent=agent, actor=f"cli:{actor}", reason=reason)
        except MailOperationError as exc:
            _fail(str(exc))
    typer.echo(result.detail)


# --- Feedback and the sink -----------------------------------------------------------------


@mail_app.command("ingest-dsn")
def ingest_dsn_command(
    files: Annotated[list[Path], typer.Argument(help="Bounce messages (RFC 3464), one per file; - for stdin.")],
) -> None:
    """Ingest raw bounce messages: hard bounces are suppressed and count towards the breaker."""
    import sys

    from outbox.mail.service import ingest_dsn

    with cli_runtime() as runtime:
        for file in files:
            raw = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
            report = ingest_dsn(runtime, raw, "cli")
            typer.echo(f"{file}: {json.dumps(report.as_dict())}")


@mail_app.command("sink")
def sink_command(
    port: Annotated[int | None, typer.Option(help="Port (default OUTBOX_MAIL_SINK_PORT, 2525).")] = None,
    host: Annotated[str, typer.Option(help="Interface.")] = "127.0.0.1",
    directory: Annotated[Path | None, typer.Option("--dir", help="Maildir (default OUTBOX_MAIL_SINK_DIR).")] = None,
) -> None:
    """Run the local SMTP sink in the foreground; every message it accepts lands in a Maildir."""
    from outbox.config import get_settings
    from outbox.mail.environment import sink_dir
    from outbox.mail.sending.sink import MaildirSink

    settings = get_settings()
    target = directory or sink_dir(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with MaildirSink(target, host=host, port=port or settings.mail_sink_port) as sink:
        typer.echo(f"SMTP sink on {sink.host}:{sink.port}, storing mail in {target} (Ctrl-C stops)", err=True)
        with contextlib.suppress(KeyboardInterrupt):
            while not stop.wait(1):
                pass
