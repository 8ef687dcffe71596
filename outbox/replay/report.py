"""`outbox replay report`: what a replay session shows about the model that ran in it.

Calls matched (answered from the recording), diverged (no recorded call: the nearest one and the
differing fields), refused (invalid before any match); and, with a candidate policy directory,
the matched recorded calls it would decide otherwise, through `outbox policy replay`'s own
re-decision (`outbox.policytools.replay`): the twin writes no second one.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from outbox.policytools.replay import CandidateError, ReplayReport, Selection, load_candidate, replay_report
from outbox.policytools.replay_output import format_markdown, format_table
from outbox.recordings.reader import RecordingError, read_export
from outbox.replay.session import DIVERGED, MATCHED, REFUSED, SessionLogError, read_session

REPORT_FORMAT = "agent-outbox-replay-session-report"
REPORT_VERSION = 1


class ReportError(ValueError):
    """The session, the export or the candidate policy cannot be read: says which and why."""


@dataclass
class SessionReport:
    session: str
    export: str | None
    calls: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    # Distinct recorded actions answered, in recorded order of first answer.
    matched_actions: list[str] = field(default_factory=list)
    diverged: list[dict[str, Any]] = field(default_factory=list)
    policy: ReplayReport | None = None

    def record(self) -> dict[str, Any]:
        return {
            "format": REPORT_FORMAT,
            "version": REPORT_VERSION,
            "session": self.session,
            "export": self.export,
            "calls": self.calls,
            "matched": self.outcomes[MATCHED],
            "diverged": self.outcomes[DIVERGED],
            "refused": self.outcomes[REFUSED],
            "matched_actions": self.matched_actions,
            "divergences": self.diverged,
            "policy": self.policy.record() if self.policy is not None else None,
        }

    def render(self, output_format: str) -> str:
        if output_format == "json":
            return json.dumps(self.record(), indent=2, ensure_ascii=False)
        markdown = output_format == "markdown"
        lines = [self._headline(markdown), ""]
        lines.extend(self._divergence_lines(markdown))
        if self.policy is not None:
            lines.append(format_markdown(self.policy) if markdown else format_table(self.policy))
        return "\n".join(lines).rstrip() + "\n"

    def _headline(self, markdown: bool) -> str:
        counts = (
            f"{self.calls} call(s): {self.outcomes[MATCHED]} matched, {self.outcomes[DIVERGED]} diverged, "
            f"{self.outcomes[REFUSED]} refused"
        )
        return (
            f"### Replay session `{self.session}`\n\n**{counts}.**"
            if markdown
            else f"replay session {self.session}: {counts}"
        )

    def _divergence_lines(self, markdown: bool) -> list[str]:
        if not self.diverged:
            return []
        rows = [
            [
                str(d.get("at", "")),
                str(d.get("face", "")),
                str(d.get("tool", "")),
                _nearest_id(d),
                ", ".join((d.get("nearest") or {}).get("differing") or []) or "-",
            ]
            for d in self.diverged
        ]
        header = ["TIME", "FACE", "TOOL", "NEAREST RECORDED", "DIFFERING FIELDS"]
        if markdown:
            table = ["| " + " | ".join(h.capitalize() for h in header) + " |", "|" + "---|" * len(header)]
            table += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
            return ["Diverged calls:", "", *table, ""]
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        return ["  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip() for row in [header, *rows]] + [""]


def _nearest_id(divergence: dict[str, Any]) -> str:
    nearest = divergence.get("nearest") or {}
    return str(nearest.get("action_id") or "-")


def build_report(session_path: Path, *, export: Path | None = None, policy: Path | None = None) -> SessionReport:
    try:
        session = read_session(session_path)
    except SessionLogError as exc:
        raise ReportError(str(exc)) from None
    named = session.header.get("export")
    export_path = export or (Path(named) if isinstance(named, str) else None)
    report = SessionReport(str(session_path), str(export_path) if export_path else None)
    for call in session.calls:
        report.calls += 1
        outcome = str(call.get("outcome"))
        report.outcomes[outcome] += 1
        if outcome == MATCHED and call.get("action_id") not in report.matched_actions:
            report.matched_actions.append(str(call.get("action_id")))
        elif outcome == DIVERGED and not call.get("replayed"):
            report.diverged.append(call)
    if policy is not None:
        report.policy = _policy_changes(report, export_path, policy)
    return report


def _policy_changes(report: SessionReport, export: Path | None, policy: Path) -> ReplayReport:
    """The candidate's re-decision of the recorded calls this session matched, in recorded order."""
    if export is None:
        raise ReportError("--policy needs the export the session served: pass --from EXPORT")
    try:
        recording = read_export(export)
        candidate = load_candidate(policy)
    except (RecordingError, CandidateError) as exc:
        raise ReportError(str(exc)) from None
    matched = set(report.matched_actions)
    actions = [action for action in recording.actions if action.id in matched]
    return replay_report(candidate, actions, Selection(str(export), recording.complete), directory=str(policy))
