"""The checkpointer: seals the events committed since its last turn, signs the chain head, and
writes it to sinks.

It runs about twice a second (`OUTBOX_AUDIT_CHECKPOINT_INTERVAL_SECONDS`, 0.5 s): a thread of the
embedded server, a Celery beat entry in production. Each turn first seals every pending event
(`outbox.audit.sealer`, in batches), so an event is chained within about a second of its commit
(the merge delay, docs/audit.md), then covers the new head with one checkpoint; when the head has
not moved, nothing is written.

Several processes may run it at once (API replicas, workers). One writes at a time: on
PostgreSQL the writer holds a transaction-scoped advisory lock (the others skip their turn), on
SQLite the write transaction holds the database lock. The head is the sealed event with the
highest `seq`, read inside that transaction; the sealer only ever appends positions after the
tail, so the head read is always a prefix of the chain. A checkpoint's `event_count` is the
head's `seq`.

Before signing, the checkpointer checks the segment it is about to cover: the previous
checkpoint's last event must still carry its hash at its position, and every new event must link
to the one before it. It never signs a chain it can see was tampered with; it logs
`audit.tampered` instead.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog
from sqlalchemy import func
from sqlmodel import Session, col, select

from outbox.audit.checkpoints import GENESIS_DIGEST, LOG_EVENT, Checkpoint, SignedCheckpoint, sign_checkpoint
from outbox.audit.models import AuditCheckpoint, AuditEvent
from outbox.audit.sealer import seal_all
from outbox.audit.service import GENESIS_HASH, broken_link
from outbox.audit.signing import CheckpointSigner, load_signer
from outbox.config import Settings
from outbox.db import Database
from outbox.sqltypes import utcnow

log = structlog.get_logger(__name__)

CHECKPOINT_FILE = "audit-checkpoints.jsonl"
# Arbitrary constant naming the PostgreSQL advisory lock held by the one checkpoint writer.
_CHECKPOINT_LOCK_ID = 0x0A0D18
# A backlog (the first run on an existing database) is covered in steps of this many events, so
# that no step holds the SQLite write lock for long.
MAX_EVENTS_PER_CHECKPOINT = 10_000


# The head: the sealed event with the highest position.
_HEAD = (
    select(AuditEvent.id, AuditEvent.hash)
    .where(col(AuditEvent.seq).is_not(None))
    .order_by(col(AuditEvent.seq).desc())
    .limit(1)
)


class CheckpointSink(Protocol):
    """Somewhere the database writer cannot rewrite. `write` raises if the line is not kept."""

    def write(self, signed: SignedCheckpoint) -> None: ...


class FileSink:
    """Appends one line per checkpoint (O_APPEND, fsync'd), mode 0600 in a 0700 directory.

    O_APPEND means this process only ever adds to the end; making the file append-only for
    everyone (`chattr +a`, a WORM volume) is the operator's part (docs/audit.md).
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, signed: SignedCheckpoint) -> None:
        created = not self.path.exists()
        if created:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (signed.line() + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            # The new directory entry must survive a crash too.
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


class LogSink:
    """The structured log: one `audit.checkpoint` line carrying the signed checkpoint, for a log
    pipeline that ships lines off the machine."""

    def write(self, signed: SignedCheckpoint) -> None:
        log.info(LOG_EVENT, checkpoint=signed.checkpoint.to_json(), signature=signed.signature)


def checkpoint_file(settings: Settings) -> Path:
    return settings.audit_checkpoint_file or settings.data_dir / CHECKPOINT_FILE


def sinks_for(settings: Settings) -> list[CheckpointSink]:
    sinks: list[CheckpointSink] = []
    for name in dict.fromkeys(settings.audit_checkpoint_sinks):
        sinks.append(FileSink(checkpoint_file(settings)) if name == "file" else LogSink())
    return sinks


@dataclass(frozen=True, slots=True)
class CheckpointOutcome:
    signed: SignedCheckpoint
    # The step stopped at MAX_EVENTS_PER_CHECKPOINT: more events are waiting.
    more: bool


class Checkpointer:
    def __init__(
        self,
        db: Database,
        signer: CheckpointSigner,
        sinks: Sequence[CheckpointSink],
        *,
        max_events: int = MAX_EVENTS_PER_CHECKPOINT,
    ) -> None:
        self.db = db
        self.signer = signer
        self.sinks = list(sinks)
        self.max_events = max_events
        self._alarm: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings, db: Database) -> Checkpointer:
        signer = load_signer(settings, create=True)
        assert signer is not None  # create=True: made when missing
        return cls(db, signer, sinks_for(settings))

    def head_moved(self) -> bool:
        """A cheap read (no write lock) that decides whether a checkpoint is worth attempting.

        A head that is not exactly the covered one has moved: forward (new events), or back or
        sideways (the newest events deleted or replaced), which the write path reports.
        """
        with self.db.read_session() as session:
            head = session.exec(_HEAD).first()
            covered = session.exec(
                select(AuditCheckpoint.last_event_id, AuditCheckpoint.last_hash)
                .order_by(col(AuditCheckpoint.seq).desc())
                .limit(1)
            ).first()
        if head is None or covered is None:
            return head is not None or covered is not None
        return (head[0], head[1]) != (covered[0], covered[1])

    def checkpoint_once(self) -> CheckpointOutcome | None:
        """Seal what is pending, then write a checkpoint of the head if it moved and no other
        process is writing one."""
        seal_all(self.db)
        if not self.head_moved():
            return None
        with self.db.session() as session:
            if (
                self.db.is_postgres
                and not session.exec(select(func.pg_try_advisory_xact_lock(_CHECKPOINT_LOCK_ID))).one()
            ):
                return None  # another process is writing this head's checkpoint
            previous = session.exec(select(AuditCheckpoint).order_by(col(AuditCheckpoint.seq).desc()).limit(1)).first()
            segment = self._segment(session, previous)
            if segment is None:
                return None
            last_seq, last_id, last_hash, more = segment
            checkpoint = Checkpoint(
                seq=(previous.seq if previous else 0) + 1,
                event_count=last_seq,
                last_event_id=last_id,
                last_hash=last_hash,
                at=utcnow(),
                prev=previous.digest if previous else GENESIS_DIGEST,
                key_id=self.signer.key_id,
            )
            signed = sign_checkpoint(self.signer, checkpoint)
            session.add(
                AuditCheckpoint(
                    seq=checkpoint.seq,
                    created_at=checkpoint.at,
                    event_count=checkpoint.event_count,
                    last_event_id=checkpoint.last_event_id,
                    last_hash=checkpoint.last_hash,
                    digest=checkpoint.digest,
                    line=signed.line(),
                )
            )
            # Claim the number before anything leaves the process; the sinks come last, so a
            # failed sink rolls the claim back and the next turn writes this checkpoint again.
            session.flush()
            for sink in self.sinks:
                sink.write(signed)
        return CheckpointOutcome(signed, more)

    def _segment(self, session: Session, previous: AuditCheckpoint | None) -> tuple[int, int, str, bool] | None:
        """The sealed events after the previous checkpoint, checked link by link: (the last one's
        seq, id and hash, more waiting), or None when there are none or the chain was tampered with."""
        after_seq, expected_prev = 0, GENESIS_HASH
        if previous is not None:
            anchored = session.exec(
                select(AuditEvent.seq, AuditEvent.hash).where(col(AuditEvent.id) == previous.last_event_id)
            ).first()
            if anchored is None or (anchored[0], anchored[1]) != (previous.event_count, previous.last_hash):
                self._alarm_once(
                    f"event {previous.last_event_id}, the last one checkpoint #{previous.seq} covers, "
                    + ("is gone" if anchored is None else "no longer has the position and hash it was checkpointed at")
                    + "; no further checkpoint is written: run `outbox audit verify`"
                )
                return None
            after_seq, expected_prev = previous.event_count, previous.last_hash
        rows = session.exec(
            select(AuditEvent)
            .where(col(AuditEvent.seq) > after_seq)
            .order_by(col(AuditEvent.seq))
            .limit(self.max_events)
        ).all()
        if not rows:
            return None
        for position, row in enumerate(rows, start=after_seq + 1):
            if row.seq != position or broken_link(row, expected_prev) is not None:
                self._alarm_once(
                    f"event {row.id} does not link to the chain before it; no checkpoint is written: "
                    "run `outbox audit verify`"
                )
                return None
            expected_prev = row.hash or ""
        last = rows[-1]
        assert last.id is not None
        assert last.seq is not None
        assert last.hash is not None
        return last.seq, last.id, last.hash, len(rows) == self.max_events

    def _alarm_once(self, problem: str) -> None:
        # Every turn finds the same damage; say it once per process, not once a second.
        if problem != self._alarm:
            log.error("audit.tampered", problem=problem)
            self._alarm = problem


def run_checkpointer(checkpointer: Checkpointer, interval: float, stop: threading.Event) -> None:
    """The embedded server's loop: a turn (seal, then checkpoint) per interval, catching up on a
    backlog at once."""
    while not stop.wait(interval):
        try:
            while (outcome := checkpointer.checkpoint_once()) is not None and outcome.more and not stop.is_set():
                pass
        except Exception:
            log.exception("audit.checkpoint_failed")
