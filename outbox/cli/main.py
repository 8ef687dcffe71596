"""`outbox`: the command line. Thin: each command parses, calls a service, prints."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from outbox.approvals.cli import approvals_app
from outbox.cli.context import cli_database
from outbox.cli.policy import policy_app
from outbox.cli.replay import replay_app
from outbox.cli.sandbox import sandbox_app
from outbox.cli.status import status as status_command
from outbox.config import Settings, get_settings
from outbox.mail.cli import mail_app
from outbox.users.cli import users_app

app = typer.Typer(no_args_is_help=True, help="agent-outbox: the gate between AI agents and the real world.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
agents_app = typer.Typer(no_args_is_help=True, help="Agents and their API keys.")
audit_app = typer.Typer(no_args_is_help=True, help="The hash-chained audit log.")
app.add_typer(db_app, name="db")
app.add_typer(agents_app, name="agents")
app.add_typer(audit_app, name="audit")
app.add_typer(policy_app, name="policy")
app.add_typer(approvals_app, name="approvals")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(mail_app, name="mail")
app.add_typer(users_app, name="users")
app.add_typer(replay_app, name="replay")

CLI_ACTOR = "cli"


@app.callback()
def _configure() -> None:
    """Logs go to stderr as configured (OUTBOX_LOG_LEVEL, OUTBOX_LOG_JSON); output to stdout."""
    from outbox.logs import configure_logging

    configure_logging(get_settings())


def _settings() -> Settings:
    return get_settings()


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=1, max=65535, help="Port to listen on; local unsubscribe links follow it.")
    ] = 8000,
    sink_port: Annotated[
        int | None,
        typer.Option(
            min=1, max=65535, help="Port of the local SMTP sink of the embedded server (OUTBOX_MAIL_SINK_PORT)."
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="API processes sharing the port (production, with a broker).")
    ] = 1,
) -> None:
    """Run the API. Without OUTBOX_BROKER_URL the workers and sweeper run inside it (embedded)."""
    import uvicorn

    from outbox.api.app import create_app
    from outbox.cli.serve import ServeRefused, banner, prepare_serve

    settings = _settings()
    settings.check_production_safety()
    if workers > 1 and settings.is_embedded:
        # Each process would run its own embedded workers, sweeper and mail sink on one port.
        typer.echo(
            "--workers > 1 needs OUTBOX_BROKER_URL (Celery workers execute the actions); "
            "the embedded server is one process.",
            err=True,
        )
        raise typer.Exit(2)
    try:
        plan, sock = prepare_serve(settings, host=host, port=port, sink_port=sink_port)
    except ServeRefused as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    app_ = create_app(plan.settings)
    mcp = any(getattr(route, "path", "") == "/mcp" for route in app_.routes)
    for line in banner(plan, host=host, port=port, workers=workers, mcp=mcp):
        typer.echo(line)
    if workers > 1:
        sock.close()
        _serve_processes(host, port, workers)
        return
    # log_config=None: uvicorn's own lines go through our structured logging too.
    # proxy_headers=False: the client address is the TCP peer, never an X-Forwarded-For value
    # (which any local process could set): the console trusts an identity header only from a
    # configured proxy's own address, and recorded requests name who really connected.
    config = uvicorn.Config(app_, host=host, port=port, log_config=None, access_log=False, proxy_headers=False)
    uvicorn.Server(config).run(sockets=[sock])


def _serve_processes(host: str, port: int, workers: int) -> None:
    """Several API processes: uvicorn imports the factory in each, and they bind the port
    themselves; the settings come from the environment, as they do here (the port included)."""
    import uvicorn

    os.environ["OUTBOX_API_PORT"] = str(port)
    uvicorn.run(
        "outbox.api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=None,
        access_log=False,
        proxy_headers=False,
    )


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option(help="Worker processes.")] = 2,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
    hostname: Annotated[
        str | None, typer.Option(help="Celery node name, unique per worker on one machine, e.g. w1@%h.")
    ] = None,
) -> None:
    """Run a Celery worker on OUTBOX_BROKER_URL."""
    settings = _settings()
    if settings.is_embedded:
        typer.echo("OUTBOX_BROKER_URL is not set: `outbox serve` runs the embedded workers.", err=True)
        raise typer.Exit(2)
    settings.check_production_safety()
    from workers.celery_app import app as celery

    argv = ["worker", f"--concurrency={concurrency}", f"--loglevel={loglevel}", "-Q", "outbox"]
    argv += ["--without-gossip", "--without-mingle"]
    celery.worker_main([*argv, f"--hostname={hostname}"] if hostname else argv)


@app.command()
def beat(loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO") -> None:
    """Run Celery beat, which schedules the sweeper."""
    settings = _settings()
    if settings.is_embedded:
        typer.echo("OUTBOX_BROKER_URL is not set: `outbox serve` runs the embedded sweeper.", err=True)
        raise typer.Exit(2)
    from workers.celery_app import app as celery

    schedule = settings.data_dir / "celerybeat-schedule"
    schedule.parent.mkdir(parents=True, exist_ok=True)
    celery.start(["beat", f"--loglevel={loglevel}", f"--schedule={schedule}"])


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply database migrations."""
    from outbox.migrations import current, upgrade

    settings = _settings()
    upgrade(settings, revision)
    typer.echo(f"database at revision {current(settings)}")


