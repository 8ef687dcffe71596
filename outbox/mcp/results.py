"""What a tools/call answers: the action as `structuredContent`, and a text a model can act on.

The agent contract's answer (`outbox.actions.service.Answer`) is mapped, not re-decided:

- an action that exists is `structuredContent`, exactly as GET /v1/actions/{id} shows it (the
  tool's output schema), whatever its status;
- `isError: true` when the call did not do what it asked and will not: denied by policy, rejected
  or left to expire by a human, failed, cancelled. The text names the rule and the hint (the
  problem document's `detail` and `hint`), so the model can act on it;
- a pending action (awaiting a human, deferred to a send window, still queued or running) is not
  an error: the text says what it waits for and how to follow it;
- a refusal before anything was recorded (invalid arguments, a key reused for other arguments, a
  tool that cannot run here) is `isError: true` with the field errors and the hint, and no
  `structuredContent` (there is no action).

Hosts that show the model only `content` still give it everything it needs: the text carries
the outcome, the hint and the result (MCP asks for structured results to be repeated as text).
"""

from __future__ import annotations

import json
from typing import Any

import mcp_types as types

from outbox.actions.models import ActionStatus
from outbox.actions.service import Answer
from outbox.errors import DomainError, IdempotencyKeyInvalid, IdempotencyKeyReused, ToolUnavailable, ValidationFailed
from outbox.mcp.schemas import ACTION_ID_META, IDEMPOTENCY_KEY_META, REPLAYED_META, RETRY_AFTER_META

# Statuses in which the call did not, and will not, do what it asked.
_ERROR_STATUSES = frozenset(
    {ActionStatus.DENIED, ActionStatus.REJECTED, ActionStatus.EXPIRED, ActionStatus.FAILED, ActionStatus.CANCELLED}
)
# Enough of a tool's response for a model to read; the whole of it is in structuredContent.
_MAX_RESULT_TEXT = 8000

_REPLAYED = (
    "Replayed: this exact call was already made (action {id}) and was not executed again; this is "
    "its current state. To make the same call again on purpose, send a new `{key}` in `_meta`."
)

# Hints written for the HTTP header, said again in MCP's terms.
_MCP_HINTS: dict[type[DomainError], str] = {
    IdempotencyKeyReused: (
        f"Send a new `{IDEMPOTENCY_KEY_META}` in `_meta` for a new call; reuse a key only to retry "
        "the exact same call (same tool, arguments and on_behalf_of)."
    ),
    IdempotencyKeyInvalid: f"Send `{IDEMPOTENCY_KEY_META}` as 1 to 255 printable ASCII characters, e.g. a UUID.",
    ToolUnavailable: (
        "Retry later (with the same `_meta` key, if you sent one), or ask the operator of this outbox "
        "to fix what is named above; tools/list marks the tools that cannot run here."
    ),
}


def call_result(answer: Answer) -> types.CallToolResult:
    """The tools/call result for a submission's answer (fresh, replayed, or after waiting)."""
    action = answer.action if answer.action is not None else (answer.body if answer.status < 400 else None)
    if action is None:
        # A stored refusal replayed as stored: the problem document is all there is.
        return _error_text(answer.body, answer)
    status = ActionStatus(action["status"])
    lines = [_REPLAYED.format(id=action["id"], key=IDEMPOTENCY_KEY_META)] if answer.replayed else []
    lines.extend(_outcome_lines(action, status, answer))
    return types.CallToolResult(
        content=[types.TextContent(text="\n".join(lines))],
        structured_content=action,
        is_error=status in _ERROR_STATUSES,
        meta=_result_meta(action["id"], answer),
    )


def refusal_result(error: DomainError) -> types.CallToolResult:
    """Nothing was recorded: what was wrong, what to do instead, and each invalid field."""
    hint = _MCP_HINTS.get(type(error), error.hint)
    lines = [f"{error.title}: {error.detail}"]
    if hint:
        lines.append(f"Hint: {hint}")
    if isinstance(error, ValidationFailed):
        lines.extend(f"- {e['field']}: {e['message']}" for e in error.errors)
    if error.action_id:
        lines.append(f"Action: {error.action_id} (GET /v1/actions/{error.action_id}).")
    meta: dict[str, Any] = {}
    if error.retry_after is not None:
        lines.append(f"Retry after {error.retry_after} s.")
        meta[RETRY_AFTER_META] = error.retry_after
    return types.CallToolResult(content=[types.TextContent(text="\n".join(lines))], is_error=True, meta=meta or None)


def _outcome_lines(action: dict[str, Any], status: ActionStatus, answer: Answer) -> list[str]:
    tool, action_id = action["tool"], action["id"]
    follow = f"Follow it with GET /v1/actions/{action_id} (the outbox HTTP API, same key)."
    problem = action.get("problem") or (answer.body if answer.status >= 400 else None) or {}
    if status is ActionStatus.SUCCEEDED:
        return [f"{tool} succeeded (action {action_id}).", *_result_lines(action)]
    if status is ActionStatus.DENIED:
        return [f"Denied by policy (action {action_id}). {problem.get('detail', '')}".rstrip(), *_hint(problem)]
    if status in (ActionStatus.REJECTED, ActionStatus.EXPIRED):
        return [
            f"{problem.get('title', status.value)} (action {action_id}). {problem.get('detail', '')}",
            *_hint(problem),
        ]
    if status is ActionStatus.FAILED:
        return [
            f"{tool} failed (action {action_id}): {action.get('status_reason') or 'no reason given'}.",
            *_result_lines(action),
        ]
    if status is ActionStatus.CANCELLED:
        return [f"{tool} was cancelled before it ran (action {action_id})."]
    if status is ActionStatus.AWAITING_APPROVAL:
        return [
            f"{tool} is waiting for a human to approve it (action {action_id}); nothing has run yet. "
            f"{action.get('status_reason') or ''}".rstrip(),
            f"Do not call it again: the decision applies to this action. {follow}",
        ]
    if status is ActionStatus.DEFERRED:
        return [
            f"{tool} is deferred until {action.get('not_before')} (action {action_id}): "
            f"{action.get('status_reason') or 'outside its send window or budget'}. It runs then by itself.",
            follow,
        ]
    return [f"{tool} is {status.value} (action {action_id}); it has not finished yet. {follow}"]


def _hint(problem: dict[str, Any]) -> list[str]:
    return [f"Hint: {problem['hint']}"] if problem.get("hint") else []


def _result_lines(action: dict[str, Any]) -> list[str]:
    result = action.get("result")
    if not result:
        return []
    text = json.dumps(result, ensure_ascii=False, sort_keys=True)
    if len(text) > _MAX_RESULT_TEXT:
        text = text[:_MAX_RESULT_TEXT] + f"… ({len(text)} characters; all of it is in structuredContent)"
    return [f"Result: {text}"]


def _error_text(problem: dict[str, Any], answer: Answer) -> types.CallToolResult:
    lines = [f"{problem.get('title', 'Refused')}: {problem.get('detail', '')}", *_hint(problem)]
    return types.CallToolResult(
        content=[types.TextContent(text="\n".join(lines))],
        is_error=True,
        meta=_result_meta(answer.action_id, answer),
    )


def _result_meta(action_id: str | None, answer: Answer) -> dict[str, Any]:
    meta: dict[str, Any] = {REPLAYED_META: answer.replayed}
    if action_id is not None:
        meta[ACTION_ID_META] = action_id
    if answer.retry_after is not None:
        meta[RETRY_AFTER_META] = answer.retry_after
    return meta
