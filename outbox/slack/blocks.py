"""Block Kit for approval requests: the message with Approve/Deny buttons, its decided and
executed states, and the modal asking for a denial's reason.

Everything an agent wrote (reason, arguments, preview) is escaped: in Slack mrkdwn `<`, `>` and
`&` are control characters (`<!channel>` pings everyone), and text is cut to Slack's limits
(3000 characters per section, 50 blocks per message).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from outbox.approvals.schemas import ApprovalOut

APPROVE_ACTION = "outbox_approve"
DENY_ACTION = "outbox_deny"
DENY_MODAL = "outbox_deny_modal"
REASON_BLOCK = "reason"
RESUBMIT_BLOCK = "resubmit"
_SECTION_LIMIT = 2900
_MAX_TARGET_SECTIONS = 20

_STATUS_LINES = {
    "pending": ":hourglass_flowing_sand: *Waiting for approval*",
    "approved": ":white_check_mark: *Approved*",
    "rejected": ":no_entry: *Denied*",
    "expired": ":alarm_clock: *Expired* — nobody decided in time; nothing ran",
    "cancelled": ":heavy_multiplication_x: *Cancelled* by the agent; nothing ran",
}
_OUTCOME_LINES = {
    "queued": ":arrows_counterclockwise: Queued to run",
    "running": ":gear: Running",
    "deferred": ":double_vertical_bar: Deferred",
    "succeeded": ":large_green_circle: *Outcome: succeeded*",
    "failed": ":red_circle: *Outcome: failed*",
}


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _code(text: str, limit: int = _SECTION_LIMIT) -> str:
    # Backticks cannot be escaped inside a code block; a look-alike keeps the block intact.
    return "```" + _cut(escape(text).replace("```", "ˋˋˋ"), limit - 8) + "```"


def who(identity: str) -> str:
    """`slack:U0123` renders as a mention; other identities as escaped text."""
    if identity.startswith("slack:"):
        return f"<@{escape(identity.removeprefix('slack:'))}>"
    return f"`{escape(identity)}`"


def _when(moment: datetime) -> str:
    fallback = moment.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} {{time}}|{fallback}>"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _cut(text, 3000)}}


def _target_sections(targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    lines = [f"{t.get('act', '?')}  {t.get('object', '?')}" for t in targets]
    sections: list[dict[str, Any]] = []
    chunk: list[str] = []
    size = 0
    for index, line in enumerate(lines):
        if size + len(line) + 1 > _SECTION_LIMIT - 60 and chunk:
            sections.append(_section(_code("\n".join(chunk))))
            chunk, size = [], 0
            if len(sections) == _MAX_TARGET_SECTIONS:
                sections.append(
                    _section(f"…and {len(lines) - index} more target(s): `outbox approvals show` lists them all.")
                )
                return sections
        chunk.append(line)
        size += len(line) + 1
    if chunk:
        sections.append(_section(_code("\n".join(chunk))))
    return sections


def summary_text(approval: ApprovalOut) -> str:
    """The notification text (and the fallback for clients without blocks)."""
    state = {
        "pending": "Approval needed",
        "approved": "Approved",
        "rejected": "Denied",
        "expired": "Expired",
        "cancelled": "Cancelled",
    }.get(approval.status, approval.status)
    return escape(f"{state}: {approval.tool} by {approval.agent} on {len(approval.targets)} target(s)")


def approval_message(approval: ApprovalOut) -> tuple[str, list[dict[str, Any]]]:
    """The message for the approval's current state: the request, decisions and outcome."""
    title = {
        "pending": "Approval needed",
        "approved": "Approved",
        "rejected": "Denied",
        "expired": "Expired",
        "cancelled": "Cancelled",
    }.get(approval.status, approval.status)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(f"{title}: {approval.tool}", 150)}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*Agent*\n`{escape(approval.agent)}`"},
                {"type": "mrkdwn", "text": f"*On behalf of*\n{escape(approval.on_behalf_of or '—')}"},
                {"type": "mrkdwn", "text": f"*Expires*\n{_when(approval.expires_at)}"},
                {"type": "mrkdwn", "text": f"*Approvals*\n{approval.approvals} of {approval.quorum} needed"},
            ],
        },
    ]
    if approval.agent_reason:
        blocks.append(_section(f"*Reason given by the agent*\n>{_cut(escape(approval.agent_reason), 1500)}"))
    rules = [r.get("rule") or r.get("escalation") or json.dumps(r) for r in approval.rules if isinstance(r, dict)]
    blocks.append(
        _section(
            "*Required by*\n"
            + ("\n".join(f"`{escape(str(rule))}`" for rule in rules) or "policy")
            + f"\npolicy `{escape(approval.policy_version)}`"
        )
    )
    blocks.append(_section(f"*Targets ({len(approval.targets)})*"))
    blocks.extend(_target_sections(approval.targets))
    preview = approval.preview if approval.preview is not None else approval.args
    label = "Preview" if approval.preview is not None else "Arguments"
    blocks.append(_section(f"*{label}*\n" + _code(json.dumps(preview, indent=2, ensure_ascii=False), 2800)))
    blocks.extend(_state_blocks(approval))
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": escape(
                        f"approval {approval.id} · action {approval.action_id} · digest {approval.digest[:16]}…"
                    )
                    + " · CLI: `outbox approvals show "
                    + escape(approval.id)
                    + "`",
                }
            ],
        }
    )
    return summary_text(approval), blocks[:50]


