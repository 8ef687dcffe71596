"""The twin's one way to answer a call: match it against the recording, answer as recorded.

Both faces (HTTP and MCP) call `Twin.submit` with the envelope they parsed exactly as the live
service parses it. A matched call is answered with the recorded action as its agent was shown it
(the export's `view`) through `answer_for`, the rule the live service answers with, so the status
(200, 202, 403) and the body are the live ones. A call with no match is answered "not in the
recording", naming the nearest recorded call. Every call is appended to the session log.

Idempotency as the live service has it, within the session: the same key again with the same
call answers as the first time (marked replayed); with another call, the live 422.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from outbox.actions.schemas import ActionCreate, ActionOut
from outbox.actions.service import Answer, answer_for, parse_call
from outbox.errors import ActionNotFound, IdempotencyKeyReused, ValidationFailed
from outbox.idempotency.service import fingerprint
from outbox.policy.matching import Subject
from outbox.policy.store import ActivePolicy
from outbox.problems import problem_document
from outbox.recordings.reader import RecordedAction
from outbox.replay.matching import Call, Matcher, MatchRule, Nearest
from outbox.replay.session import DIVERGED, MATCHED, REFUSED, SessionLog
from outbox.toolkit.registry import find_tool, function_name

NOT_IN_RECORDING = "not-in-recording"
NOT_IN_RECORDING_STATUS = 404


@dataclass(frozen=True, slots=True)
class NotInRecording:
    """A call the recording holds no answer for, and the recorded call nearest to it."""

    call: Call
    nearest: Nearest | None
    recorded_calls: int

    def detail(self) -> str:
        if self.nearest is None:
            return f"The recording holds no {self.call.tool} call: this replay twin has nothing to answer it with."
        fields = ", ".join(self.nearest.differing) or "none"
        return (
            f"No recorded {self.call.tool} call has these arguments: this replay twin answers only calls "
            f"in its recording. Nearest recorded call: action {self.nearest.action_id} "
            f"({self.nearest.tool}), differing in: {fields}."
        )

    def problem(self) -> dict[str, Any]:
        return problem_document(
            NOT_IN_RECORDING_STATUS,
            NOT_IN_RECORDING,
            "Not in the recording",
            self.detail(),
            hint=(
                "Nothing was executed: this is a replay of recorded traffic. The call is logged as a "
                "divergence from the recorded run."
            ),
            nearest=self.nearest.record() if self.nearest is not None else None,
            recorded_calls=self.recorded_calls,
        )


@dataclass(frozen=True, slots=True)
class TwinAnswer:
    """A matched call's answer (the live `Answer`), or why there is none."""

    answer: Answer | None = None
    missing: NotInRecording | None = None
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Submission:
    """One call as a face received it."""

    face: str
    label: str
    envelope: ActionCreate
    idempotency_key: str | None


