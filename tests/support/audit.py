"""Helpers for the audit tests: cheap events, sealing, a checkpointer, and a verifier with the test key."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy import delete, func
from sqlmodel import col, select

from outbox.actions.reconstruction import find_action_mismatches
from outbox.audit.checkpointer import Checkpointer, checkpoint_file
from outbox.audit.models import AuditEvent
from outbox.audit.sealer import seal_all
from outbox.audit.service import record_event
from outbox.audit.signing import load_signer
from outbox.audit.verification import AuditReport, load_checkpoint_log, verify_audit
from outbox.runtime import Runtime
from outbox.sqltypes import utcnow


def make_events(runtime: Runtime, count: int, *, kind: str = "test.event") -> None:
    """`count` real events, inserted the way every transition inserts them, then chained by the
    sealer as the checkpointer's next turn would."""
    with runtime.db.session() as session:
        for n in range(count):
            record_event(session, event_type=kind, actor="test", data={"n": n})
    seal(runtime)


def seal(runtime: Runtime) -> int:
    """Chain every committed event now (what the checkpointer's turn does first), through the
    public sealer; how many were sealed."""
    return seal_all(runtime.db)


def event_ids(runtime: Runtime) -> list[int]:
    with runtime.db.session() as session:
        return [i for i in session.exec(select(AuditEvent.id).order_by(col(AuditEvent.id))).all() if i is not None]


def event_count(runtime: Runtime) -> int:
    with runtime.db.session() as session:
        return int(session.exec(select(func.count()).select_from(AuditEvent)).one())


def delete_newest(runtime: Runtime, count: int) -> None:
    doomed = event_ids(runtime)[-count:]
    with runtime.db.session() as session:
        session.execute(delete(AuditEvent).where(col(AuditEvent.id).in_(doomed)))


def checkpointer(runtime: Runtime, **overrides: int) -> Checkpointer:
    built = Checkpointer.from_settings(runtime.settings, runtime.db)
    for name, value in overrides.items():
        setattr(built, name, value)
    return built


def verify(
    runtime: Runtime,
    *,
    witness: Path | None = None,
    now: datetime | None = None,
    tolerance: float | None = 60.0,
) -> AuditReport:
    signer = load_signer(runtime.settings, create=True)
    assert signer is not None
    path = witness or checkpoint_file(runtime.settings)
    log = load_checkpoint_log(path, {signer.key_id: signer.public_key})
    with runtime.db.read_session() as session:
        return verify_audit(
            session,
            log,
            source=str(path),
            now=now or utcnow(),
            tolerance_seconds=None if witness is not None else tolerance,
            find_action_mismatches=find_action_mismatches,
        )
