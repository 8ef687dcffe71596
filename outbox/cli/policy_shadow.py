"""`outbox policy shadow …`: what the shadow policy would have decided otherwise (docs/shadow-policy.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from outbox.policytools.shadow import ShadowReport

shadow_app = typer.Typer(no_args_is_help=True, help="The shadow policy: decided on live traffic, never enforced.")


class ReportFormat(StrEnum):
    table = "table"
    json = "json"
    markdown = "markdown"


def _iso_time(text: str) -> datetime:
    """ISO 8601, with or without an offset (naive means UTC): `2026-05-01`, `2026-05-01T09:30:00+02:00`."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r} is not an ISO 8601 time, e.g. 2026-05-01 or 2026-05-01T09:30:00Z") from exc
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


@shadow_app.command("report")
def report(
    since: Annotated[
        datetime | None,
        typer.Option(parser=_iso_time, help="Only actions submitted at or after this time (ISO 8601, UTC if naive)."),
    ] = None,
    until: Annotated[
        datetime | None, typer.Option(parser=_iso_time, help="Only actions submitted before this time.")
    ] = None,
    output_format: Annotated[
        ReportFormat, typer.Option("--format", help="table, json or markdown.")
    ] = ReportFormat.table,
) -> None:
    """Totals per change kind, tool and agent, then every disagreeing action with both outcomes."""
    from outbox.cli.context import cli_database
    from outbox.policytools.shadow import shadow_report

    with cli_database() as db, db.read_session() as session:
        found = shadow_report(session, since=since, until=until)
    if output_format is ReportFormat.json:
        typer.echo(json.dumps(found.record(), indent=2))
    else:
        typer.echo(render_report(found, markdown=output_format is ReportFormat.markdown))


def render_report(found: ShadowReport, *, markdown: bool) -> str:
    """The report as aligned text tables, or as GitHub-flavoured markdown."""
    start = found.since.isoformat() if found.since else "the start"
    end = found.until.isoformat() if found.until else "now"
    disagreeing = len(found.disagreements)
    head = f"{found.decided} call(s) decided by the shadow policy ({start} to {end}); {disagreeing} disagree."
    sections = [f"## Shadow policy report\n\n{head}" if markdown else head]
    both = ["decided", "disagreeing"]
    totals = [
        ("Change kind", ["change", "actions"], [[k, str(v)] for k, v in sorted(found.by_change.items())]),
        ("Tool", ["tool", *both], [[k, str(a), str(b)] for k, (a, b) in sorted(found.by_tool.items())]),
        ("Agent", ["agent", *both], [[k, str(a), str(b)] for k, (a, b) in sorted(found.by_agent.items())]),
    ]
    for title, columns, rows in totals:
        sections.append(_table(title, columns, rows, markdown=markdown))
    rows = [
        [
            row.action_id,
            row.created_at.isoformat(timespec="seconds"),
            row.agent,
            row.tool,
            ", ".join(row.changes),
            f"{row.live.describe()} by {_rules(row.live.rules)} ({row.live.policy_version})",
            f"{row.shadow.describe()} by {_rules(row.shadow.rules)} ({row.shadow.policy_version})",
        ]
        for row in found.disagreements
    ]
    columns = ["action", "time", "agent", "tool", "change", "live", "shadow"]
    sections.append(_table("Disagreeing actions", columns, rows, markdown=markdown))
    return "\n\n".join(sections)


def _rules(rules: tuple[str, ...]) -> str:
    return "; ".join(rules) if rules else "no rule"


def _table(title: str, columns: list[str], rows: list[list[str]], *, markdown: bool) -> str:
    if markdown:
        lines = [f"### {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
        return "\n".join(lines if rows else [f"### {title}", "", "None."])
    if not rows:
        return f"{title}: none"
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    lines = [title, "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)