def _state_blocks(approval: ApprovalOut) -> list[dict[str, Any]]:
    lines = [_STATUS_LINES.get(approval.status, escape(approval.status))]
    for decision in approval.decisions:
        verb = "approved" if decision.verdict == "approve" else "denied"
        line = f"• {who(decision.approver)} {verb} {_when(decision.created_at)} via {escape(decision.via)}"
        if decision.reason:
            line += f": _{_cut(escape(decision.reason), 500)}_"
        lines.append(line)
    if approval.status == "rejected" and approval.may_resubmit is not None:
        lines.append(
            "The agent may ask again after changing the call."
            if approval.may_resubmit
            else "The agent was told not to ask again."
        )
    outcome = _OUTCOME_LINES.get(approval.action_status)
    if outcome is not None and approval.status == "approved":
        detail = f" — {_cut(escape(approval.action_status_reason), 500)}" if approval.action_status_reason else ""
        lines.append(outcome + (detail if approval.action_status in ("succeeded", "failed") else ""))
    blocks = [_section("\n".join(lines))]
    if approval.status == "pending":
        value = f"{approval.id}:{approval.digest}"
        blocks.append(
            {
                "type": "actions",
                "block_id": "outbox_decision",
                "elements": [
                    {
                        "type": "button",
                        "action_id": APPROVE_ACTION,
                        "text": {"type": "plain_text", "text": "Approve"},
                        "style": "primary",
                        "value": value,
                        "confirm": {
                            "title": {"type": "plain_text", "text": "Approve this call?"},
                            "text": {
                                "type": "mrkdwn",
                                "text": _cut(
                                    f"{escape(approval.tool)} on {len(approval.targets)} target(s) will run as shown.",
                                    300,
                                ),
                            },
                            "confirm": {"type": "plain_text", "text": "Approve"},
                            "deny": {"type": "plain_text", "text": "Back"},
                        },
                    },
                    {
                        "type": "button",
                        "action_id": DENY_ACTION,
                        "text": {"type": "plain_text", "text": "Deny…"},
                        "style": "danger",
                        "value": value,
                    },
                ],
            }
        )
    return blocks


def deny_modal(*, approval_id: str, digest: str, tool: str) -> dict[str, Any]:
    """The form asking for a denial's reason; the agent receives the reason verbatim."""
    return {
        "type": "modal",
        "callback_id": DENY_MODAL,
        "private_metadata": json.dumps({"approval_id": approval_id, "digest": digest}),
        "title": {"type": "plain_text", "text": "Deny this call"},
        "submit": {"type": "plain_text", "text": "Deny"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            _section(f"Denying *{escape(tool)}* ({escape(approval_id)}). The agent receives your reason."),
            {
                "type": "input",
                "block_id": REASON_BLOCK,
                "label": {"type": "plain_text", "text": "Reason"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": REASON_BLOCK,
                    "multiline": True,
                    "max_length": 2000,
                },
            },
            {
                "type": "input",
                "block_id": RESUBMIT_BLOCK,
                "optional": True,
                "label": {"type": "plain_text", "text": "May the agent ask again?"},
                "element": {
                    "type": "checkboxes",
                    "action_id": RESUBMIT_BLOCK,
                    "options": [
                        {
                            "text": {"type": "plain_text", "text": "Yes, after changing the call as the reason says"},
                            "value": "yes",
                        }
                    ],
                },
            },
        ],
    }