@dataclass
class Twin:
    actions: Sequence[RecordedAction]
    rule: MatchRule
    log: SessionLog
    # With `--policy DIR`: the tools of that directory list and validate calls as live (schemas,
    # invalid arguments, unknown tools); without, the recorded tools, any arguments.
    catalogue: ActivePolicy | None = None
    # Who the caller is to the catalogue's tool listing: the recorded agent's name and roles.
    subject: Subject = field(default_factory=lambda: Subject("agent:replay"))
    _matcher: Matcher = field(init=False)
    _keys: dict[tuple[str, str], tuple[str, TwinAnswer]] = field(default_factory=dict, init=False)
    _shown: dict[str, dict[str, Any]] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self._matcher = Matcher(self.actions, self.rule)

    @property
    def tools(self) -> list[str]:
        """The tools calls may name, in name order: the catalogue's, else the recorded ones."""
        if self.catalogue is not None:
            return list(self.catalogue.tools)
        return sorted({action.tool for action in self.actions})

    @property
    def policy_version(self) -> str:
        if self.catalogue is not None:
            return self.catalogue.version
        versions = [str(action.decision.get("policy_version") or "") for action in self.actions]
        return versions[-1] if versions else ""

    def tool_name(self, requested: str) -> str:
        """The outbox name of a tool called by its function name (`http__request`)."""
        if self.catalogue is not None:
            tool = find_tool(self.catalogue.tools, requested)
            return tool.name if tool is not None else requested
        for name in self.tools:
            if requested in (name, function_name(name)):
                return name
        return requested

    def submit(self, submission: Submission) -> TwinAnswer:
        envelope = submission.envelope
        call = Call(self.tool_name(envelope.tool), envelope.args, envelope.on_behalf_of)
        try:
            self._check_call(envelope, call.tool)
        except ValidationFailed as refusal:
            self._log(submission, call, REFUSED, {"refusal": refusal.detail})
            raise
        fp = fingerprint(call.tool, dict(call.args), call.on_behalf_of)
        try:
            with self._lock:
                answered = self._replayed(submission, fp)
                if answered is None:
                    answered = self._answer(call)
                    if submission.idempotency_key is not None:
                        self._keys[(submission.label, submission.idempotency_key)] = (fp, answered)
        except IdempotencyKeyReused:
            self._log(submission, call, REFUSED, {"refusal": "idempotency key reused for another call"})
            raise
        outcome, extra = self._outcome(answered)
        self._log(submission, call, outcome, {**extra, "replayed": answered.replayed})
        return answered

    def _check_call(self, envelope: ActionCreate, tool: str) -> None:
        """Refuse as live: with a catalogue, its tools parse the call; without, an unknown tool
        is refused with the recorded tools named."""
        if self.catalogue is not None:
            parse_call(self.catalogue.tools, envelope)
            return
        if tool not in self.tools:
            raise ValidationFailed(
                [{"field": "tool", "message": f"unknown tool {tool!r}"}],
                hint=f"Use one of: {', '.join(self.tools)}. GET /v1/tools lists them with their schemas.",
            )

    def _replayed(self, submission: Submission, fp: str) -> TwinAnswer | None:
        if submission.idempotency_key is None:
            return None
        stored = self._keys.get((submission.label, submission.idempotency_key))
        if stored is None:
            return None
        stored_fp, first = stored
        if stored_fp != fp:
            raise IdempotencyKeyReused(first.answer.action_id if first.answer is not None else None)
        if first.answer is None or first.answer.action is None:
            return TwinAnswer(first.answer, first.missing, replayed=True)
        return TwinAnswer(answer_for(ActionOut.model_validate(first.answer.action), replayed=True), replayed=True)

    def _answer(self, call: Call) -> TwinAnswer:
        recorded = self._matcher.match(call)
        if recorded is None:
            return TwinAnswer(missing=NotInRecording(call, self._matcher.nearest(call), len(self.actions)))
        self._shown[recorded.id] = recorded.view
        return TwinAnswer(answer=answer_for(ActionOut.model_validate(recorded.view)))

    @staticmethod
    def _outcome(answered: TwinAnswer) -> tuple[str, dict[str, Any]]:
        if answered.answer is not None:
            return MATCHED, {"action_id": answered.answer.action_id, "status": answered.answer.status}
        assert answered.missing is not None
        nearest = answered.missing.nearest
        return DIVERGED, {"status": NOT_IN_RECORDING_STATUS, "nearest": nearest.record() if nearest else None}

    def _log(self, submission: Submission, call: Call, outcome: str, extra: dict[str, Any]) -> None:
        self.log.append(
            {
                "face": submission.face,
                "agent": submission.label,
                "tool": call.tool,
                "args": dict(call.args),
                "on_behalf_of": call.on_behalf_of,
                "idempotency_key": submission.idempotency_key,
                "outcome": outcome,
                **extra,
            }
        )

    def read(self, action_id: str) -> dict[str, Any]:
        """A recorded action this session was answered with; any other id is not found, as
        another agent's action is on the live service."""
        with self._lock:
            view = self._shown.get(action_id)
        if view is None:
            raise ActionNotFound(action_id)
        return view

    def refused(self, face: str, label: str, payload: Any, reason: str) -> None:
        """Log a call refused before it could be matched (invalid envelope, bad key)."""
        tool = payload.get("tool") if isinstance(payload, dict) else None
        args = payload.get("args") if isinstance(payload, dict) else None
        self.log.append(
            {
                "face": face,
                "agent": label,
                "tool": tool if isinstance(tool, str) else None,
                "args": args if isinstance(args, dict) else None,
                "outcome": REFUSED,
                "refusal": reason,
            }
        )
