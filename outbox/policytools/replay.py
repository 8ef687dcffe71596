"""`outbox policy replay`: recorded traffic decided again by a candidate policy directory.

Every recorded action is decided as the server would decide it under the candidate, from the
request as it was received, and nothing runs:

- the candidate's own tool definitions parse the arguments and give the targets and the
  blast-radius bound (loaded as `policy check` and `policy test` load them: an in-memory database
  that is never touched). A tool the candidate does not define, or arguments its definition no
  longer accepts, or a `callback_url` its rules do not allow, would be refused as invalid (422):
  the outcome `refused`, change `now-refused`;
- its rules decide, through `effective_decision` (policy, then the blast-radius bound), exactly
  as submission and `outbox policy test` do, and its approvals.yaml gives the gate (`outcome_of`);
- for `email.send`, its mail.yaml: whether the subdomain's send window is closed at the time the
  message was sent (its first attempt, or its submission when it never ran), and whether a
  budget would be used up, simulated in memory in recorded order over the selected mail with the
  ledger's own caps (`send_caps`).

The recorded outcome is compared with the candidate's by `outbox.policy.counterfactual.changes`,
so a change means here what it means for the shadow policy. A recorded deferral for a reason
outside policy (a pause, a failing DNS check, a tripped breaker) is no policy outcome: it is left
out of the recorded outcome and never simulated.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from outbox.actions.callbacks import require_callback_allowed
from outbox.actions.models import ActionStatus
from outbox.agents.principals import principal
from outbox.errors import ValidationFailed
from outbox.mail.budgets.ledger import send_caps
from outbox.mail.config import MailConfig
from outbox.mail.sending.message import EmailSendArgs
from outbox.mail.sending.tool import EmailSendTool
from outbox.mail.sending.windows import next_allowed
from outbox.policy.approval_gates import ApprovalsConfig, load_approvals_config
from outbox.policy.counterfactual import REFUSED_EFFECT, ChangeKind, Outcome, changes, outcome_of
from outbox.policy.effective import blast_radius, effective_decision
from outbox.policy.engine import PolicySnapshot, load_policy
from outbox.policy.matching import Subject
from outbox.policytools.targets import load_catalog
from outbox.recordings.reader import RecordedAction
from outbox.toolkit.base import Tool
from outbox.toolkit.registry import parse_in
from outbox.urls import URLRefused

REPORT_FORMAT = "agent-outbox-policy-replay"
REPORT_VERSION = 1

# How a recorded deferral names a policy reason (the mail tool's send window and the mail gate's
# budgets); any other deferral (pause, DNS, breaker) is outside policy.
_POLICY_DEFERRALS = ("outside the send window", "over budget", "the warm-up daily cap", "the daily cap")


class CandidateError(Exception):
    """The candidate directory does not load: its rules, tools, approvals.yaml or mail.yaml."""


@dataclass(frozen=True)
class Candidate:
    """A policy directory as the server would run it, loaded without running anything."""

    directory: Path
    snapshot: PolicySnapshot
    tools: Mapping[str, Tool]
    approvals: ApprovalsConfig
    mail: MailConfig | None

    @property
    def version(self) -> str:
        return self.snapshot.version


def load_candidate(directory: Path) -> Candidate:
    """Load rules, tools (mail.yaml included) and approvals.yaml; CandidateError says what fails."""
    if not directory.is_dir():
        raise CandidateError(f"{directory} is not a directory")
    try:
        snapshot = load_policy(directory)
    except Exception as exc:  # PolicyLoadError, and a model casbin refuses
        raise CandidateError(f"the policy does not load: {exc}") from exc
    catalog = load_catalog(directory)
    if catalog.load_error is not None:
        raise CandidateError(f"the tools do not load: {catalog.load_error}")
    try:
        approvals = load_approvals_config(snapshot.directory)
    except Exception as exc:  # a validation error naming the file and field
        raise CandidateError(f"approvals.yaml does not load: {exc}") from exc
    mail = next((tool.config for tool in catalog.tools.values() if isinstance(tool, EmailSendTool)), None)
    return Candidate(directory, snapshot, catalog.tools, approvals, mail)


@dataclass(frozen=True)
class Redecision:
    """One recorded action: its recorded outcome, the candidate's, and how they differ."""

    action: RecordedAction
    before: Outcome
    after: Outcome
    changes: tuple[ChangeKind, ...]
    # Why the candidate refuses the call, when it does.
    refusal: str | None = None

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def record(self) -> dict[str, Any]:
        return {
            "action_id": self.action.id,
            "created_at": self.action.created_at.isoformat(),
            "agent": self.action.agent,
            "tool": self.action.tool,
            "changes": [kind.value for kind in self.changes],
            "before": self.before.record(),
            "after": self.after.record() | {"refusal": self.refusal},
        }


