"""Recorded actions in one shape, whether read from an export file or from the database.

`outbox policy replay` re-decides them, the replay twin answers from them, and its report
compares against them. Reading the database goes through the export's own records
(`export_records`), so both sources mean exactly the same thing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlmodel import Session

from outbox.policy.counterfactual import Outcome
from outbox.recordings.export import EXPORT_FORMAT, EXPORT_VERSION, export_records


class RecordingError(ValueError):
    """An export that cannot be read: names the line and what is wrong."""


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    type: str
    at: datetime
    actor: str | None
    from_status: str | None
    to_status: str | None
    data: dict[str, Any]


@dataclass
class RecordedAction:
    """One recorded call: who asked, what, how it was decided, what ran and what came back."""

    id: str
    created_at: datetime
    agent: str | None
    roles: tuple[str, ...]
    on_behalf_of: str | None
    tool: str
    args: dict[str, Any]
    status: str
    decision: dict[str, Any]
    targets: list[dict[str, Any]]
    approval: dict[str, Any] | None
    request: dict[str, Any]
    response: dict[str, Any] | None
    response_truncated: bool
    # The action as its agent was shown it (`ActionOut`): what a replay twin answers.
    view: dict[str, Any]
    # The shadow policy's outcome when one was configured ({outcome, changes, policy_version, …}).
    shadow: dict[str, Any] | None
    # Everything the export holds about the action, as exported.
    record: dict[str, Any]
    events: list[RecordedEvent] = field(default_factory=list)

    @property
    def deferrals(self) -> tuple[str, ...]:
        """Why the action was held back (send window, budget, pause), once per deferral."""
        return tuple(
            str(event.data.get("reason") or "deferred") for event in self.events if event.to_status == "deferred"
        )

    def outcome(self) -> Outcome:
        """The outcome that was recorded, comparable with one another policy would give."""
        approval = self.approval or {}
        deferrals = self.deferrals
        return Outcome(
            effect=str(self.decision.get("effect")),
            policy_version=str(self.decision.get("policy_version") or ""),
            rules=tuple(str(rule.get("rule")) for rule in self.decision.get("rules") or () if isinstance(rule, dict)),
            escalation=self.decision.get("escalation"),
            quorum=approval.get("quorum"),
            expires_in_seconds=approval.get("expires_in_seconds"),
            deferred=deferrals[0] if deferrals else None,
        )


@dataclass(frozen=True)
class Recording:
    header: dict[str, Any]
    # In the order their first event was recorded.
    actions: list[RecordedAction]
    events: int
    # False when the export ends before its `end` record, or the counts disagree: cut short.
    complete: bool

    def select(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        agent: str | None = None,
        tool: str | None = None,
    ) -> list[RecordedAction]:
        """The actions created in [since, until) by `agent` (its name) with `tool`."""
        return [
            action
            for action in self.actions
            if (since is None or action.created_at >= since)
            and (until is None or action.created_at < until)
            and (agent is None or action.agent == agent)
            and (tool is None or action.tool == tool)
        ]


def read_export(path: Path) -> Recording:
    """Read an `outbox audit export` file."""
    try:
        with path.open(encoding="utf-8") as stream:
            return read_records(_parsed_lines(stream))
    except RecordingError as exc:
        raise RecordingError(f"{path}: {exc}") from exc
    except OSError as exc:
        raise RecordingError(f"{path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise RecordingError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def read_database(session: Session, *, since: datetime | None = None) -> Recording:
    """The database's sealed events, read as an export of them would be."""
    return read_records(export_records(session, since=since))


def _parsed_lines(stream: Iterable[str]) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RecordingError(f"line {number}: not a JSON object ({exc.msg})") from exc
        if not isinstance(record, dict):
            raise RecordingError(f"line {number}: not a JSON object")
        record["_line"] = number
        yield record


def read_records(records: Iterable[dict[str, Any]]) -> Recording:
    """Build the recording from export records (header, events, end), checking the header."""
    iterator = iter(records)
    header = next(iterator, None)
    if header is None:
        raise RecordingError("the export is empty: it has no header line")
    _check_header(header)
    actions: dict[str, RecordedAction] = {}
    events = 0
    end: dict[str, Any] | None = None
    for record in iterator:
        kind = record.get("record")
        if kind == "end":
            end = record
            break
        if kind != "event":
            raise RecordingError(f"{_where(record)}unknown record {kind!r} (expected event or end)")
        events += 1
        _add_event(actions, record)
    complete = end is not None and end.get("events") == events
    return Recording(header=header, actions=list(actions.values()), events=events, complete=complete)


def _check_header(header: dict[str, Any]) -> None:
    if header.get("record") != "header" or header.get("format") != EXPORT_FORMAT:
        raise RecordingError(
            f"{_where(header)}not an agent-outbox export: the first line must be its header "
            f'({{"record": "header", "format": "{EXPORT_FORMAT}", …}}); exports made before format '
            f"version {EXPORT_VERSION} have none: export again with `outbox audit export`"
        )
    if header.get("version") != EXPORT_VERSION:
        raise RecordingError(
            f"{_where(header)}export format version {header.get('version')!r} is not one this outbox reads "
            f"(it reads version {EXPORT_VERSION}): export again with this version's `outbox audit export`"
        )


def _where(record: dict[str, Any]) -> str:
    line = record.get("_line")
    return f"line {line}: " if line is not None else ""


def _add_event(actions: dict[str, RecordedAction], record: dict[str, Any]) -> None:
    action_id = record.get("action_id")
    if action_id is None:
        return
    try:
        if "action" in record and action_id not in actions:
            actions[action_id] = _recorded_action(record["action"])
        event = RecordedEvent(
            type=str(record["type"]),
            at=_timestamp(record["at"]),
            actor=record.get("actor"),
            from_status=record.get("from"),
            to_status=record.get("to"),
            data=record.get("data") or {},
        )
    except (KeyError, TypeError, ValueError) as exc:
        problem = f"an event or action is missing a field or has a bad value ({exc})"
        raise RecordingError(f"{_where(record)}{problem}") from exc
    if action_id in actions:
        actions[action_id].events.append(event)


def _recorded_action(record: dict[str, Any]) -> RecordedAction:
    return RecordedAction(
        id=str(record["id"]),
        created_at=_timestamp(record["created_at"]),
        agent=record.get("agent"),
        roles=tuple(str(role) for role in record.get("agent_roles") or ()),
        on_behalf_of=record.get("on_behalf_of"),
        tool=str(record["tool"]),
        args=dict(record["args"]),
        status=str(record["status"]),
        decision=dict(record["decision"]),
        targets=list(record.get("targets") or ()),
        approval=record.get("approval"),
        request=dict(record.get("request") or {}),
        response=record.get("response"),
        response_truncated=bool(record.get("response_truncated")),
        view=dict(record["view"]),
        shadow=record.get("shadow"),
        record=record,
    )


def _timestamp(value: Any) -> datetime:
    moment = datetime.fromisoformat(str(value))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
