"""Shared helpers are written once: a grep over `outbox/` finds each primitive in its one home.

Migrations are excluded: they are frozen in time and must not import application code.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import outbox

ROOT = Path(outbox.__file__).parent


def files_matching(pattern: str) -> set[str]:
    found = set()
    for path in ROOT.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        text = "\n".join(
            line for line in path.read_text(encoding="utf-8").splitlines() if not line.lstrip().startswith("#")
        )
        if re.search(pattern, text):
            found.add(path.relative_to(ROOT.parent).as_posix())
    return found


@pytest.mark.parametrize(
    ("what", "pattern", "homes"),
    [
        ("insert-or-ignore", r"on_conflict_do_nothing|INSERT OR IGNORE", {"outbox/db.py"}),
        # Catching a unique-key violation is left to the one place where it means something
        # other than "already there": a second decision by the same approver. (A racing
        # idempotency key is an insert-or-ignore in the transaction that records the action.)
        ("unique-key races", r"except IntegrityError", {"outbox/approvals/service.py"}),
        # outbox.client runs in agents' processes and loads no server module (sqltypes brings
        # SQLAlchemy): it reads its own clock and mints its own idempotency keys.
        ("the clock", r"datetime\.now\(|datetime\.utcnow\(", {"outbox/sqltypes.py", "outbox/client/retries.py"}),
        # X-Request-ID values are log correlation ids, not row ids: the middleware mints its own.
        (
            "row ids",
            r"uuid\.uuid4\(|uuid4\(\)",
            {"outbox/sqltypes.py", "outbox/api/middleware.py", "outbox/client/_protocol.py"},
        ),
        ("YAML parsing", r"yaml\.(safe_load|load|full_load|unsafe_load)\(", {"outbox/yamlfiles.py"}),
        ("bearer header parsing", r"""headers\.get\(\s*["'][Aa]uthorization["']""", set()),
        ("HTTP-date parsing", r"parsedate_to_datetime|parsedate\(", {"outbox/retry_after.py"}),
    ],
)
def test_each_shared_helper_has_one_home(what: str, pattern: str, homes: set[str]) -> None:
    assert files_matching(pattern) == homes, what
