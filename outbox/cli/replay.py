"""`outbox replay …`: the replay twin (docs/replay-twin.md). Thin: parse, call outbox.replay, print."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

replay_app = typer.Typer(
    no_args_is_help=True, help="A replay twin: answer a new model's tool calls from a recording, executing nothing."
)


class MatchMode(StrEnum):
    exact = "exact"
    ignore = "ignore"


class ReportFormat(StrEnum):
    table = "table"
    json = "json"
    markdown = "markdown"


@replay_app.command("serve")
def serve(
    export: Annotated[Path, typer.Option("--from", help="An `outbox audit export` file.")],
    host: Annotated[str, typer.Option(help="Interface to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8100,
    match: Annotated[
        MatchMode | None, typer.Option(help="exact, or ignore the --ignore fields (the default when any is given).")
    ] = None,
    ignore: Annotated[
        list[str] | None,
        typer.Option(help="A field left out of the match: args.<path> (args.send_at) or on_behalf_of. Repeatable."),
    ] = None,
    agent: Annotated[str | None, typer.Option(help="Answer only from this recorded agent's calls.")] = None,
    session: Annotated[
        Path | None, typer.Option(help="Session log (JSON Lines; default under the data directory).")
    ] = None,
    policy: Annotated[
        Path | None,
        typer.Option(help="A policy directory whose tools list and validate calls as live (default: the recorded)."),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(envvar="OUTBOX_REPLAY_TOKEN", help="Bearer token clients send (default: generated, shown once)."),
    ] = None,
) -> None:
    """Serve POST /v1/actions, GET /v1/actions/{id}, GET /v1/tools and MCP from a recording."""
    import uvicorn

    from outbox.config import get_settings
    from outbox.recordings.reader import RecordingError
    from outbox.replay.app import create_twin_app
    from outbox.replay.serving import TwinOptions, TwinRefused, prepare_twin

    settings = get_settings()
    mode = match.value if match else None
    options = TwinOptions(export, host, port, mode, ignore or [], agent, session, token, settings.data_dir, policy)
    try:
        prepared = prepare_twin(options)
    except (RecordingError, TwinRefused) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    app = create_twin_app(prepared.twin, token=prepared.token, label=prepared.label, settings=settings)
    for line in prepared.banner:
        typer.echo(line)
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, proxy_headers=False)
    uvicorn.Server(config).run()


@replay_app.command("report")
def report(
    session: Annotated[Path, typer.Option(help="The session log `outbox replay serve` wrote.")],
    export: Annotated[
        Path | None, typer.Option("--from", help="The export served (default: the one the session names).")
    ] = None,
    policy: Annotated[
        Path | None, typer.Option(help="A candidate policy directory: which matched calls it would decide otherwise.")
    ] = None,
    output_format: Annotated[
        ReportFormat, typer.Option("--format", help="table, json or markdown.")
    ] = ReportFormat.table,
) -> None:
    """Summarise a session: calls matched, diverged (nearest recorded call, differing fields), and
    with --policy the matched calls a candidate policy would decide differently."""
    from outbox.replay.report import ReportError, build_report

    try:
        built = build_report(session, export=export, policy=policy)
    except ReportError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(built.render(output_format.value))