def recorded_outcome(action: RecordedAction) -> Outcome:
    """The recorded outcome, with only the deferrals policy made (send window, budget). A send
    held back past its expiry failed instead of waiting (`<why it waited>; it cannot go before
    …`): it was held back too."""
    expired = (str(e.data.get("reason") or "") for e in action.events if e.to_status == ActionStatus.FAILED.value)
    reasons = (*action.deferrals, *(reason.split("; it cannot go before")[0] for reason in expired))
    held = next((reason for reason in reasons if reason.startswith(_POLICY_DEFERRALS)), None)
    return action.outcome()._replace(deferred=held)


def _received_message(action: RecordedAction) -> dict[str, Any] | None:
    """The recorded request body as JSON: the HTTP envelope or the MCP JSON-RPC message."""
    body = action.request.get("body")
    try:
        message = json.loads(body) if isinstance(body, str) else None
    except json.JSONDecodeError:
        return None
    return message if isinstance(message, dict) else None


def received_args(action: RecordedAction) -> dict[str, Any]:
    """The arguments as the agent sent them, read from the recorded request body (HTTP: the
    envelope's `args`; MCP: the JSON-RPC `params.arguments`); the stored arguments when the body
    is not recorded or not JSON."""
    message = _received_message(action)
    if message is not None:
        found = (message.get("params") or {}).get("arguments") if "jsonrpc" in message else message.get("args")
        if isinstance(found, dict):
            return found
    return dict(action.args)


def _callback_refusal(candidate: Candidate, subject: Subject, action: RecordedAction) -> str | None:
    """Why the candidate refuses the call's `callback_url` (submission answers 422), or None."""
    message = _received_message(action)
    url = message.get("callback_url") if message is not None and "jsonrpc" not in message else None
    if not isinstance(url, str):
        return None
    try:
        require_callback_allowed(candidate.snapshot, subject, url)
    except ValidationFailed as exc:
        return f"callback_url: {exc.errors[0]['message']}"
    except URLRefused as exc:
        return f"callback_url: {exc}"
    return None


def _send_time(action: RecordedAction) -> datetime:
    """When the message was (first) sent: its first attempt, else its submission."""
    return next((e.at for e in action.events if e.to_status == ActionStatus.RUNNING.value), action.created_at)


def _ran(action: RecordedAction) -> bool:
    return any(e.to_status == ActionStatus.RUNNING.value for e in action.events)


class MailSimulation:
    """The candidate's send windows and budgets over a sequence of sends, in memory."""

    def __init__(self, config: MailConfig | None) -> None:
        self.config = config
        # Units charged per (cap key, window start), as the budgets table counts them.
        self.charged: Counter[tuple[str, datetime]] = Counter()

    def hold(self, args: EmailSendArgs, agent: str, at: datetime, *, charge: bool) -> str | None:
        """Why the send would wait at `at` (a closed window, a used-up cap), or None; when it
        would go and `charge`, its recipients are charged to every cap."""
        sub = self.config.subdomain(args.sender.domain) if self.config is not None else None
        if sub is None:
            return None
        if next_allowed(sub.send_window, at, args.recipient_timezone) is not None:
            assert sub.send_window is not None
            zone = args.recipient_timezone or sub.send_window.timezone
            return f"outside the send window of {sub.domain} (in {zone})"
        caps = send_caps(sub, args.recipients(), agent, at)
        for cap in caps:
            if cap.units > cap.cap.limit:
                return f"over budget: {cap.units} recipient(s) never fit the {cap.name} of {cap.cap.limit}"
        full = [c for c in caps if self.charged[c.cap.key, c.cap.window_start] + c.units > c.cap.limit]
        if full:
            names = " and ".join(f"the {c.name} ({c.cap.limit} per {_per(c.cap.window)})" for c in full)
            return f"over budget: {names} {'are' if len(full) > 1 else 'is'} used up"
        if charge:
            for cap in caps:
                self.charged[cap.cap.key, cap.cap.window_start] += cap.units
        return None


def _per(window: timedelta) -> str:
    return "hour" if window == timedelta(hours=1) else "day"


