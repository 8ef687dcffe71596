"""The session log of a replay twin: one JSON line per call it answered, matched or not.

The first line (`record: "session"`) says which export the twin served and with which match
rule; then one `record: "call"` line per call, appended as it is answered, so a session cut short
still holds every call answered before: when, which face (http, mcp), the tool, the arguments,
the token's label, and either the recorded action that answered it (`outcome: "matched"`) or
the nearest recorded call and the fields that differ (`outcome: "diverged"`). A call refused
before any match (invalid envelope, key reused for another call) is `outcome: "refused"`.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from outbox.sqltypes import utcnow

MATCHED = "matched"
DIVERGED = "diverged"
REFUSED = "refused"


class SessionLogError(ValueError):
    """A session log that cannot be read: names the line."""


def default_session_path(data_dir: Path, now: datetime | None = None) -> Path:
    moment = now or utcnow()
    return data_dir / "replay" / f"session-{moment.strftime('%Y%m%dT%H%M%S%fZ')}.jsonl"


class SessionLog:
    """Appends the session's lines; safe from the HTTP and MCP faces at once."""

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        # A session holds recorded arguments: readable by the operator only.
        with open(path, "a", encoding="utf-8", opener=_private) as stream:
            stream.write(_line({"record": "session", "started_at": utcnow().isoformat(), **header}))

    def append(self, entry: dict[str, Any]) -> None:
        line = _line({"record": "call", "at": utcnow().isoformat(), **entry})
        with self._lock, self.path.open("a", encoding="utf-8") as stream:
            stream.write(line)


def _private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


def _line(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"


@dataclass(frozen=True)
class Session:
    """A session log as read back: its header (the last one, if a file holds several) and calls."""

    header: dict[str, Any]
    calls: list[dict[str, Any]]


def read_session(path: Path) -> Session:
    header: dict[str, Any] = {}
    calls: list[dict[str, Any]] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SessionLogError(f"{path}: {exc.strerror or exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SessionLogError(f"{path}:{number}: not a JSON object ({exc.msg})") from exc
        if not isinstance(record, dict) or record.get("record") not in ("session", "call"):
            raise SessionLogError(f"{path}:{number}: not a replay session line (record: session or call)")
        if record["record"] == "session":
            header = record
        else:
            calls.append(record)
    return Session(header, calls)
