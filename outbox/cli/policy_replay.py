"""`outbox policy replay`: re-decide recorded traffic with a candidate policy directory.

Exit status: 0 ran and no change of a `--fail-on` kind; 1 such a change; 2 a usage or load error
(a candidate that does not load, an export that cannot be read). Nothing is executed, and the
database is only read.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from outbox.recordings.reader import Recording


class ReplayFormat(StrEnum):
    table = "table"
    json = "json"
    markdown = "markdown"


_CUT_SHORT = " (no end record, or fewer events than it counts): the actions after its last line are not replayed"


def _moment(text: str | None, option: str) -> datetime | None:
    """ISO 8601; a time without an offset is UTC."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        typer.echo(f"error: {option} {text!r} is not an ISO 8601 time (e.g. 2026-03-01T09:00:00Z)", err=True)
        raise typer.Exit(2) from exc
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def replay(
    policy: Annotated[Path, typer.Option("--policy", help="The candidate policy directory.")],
    *,
    from_export: Annotated[
        Path | None,
        typer.Option("--from", help="An `outbox audit export` file (default: the configured database)."),
    ] = None,
    since: Annotated[str | None, typer.Option(help="Only actions created at or after this time (ISO 8601).")] = None,
    until: Annotated[str | None, typer.Option(help="Only actions created before this time (ISO 8601).")] = None,
    agent: Annotated[str | None, typer.Option(help="Only this agent's actions (its name).")] = None,
    tool: Annotated[str | None, typer.Option(help="Only actions calling this tool.")] = None,
    output_format: Annotated[
        ReplayFormat, typer.Option("--format", help="table, json or markdown.")
    ] = ReplayFormat.table,
    fail_on: Annotated[
        str | None,
        typer.Option(
            "--fail-on", help="Exit 1 on a change of these kinds (comma-separated; `any`, `loosening`, or kinds)."
        ),
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the report here.")] = None,
) -> None:
    """Re-decide recorded actions with a candidate policy; report each action whose outcome changes.

    Runs nothing and writes nothing. Exits 1 when an action changes in a way --fail-on names, 2
    when the candidate or the recording does not load (docs/policy-replay.md).
    """
    from outbox.policy.counterfactual import parse_change_kinds
    from outbox.policytools.replay import CandidateError, Selection, load_candidate, replay_report
    from outbox.policytools.replay_output import format_json, format_markdown, format_table
    from outbox.recordings.reader import RecordingError

    start, end = _moment(since, "--since"), _moment(until, "--until")
    try:
        kinds = parse_change_kinds(fail_on) if fail_on is not None else frozenset()
    except ValueError as exc:
        raise _fail(f"--fail-on: {exc}") from exc
    try:
        candidate = load_candidate(policy)
    except CandidateError as exc:
        raise _fail(f"{policy}: {exc}") from exc
    try:
        recording, source = _recording(from_export, start)
    except RecordingError as exc:
        raise _fail(str(exc)) from exc
    if not recording.complete:
        typer.echo(f"WARNING: {source} is cut short{_CUT_SHORT}", err=True)
    selection = Selection(source, recording.complete, start, end, agent, tool)
    actions = recording.select(since=start, until=end, agent=agent, tool=tool)
    report = replay_report(candidate, actions, selection, directory=str(policy))
    formatters = {ReplayFormat.json: format_json, ReplayFormat.markdown: format_markdown}
    rendered = formatters.get(output_format, format_table)(report)
    _write(rendered, output)
    failing = report.failing(kinds)
    if failing:
        typer.echo(f"{len(failing)} action(s) change in a way --fail-on {fail_on} refuses", err=True)
        raise typer.Exit(1)


def _write(rendered: str, output: Path | None) -> None:
    if output is None:
        typer.echo(rendered, nl=False)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(rendered, encoding="utf-8")


def _recording(export: Path | None, since: datetime | None) -> tuple[Recording, str]:
    """The recording and how to name it: the export file, or the configured database read in a
    read-only session (only sealed events: replay writes nothing, so it seals nothing)."""
    from outbox.audit.service import unsealed_events
    from outbox.config import get_settings
    from outbox.db import Database
    from outbox.recordings.reader import read_database, read_export

    if export is not None:
        return read_export(export), str(export)
    with Database(get_settings()) as db, db.read_session() as session:
        pending = unsealed_events(session)
        recording = read_database(session, since=since)
    if pending:
        typer.echo(
            f"note: {pending} audit event(s) are not sealed yet and are not replayed "
            "(`outbox audit verify` seals them)",
            err=True,
        )
    return recording, "the database"