@agents_app.command("create")
def agents_create(
    name: Annotated[str, typer.Argument(help="Agent name, e.g. crm-bot.")],
    role: Annotated[list[str], typer.Option("--role", help="Role (repeatable), e.g. --role http-reader.")],
) -> None:
    """Create an agent and print its API key once. Only a hash of the key is stored."""
    from outbox.agents.service import AgentError, create_agent

    try:
        with cli_database() as db, db.session() as session:
            agent, key = create_agent(session, name, role, actor=CLI_ACTOR)
    except AgentError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"created agent {agent.name} with roles {', '.join(agent.roles)}", err=True)
    typer.echo("API key (shown once, store it now):", err=True)
    typer.echo(key)


@agents_app.command("list")
def agents_list() -> None:
    """List agents, their roles and whether they are revoked."""
    from outbox.agents.service import list_agents

    with cli_database() as db, db.session() as session:
        rows = list_agents(session)
    typer.echo(f"{'NAME':<24} {'ROLES':<40} {'KEYS':<16} STATUS")
    for agent, keys in rows:
        status = f"revoked {agent.revoked_at:%Y-%m-%d %H:%M}" if agent.revoked_at else "active"
        prefixes = ",".join(k.display_prefix + "…" for k in keys if k.revoked_at is None) or "-"
        typer.echo(f"{agent.name:<24} {','.join(agent.roles):<40} {prefixes:<16} {status}")


@agents_app.command("revoke")
def agents_revoke(name: Annotated[str, typer.Argument(help="Agent name.")]) -> None:
    """Revoke an agent and all its keys; they stop working at once."""
    from outbox.agents.service import AgentError, revoke_agent

    try:
        with cli_database() as db, db.session() as session:
            revoke_agent(session, name, actor=CLI_ACTOR)
    except AgentError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"revoked agent {name}")


@audit_app.command("verify")
def audit_verify(
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint",
            help="A copy of the checkpoints kept elsewhere (a witness): the file sink's lines or the "
            "audit.checkpoint lines of the structured log. Default: the configured checkpoint file.",
        ),
    ] = None,
    public_key: Annotated[
        list[Path] | None,
        typer.Option("--public-key", help="A PEM public key checkpoints may be signed with (repeatable)."),
    ] = None,
) -> None:
    """Check the chain, the chain against its signed checkpoints, and each action against its events.

    Exit 1 naming what is wrong: an edited event, missing events, a rewritten chain, an altered
    checkpoint, an edited action row.
    """
    from outbox.cli.audit import verify_database

    with cli_database() as db:
        code = verify_database(db, _settings(), checkpoint=checkpoint, public_keys=public_key or [])
    raise typer.Exit(code)


@audit_app.command("public-key")
def audit_public_key(
    jwk: Annotated[bool, typer.Option("--jwk", help="Print a JWK (RFC 8037) instead of PEM.")] = False,
) -> None:
    """Print the public key that verifies the audit checkpoints; its key id goes to stderr."""
    from outbox.audit.signing import SigningKeyError, load_signer, public_key_jwk, public_key_pem

    try:
        signer = load_signer(_settings(), create=True)
    except SigningKeyError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    assert signer is not None
    typer.echo(f"key id {signer.key_id}", err=True)
    typer.echo(json.dumps(public_key_jwk(signer.public_key)) if jwk else public_key_pem(signer.public_key).rstrip())


@audit_app.command("export")
def audit_export(
    since: Annotated[datetime | None, typer.Option(help="Only events at or after this time (ISO 8601).")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")] = None,
) -> None:
    """Write the audit log as versioned JSON Lines (docs/export.md): a header, every event in chain
    order with each action's request, decision, artifact and exact response, and an end record."""
    from outbox.cli.audit import export_database

    if since is not None and since.tzinfo is None:
        from datetime import UTC

        since = since.replace(tzinfo=UTC)
    stream = output.open("w", encoding="utf-8") if output else sys.stdout
    try:
        with cli_database() as db:
            count = export_database(db, stream, since=since)
    finally:
        if output:
            stream.close()
    typer.echo(json.dumps({"exported_events": count}), err=True)


app.command("status")(status_command)


if __name__ == "__main__":
    app()
