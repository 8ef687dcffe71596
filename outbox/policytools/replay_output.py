"""`outbox policy replay`'s report as plain aligned text, JSON and markdown (a CI job summary)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence

from outbox.policy.counterfactual import Outcome
from outbox.policytools.replay import Redecision, ReplayReport

# Markdown lists at most this many changed actions: a job summary has a size limit.
MARKDOWN_LIMIT = 200


def _headline(report: ReplayReport) -> str:
    unchanged = report.replayed - len(report.changed)
    return (
        f"{report.replayed} recorded action(s) replayed against {report.directory} ({report.version}): "
        f"{len(report.changed)} changed, {unchanged} unchanged"
    )


def _warning(report: ReplayReport) -> str | None:
    if report.selection.complete:
        return None
    return f"the recording {report.selection.source} is cut short: actions after its last line are missing"


def _rules(outcome: Outcome) -> str:
    return "; ".join(outcome.rules) or "no rule"


def _aligned(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]


def _totals_rows(title: str, totals: dict[str, Counter[str]]) -> list[list[str]]:
    rows = [[title, "REPLAYED", "CHANGED"]]
    rows.extend([name, str(c["replayed"]), str(c["changed"])] for name, c in sorted(totals.items()))
    return rows


def _change_cells(result: Redecision) -> list[str]:
    after = result.after.describe() if result.refusal is None else f"refused: {result.refusal}"
    return [
        result.action.id,
        result.action.created_at.isoformat(timespec="seconds"),
        result.action.agent or "-",
        result.action.tool,
        ",".join(kind.value for kind in result.changes),
        result.before.describe(),
        _rules(result.before),
        after,
        _rules(result.after),
    ]


_CHANGE_HEADER = ["ACTION", "TIME", "AGENT", "TOOL", "CHANGE", "BEFORE", "RULE BEFORE", "NOW", "RULE NOW"]


def format_table(report: ReplayReport) -> str:
    lines = [_headline(report)]
    warning = _warning(report)
    if warning:
        lines.append(f"WARNING: {warning}")
    if report.by_change:
        lines.append("")
        lines.extend(_aligned([["CHANGE", "ACTIONS"], *([k, str(n)] for k, n in sorted(report.by_change.items()))]))
    for title, totals in (("TOOL", report.by_tool), ("AGENT", report.by_agent)):
        if totals:
            lines.append("")
            lines.extend(_aligned(_totals_rows(title, totals)))
    if report.changed:
        lines.append("")
        lines.extend(_aligned([_CHANGE_HEADER, *(_change_cells(r) for r in report.changed)]))
    return "\n".join(lines) + "\n"


def format_json(report: ReplayReport) -> str:
    return json.dumps(report.record(), indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.extend("| " + " | ".join(_cell(c) for c in row) + " |" for row in rows)
    return lines


def format_markdown(report: ReplayReport) -> str:
    lines = [f"### Policy replay: `{report.directory}`", "", f"**{_headline(report)}.**"]
    warning = _warning(report)
    if warning:
        lines += ["", f"> ⚠️ {warning}."]
    if report.by_change:
        kinds = [[kind, str(count)] for kind, count in sorted(report.by_change.items())]
        lines += ["", *_markdown_table(["Change", "Actions"], kinds)]
        for title, totals in (("Tool", report.by_tool), ("Agent", report.by_agent)):
            rows = [[f"`{n}`", str(c["replayed"]), str(c["changed"])] for n, c in sorted(totals.items())]
            lines += ["", *_markdown_table([title, "Replayed", "Changed"], rows)]
        header = ["Action", "Time", "Agent", "Tool", "Change", "Before", "Rule before", "Now", "Rule now"]
        shown = [_change_cells(r) for r in report.changed[:MARKDOWN_LIMIT]]
        lines += ["", *_markdown_table(header, [[f"`{c[0]}`", *c[1:]] for c in shown])]
        hidden = len(report.changed) - MARKDOWN_LIMIT
        if hidden > 0:
            lines += ["", f"…and {hidden} more; run `outbox policy replay` locally for all of them."]
    return "\n".join(lines) + "\n"
