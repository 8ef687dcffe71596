"""What an approver is shown of a call, per kind of tool: the preview the action recorded at
submission (the same dictionary the digest covers), laid out for reading.

Each tool's preview has its own shape (`outbox/mail/provider.py`, `outbox/commands/tool.py`,
`outbox/tools/http_request.py`); a tool whose preview this module does not know, or a preview
that does not have the expected shape, is shown as its JSON, never hidden.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from outbox.approvals.schemas import ApprovalOut

PreviewKind = Literal["email", "command", "http", "json"]


@dataclass(frozen=True)
class Header:
    name: str
    value: str


@dataclass(frozen=True)
class DryRun:
    """The dry-run argv's result, as run in the sandbox at submission."""

    argv: list[str] | None
    exit_code: int | None
    stdout: str
    stderr: str
    truncated: bool
    timed_out: bool
    error: str | None
    # Every connection the dry run tried through the egress proxy, allowed or refused.
    connections: list[Connection] = field(default_factory=list)
    connections_truncated: bool = False


@dataclass(frozen=True)
class Connection:
    destination: str
    address: str | None
    outcome: str
    reason: str | None
    bytes_sent: int
    bytes_received: int


@dataclass(frozen=True)
class CallPreview:
    kind: PreviewKind
    # email: the headers an approver checks, the text part, and the HTML for the sandboxed iframe.
    headers: list[Header] = field(default_factory=list)
    text: str | None = None
    html: str | None = None
    # command: what runs, and what its dry run printed.
    argv: list[str] | None = None
    dry_run_argv: list[str] | None = None
    sandbox: str | None = None
    timeout_seconds: float | None = None
    # http.request: the request line and its JSON body.
    method: str | None = None
    url: str | None = None
    body: str | None = None
    # Every kind: the dry run if the tool has one; the recorded preview (or arguments) as JSON.
    dry_run: DryRun | None = None
    raw: str = ""


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


def preview_of(approval: ApprovalOut) -> CallPreview:
    """The approver's view of the call `approval` gates."""
    recorded = approval.preview
    raw = pretty_json(recorded if recorded is not None else approval.args)
    if not isinstance(recorded, dict):
        return CallPreview(kind="json", raw=raw)
    dry_run = _dry_run(recorded.get("dry_run"), recorded.get("dry_run_argv"))
    if approval.tool == "email.send" and ("html" in recorded or "text" in recorded):
        return CallPreview(
            kind="email",
            headers=_email_headers(recorded, approval.args),
            text=_str_or_none(recorded.get("text")),
            html=_str_or_none(recorded.get("html")),
            dry_run=dry_run,
            raw=raw,
        )
    if isinstance(recorded.get("argv"), list):
        return CallPreview(
            kind="command",
            argv=[str(part) for part in recorded["argv"]],
            dry_run_argv=_str_list(recorded.get("dry_run_argv")),
            sandbox=_str_or_none(recorded.get("sandbox")),
            timeout_seconds=_number(recorded.get("timeout_seconds")),
            dry_run=dry_run,
            raw=raw,
        )
    if approval.tool == "http.request" and isinstance(recorded.get("url"), str):
        body = recorded.get("json")
        return CallPreview(
            kind="http",
            method=str(recorded.get("method", "")),
            url=recorded["url"],
            body=None if body is None else pretty_json(body),
            dry_run=dry_run,
            raw=raw,
        )
    return CallPreview(kind="json", dry_run=dry_run, raw=raw)


def _email_headers(preview: dict[str, Any], args: dict[str, Any]) -> list[Header]:
    """From, To, Cc, Bcc, Reply-To, Subject and the category, as the message will carry them.

    The preview holds the sender and every envelope recipient; Cc, Bcc and Reply-To come from the
    arguments as submitted (the same values the message is built from)."""
    headers = [Header("From", _mailbox(preview.get("from")))]
    to = args.get("to")
    headers.append(Header("To", _mailboxes(to if isinstance(to, list) else preview.get("to"))))
    for name, key in (("Cc", "cc"), ("Bcc", "bcc")):
        value = args.get(key)
        if isinstance(value, list) and value:
            headers.append(Header(name, _mailboxes(value)))
    if args.get("reply_to"):
        headers.append(Header("Reply-To", _mailbox(args["reply_to"])))
    headers.append(Header("Subject", str(preview.get("subject", ""))))
    if preview.get("category"):
        headers.append(Header("Category", str(preview["category"])))
    return headers


def _mailbox(value: Any) -> str:
    if isinstance(value, dict):
        address = str(value.get("address", ""))
        name = value.get("name")
        return f"{name} <{address}>" if name else address
    return "" if value is None else str(value)


def _mailboxes(values: Any) -> str:
    if not isinstance(values, list):
        return _mailbox(values)
    return ", ".join(_mailbox(value) for value in values)


def _dry_run(outcome: Any, declared_argv: Any) -> DryRun | None:
    if not isinstance(outcome, dict):
        return None
    exit_code = outcome.get("exit_code")
    return DryRun(
        argv=_str_list(outcome.get("argv")) or _str_list(declared_argv),
        exit_code=exit_code if isinstance(exit_code, int) else None,
        stdout=str(outcome.get("stdout") or ""),
        stderr=str(outcome.get("stderr") or ""),
        truncated=bool(outcome.get("stdout_truncated") or outcome.get("stderr_truncated")),
        timed_out=bool(outcome.get("timed_out")),
        error=_str_or_none(outcome.get("error")),
        connections=_connections(outcome.get("egress")),
        connections_truncated=bool(outcome.get("egress_truncated")),
    )


def _connections(records: Any) -> list[Connection]:
    """The egress records of a dry run (outbox/commands/egress), as an approver reads them."""
    if not isinstance(records, list):
        return []
    found = []
    for record in records:
        if not isinstance(record, dict):
            continue
        host, port = record.get("host"), record.get("port")
        destination = f"{host}:{port}" if host is not None and port is not None else str(record.get("target") or "")
        found.append(
            Connection(
                destination=destination,
                address=_str_or_none(record.get("address")),
                outcome=str(record.get("outcome") or ""),
                reason=_str_or_none(record.get("reason")),
                bytes_sent=int(_number(record.get("bytes_sent")) or 0),
                bytes_received=int(_number(record.get("bytes_received")) or 0),
            )
        )
    return found


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _str_list(value: Any) -> list[str] | None:
    return [str(part) for part in value] if isinstance(value, list) else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def summary_of(approval: ApprovalOut) -> str:
    """One line for the inbox: what the call would do, before anyone opens it."""
    shown = preview_of(approval)
    if shown.kind == "email":
        headers = {header.name: header.value for header in shown.headers}
        return f"To {headers.get('To', '?')}: {headers.get('Subject', '')}"
    if shown.kind == "command" and shown.argv is not None:
        return " ".join(shown.argv)
    if shown.kind == "http":
        return f"{shown.method} {shown.url}"
    targets = ", ".join(str(t.get("object", t)) for t in approval.targets[:3] if isinstance(t, dict))
    return targets or approval.tool