def redecide(candidate: Candidate, actions: Iterable[RecordedAction]) -> list[Redecision]:
    """Every action decided again by the candidate, in the order given (recorded order: the
    mail budgets are simulated over this sequence)."""
    mail = MailSimulation(candidate.mail)
    results = []
    for action in actions:
        before = recorded_outcome(action)
        after, refusal = _candidate_outcome(candidate, action, mail)
        results.append(Redecision(action, before, after, changes(before, after), refusal))
    return results


def _candidate_outcome(
    candidate: Candidate, action: RecordedAction, mail: MailSimulation
) -> tuple[Outcome, str | None]:
    parsed = parse_in(candidate.tools, action.tool, received_args(action))
    if isinstance(parsed, str):
        return _refused(candidate, parsed)
    tool, args = parsed
    agent = action.agent or str(action.record.get("agent_id"))
    subject = Subject(principal(agent), action.roles)
    refusal = _callback_refusal(candidate, subject, action)
    if refusal is not None:
        return _refused(candidate, refusal)
    verdict = effective_decision(candidate.snapshot, subject, tool.targets(args), blast_radius=blast_radius(tool, args))
    outcome = outcome_of(verdict, action.tool, candidate.approvals)
    if outcome.effect != "deny" and isinstance(args, EmailSendArgs):
        # A send that waits for a human is charged only when the recording shows it approved and run.
        charge = outcome.effect == "allow" or _ran(action)
        outcome = outcome._replace(deferred=mail.hold(args, agent, _send_time(action), charge=charge))
    return outcome, None


def _refused(candidate: Candidate, why: str) -> tuple[Outcome, str]:
    return Outcome(effect=REFUSED_EFFECT, policy_version=candidate.version), why


# --- The report -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """Which recorded actions were replayed, and from where."""

    source: str  # `database`, or the export's path
    complete: bool = True
    since: datetime | None = None
    until: datetime | None = None
    agent: str | None = None
    tool: str | None = None

    def record(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "complete": self.complete,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "agent": self.agent,
            "tool": self.tool,
        }


@dataclass
class ReplayReport:
    """Totals (per change kind, tool and agent) first, then the changed actions."""

    directory: str
    version: str
    selection: Selection
    replayed: int = 0
    by_change: Counter[str] = field(default_factory=Counter)
    # Replayed and changed, per tool and per agent.
    by_tool: dict[str, Counter[str]] = field(default_factory=dict)
    by_agent: dict[str, Counter[str]] = field(default_factory=dict)
    changed: list[Redecision] = field(default_factory=list)

    def add(self, result: Redecision) -> None:
        self.replayed += 1
        tool = self.by_tool.setdefault(result.action.tool, Counter())
        for totals in (tool, self.by_agent.setdefault(result.action.agent or "-", Counter())):
            totals["replayed"] += 1
            totals["changed"] += result.changed
        if result.changed:
            self.by_change.update(kind.value for kind in result.changes)
            self.changed.append(result)

    def failing(self, kinds: frozenset[ChangeKind]) -> list[Redecision]:
        """The changed actions with a change of one of `kinds` (`--fail-on`)."""
        return [r for r in self.changed if kinds.intersection(r.changes)]

    def record(self) -> dict[str, Any]:
        """The JSON report (`--format json`); its keys are documented in docs/policy-replay.md."""
        return {
            "format": REPORT_FORMAT,
            "version": REPORT_VERSION,
            "candidate": {"directory": self.directory, "policy_version": self.version},
            "selection": self.selection.record(),
            "replayed": self.replayed,
            "changed": len(self.changed),
            "unchanged": self.replayed - len(self.changed),
            "by_change": {k.value: self.by_change[k.value] for k in ChangeKind if self.by_change[k.value]},
            "by_tool": {name: _totals(c) for name, c in sorted(self.by_tool.items())},
            "by_agent": {name: _totals(c) for name, c in sorted(self.by_agent.items())},
            "changes": [r.record() for r in self.changed],
        }


def _totals(counts: Counter[str]) -> dict[str, int]:
    return {"replayed": counts["replayed"], "changed": counts["changed"]}


def replay_report(
    candidate: Candidate, actions: Sequence[RecordedAction], selection: Selection, *, directory: str | None = None
) -> ReplayReport:
    """Re-decide `actions` with the candidate and sum the result up."""
    report = ReplayReport(directory or str(candidate.directory), candidate.version, selection)
    for result in redecide(candidate, actions):
        report.add(result)
    return report
