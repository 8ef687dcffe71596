"""What the operators' pages show, gathered from the services the API and CLI use.

Nothing here decides or changes anything: the pages read actions, audit events, the mail
ledger and the running policy, and hand the few changes they offer (mail pauses) to
`outbox.mail.service`, which audits them.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from outbox.actions.models import Action, ActionStatus
from outbox.audit.models import AuditEvent
from outbox.console.operate import repository
from outbox.console.operate.repository import ActionFilters, ActionRow, VersionUse
from outbox.identities import InvalidIdentity, canonical_identity
from outbox.policy.store import PolicyInfo

if TYPE_CHECKING:
    from outbox.runtime import Runtime  # annotations only: the app hands the runtime in

PAGE_SIZE = 50
# A recorded body longer than this is cut on the page (the export has it whole).
SHOWN_CHARS = 20_000
STATUSES = tuple(s.value for s in ActionStatus)


# --- Shown values --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Shown:
    """A recorded value as the page prints it: JSON text, cut when long, saying so."""

    text: str
    total_chars: int
    truncated: bool


def shown(value: Any, limit: int = SHOWN_CHARS) -> Shown:
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)
    return Shown(text[:limit], len(text), len(text) > limit)


def shown_json_text(data_json: str, limit: int = SHOWN_CHARS) -> Shown:
    """An audit event's data (stored as canonical JSON text), indented for reading."""
    try:
        return shown(json.loads(data_json), limit)
    except ValueError:
        return Shown(data_json[:limit], len(data_json), len(data_json) > limit)


def sent_message(artifact: dict[str, Any] | None, limit: int = SHOWN_CHARS) -> Shown | None:
    """The MIME message an artifact records as `mime_b64`, as text (undecodable bytes shown as
    U+FFFD): what the recipients' servers received, readable without a base64 decoder."""
    encoded = (artifact or {}).get("mime_b64")
    if not isinstance(encoded, str):
        return None
    try:
        text = base64.b64decode(encoded, validate=True).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        return None
    return Shown(text[:limit], len(text), len(text) > limit)


# --- Actions -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FilterInput:
    """The filter form as typed, echoed back into the form."""

    agent: str = ""
    tool: str = ""
    status: str = ""
    person: str = ""
    created_from: str = ""
    created_to: str = ""

    def query(self) -> dict[str, str]:
        """The non-empty fields, for the links to further pages."""
        return {
            name: value
            for name, value in (
                ("agent", self.agent),
                ("tool", self.tool),
                ("status", self.status),
                ("person", self.person),
                ("from", self.created_from),
                ("to", self.created_to),
            )
            if value
        }


def parse_moment(text: str, field: str, problems: list[str]) -> datetime | None:
    """A time from the form: `2026-12-04`, `2026-12-04T09:30` (a datetime-local field) or ISO 8601
    with an offset; read as UTC when it has none."""
    if not text:
        return None
    moment = as_utc(text)
    if moment is None:
        problems.append(f"{field}: {text!r} is not a date or time; use 2026-12-04 or 2026-12-04T09:30")
    return moment


def as_utc(text: str) -> datetime | None:
    """An ISO 8601 date or time in UTC (UTC when it names no offset); None when it is not one,
    or names a moment that has no UTC equivalent (year 9999 at -14:00)."""
    try:
        moment = datetime.fromisoformat(text)
        return moment.replace(tzinfo=moment.tzinfo or UTC).astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def parse_filters(form: FilterInput) -> tuple[ActionFilters, list[str]]:
    """The filters to query with, and what was wrong with the form (those fields are ignored)."""
    problems: list[str] = []
    status = form.status or None
    if status is not None and status not in STATUSES:
        problems.append(f"status: {status!r} is not a status; one of {', '.join(STATUSES)}")
        status = None
    person = form.person.strip() or None
    if person is not None:
        try:
            # Actions keep the person in canonical form (user:ada@example.com): any spelling finds them.
            person = canonical_identity(person)
        except InvalidIdentity:
            problems.append(f"person: {person!r} is not an identity; use ada@example.com or slack:U123")
            person = None
    filters = ActionFilters(
        agent=form.agent.strip() or None,
        tool=form.tool.strip() or None,
        status=status,
        on_behalf_of=person,
        created_from=parse_moment(form.created_from.strip(), "from", problems),
        created_to=parse_moment(form.created_to.strip(), "to", problems),
    )
    return filters, problems


def encode_cursor(row: ActionRow) -> str:
    return base64.urlsafe_b64encode(f"{row.created_at.isoformat()}|{row.id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str] | None:
    """The (created_at, id) a page continues after; None for a cursor that is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, action_id = raw.split("|", 1)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    moment = as_utc(stamp)
    return None if moment is None else (moment, action_id)


@dataclass(frozen=True, slots=True)
class ActionList:
    rows: list[ActionRow]
    next_cursor: str | None
    agents: list[str]
    tools: list[str]


def list_actions(runtime: Runtime, filters: ActionFilters, before: tuple[datetime, str] | None) -> ActionList:
    with runtime.db.read_session() as session:
        # One row more than the page says whether there is a next one.
        rows = repository.search_actions(session, filters, before=before, limit=PAGE_SIZE + 1)
        agents = repository.agent_names(session)
    page, more = rows[:PAGE_SIZE], len(rows) > PAGE_SIZE
    return ActionList(
        rows=page,
        next_cursor=encode_cursor(page[-1]) if more and page else None,
        agents=agents,
        tools=sorted(runtime.policy.current.tools),
    )


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    event: AuditEvent
    data: Shown


@dataclass(frozen=True, slots=True)
class ActionDetail:
    action: Action
    agent_name: str
    timeline: list[TimelineEntry]
    args: Shown
    decision_rules: Shown
    preview: Shown | None
    artifact: Shown | None
    # The message as sent, for an artifact that records it as base64 MIME (email.send).
    message: Shown | None
    response: Shown | None
    problem: Shown | None
    request: Shown


def action_detail(runtime: Runtime, action_id: str) -> ActionDetail | None:
    with runtime.db.read_session() as session:
        found = repository.action_with_agent(session, action_id)
        if found is None:
            return None
        action, agent_name = found
        events = repository.events_of_action(session, action_id)
        # Out of the session before it ends: its rollback would expire what the page reads.
        session.expunge_all()
    return ActionDetail(
        action=action,
        agent_name=agent_name,
        timeline=[TimelineEntry(event, shown_json_text(event.data_json)) for event in events],
        args=shown(action.args),
        decision_rules=shown(action.decision_rules),
        preview=None if action.preview is None else shown(action.preview),
        artifact=None if action.artifact is None else shown(action.artifact),
        message=sent_message(action.artifact),
        response=None if action.response is None else shown(action.response),
        problem=None if action.problem is None else shown(action.problem),
        request=shown(action.request),
    )


# --- Policy --------------------------------------------------------------------------------

# How far back the policy page looks for the versions that decided actions.
SKEW_WINDOW = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class PolicyView:
    info: PolicyInfo
    since: datetime
    versions: list[VersionUse]

    @property
    def others(self) -> list[VersionUse]:
        """Versions other than the running one that decided actions in the window."""
        return [v for v in self.versions if v.version != self.info.version]

    @property
    def newest_other(self) -> VersionUse | None:
        return max(self.others, key=lambda v: v.last_at, default=None)


def policy_view(runtime: Runtime, now: datetime) -> PolicyView:
    since = now - SKEW_WINDOW
    with runtime.db.read_session() as session:
        versions = repository.policy_versions_since(session, since)
    return PolicyView(runtime.policy.info(), since, versions)
