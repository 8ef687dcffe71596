"""`outbox audit verify`: the chain, the chain against its signed checkpoints, and every action's
row against its events. One report; any failure fails it.

What each part catches:
- the chain: an event edited, inserted or removed in the middle;
- the checkpoints: a missing tail (the newest events, or every event, deleted), and a chain
  rewritten from some point on with recomputed hashes (the event at a checkpointed position
  has another hash); a checkpoint line altered (bad signature) or a rewritten checkpoint history
  (the checkpoints' own chain breaks);
- the actions: a status or an argument edited in `actions` without an event.

Only sealed events are the chain, walked in `seq` order; `verify_audit` itself only reads (the
`outbox audit verify` command seals what is pending first). Events committed but not yet sealed
are never a break: they are counted, and fail only when the oldest of them is older than the
tolerance (the sealer is not running). Events newer than the latest checkpoint are reported as not
yet checkpointed; that fails only when the oldest of them is older than the tolerance (the
checkpointer runs every half second).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import func
from sqlmodel import Session, col, select

from outbox.audit.checkpoints import Checkpoint, CheckpointLog, format_time, read_checkpoint_log
from outbox.audit.models import AuditCheckpoint, AuditEvent
from outbox.audit.service import GENESIS_HASH, ChainBreak, broken_link, iter_events

MAX_MISMATCHES_SHOWN = 50


@dataclass(frozen=True, slots=True)
class ActionMismatch:
    action_id: str
    problem: str


# Finds the actions whose row disagrees with their events: `outbox.actions.reconstruction`, which
# reads the actions table above this package, is handed in by the caller.
MismatchFinder = Callable[[Session], Iterator[ActionMismatch]]


@dataclass
class AuditReport:
    events: int = 0
    chain_break: ChainBreak | None = None
    checkpoint_source: str | None = None
    latest_checkpoint: Checkpoint | None = None
    checkpoints_read: int = 0
    uncheckpointed: int = 0
    # Committed events the sealer has not chained yet: not verified, not a break.
    unsealed: int = 0
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    action_mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.chain_break is None and not self.failures and not self.action_mismatches


def load_checkpoint_log(path: Path, public_keys: dict[str, Ed25519PublicKey]) -> CheckpointLog | None:
    """The checkpoint file at `path`, checked by itself; None when there is no such file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        log = CheckpointLog(str(path))
        log.failures.append(f"{path} is not UTF-8 text: the checkpoint file was damaged or replaced")
        return log
    return read_checkpoint_log(str(path), text, public_keys)


def verify_audit(
    session: Session,
    checkpoints: CheckpointLog | None,
    *,
    source: str,
    now: datetime,
    tolerance_seconds: float | None,
    find_action_mismatches: MismatchFinder,
) -> AuditReport:
    """Verify everything. `tolerance_seconds` None: events newer than the checkpoints never fail
    (a witness copy is older than the database by nature)."""
    report = AuditReport(checkpoint_source=source)
    by_position = _take_checkpoints(report, checkpoints)
    first_uncovered_at, rewritten = _walk_chain(session, report, by_position)
    _report_lost_events(report, checkpoints, rewritten)
    _report_uncheckpointed(report, first_uncovered_at, source=source, now=now, tolerance_seconds=tolerance_seconds)
    _report_unsealed(session, report, now=now, tolerance_seconds=tolerance_seconds)
    if tolerance_seconds is not None:
        _report_missing_tail(session, report, source)
    _report_action_mismatches(session, report, find_action_mismatches)
    return report


def _take_checkpoints(report: AuditReport, checkpoints: CheckpointLog | None) -> dict[int, list[Checkpoint]]:
    """Copy what the checkpoint log says about itself into the report; the checkpoints by the
    number of events each covers."""
    by_position: dict[int, list[Checkpoint]] = {}
    if checkpoints is not None:
        report.failures.extend(checkpoints.failures)
        report.notes.extend(checkpoints.notes)
        report.checkpoints_read = len(checkpoints.checkpoints)
        report.latest_checkpoint = checkpoints.latest
        for checkpoint in checkpoints.checkpoints:
            by_position.setdefault(checkpoint.event_count, []).append(checkpoint)
    return by_position


def _walk_chain(
    session: Session, report: AuditReport, by_position: dict[int, list[Checkpoint]]
) -> tuple[datetime | None, list[str]]:
    """One pass over the events: count them, find the first chain break, and compare each
    checkpointed position with its event. Returns when the first event no checkpoint covers was
    written, and what every checkpoint that no longer matches its event says."""
    latest = report.latest_checkpoint
    first_uncovered_at: datetime | None = None
    rewritten: list[str] = []
    expected_prev = GENESIS_HASH
    for position, audit_event in enumerate(iter_events(session), start=1):
        assert audit_event.id is not None
        report.events = position
        if report.chain_break is None:
            report.chain_break = broken_link(audit_event, expected_prev)
        expected_prev = audit_event.hash or ""
        for checkpoint in by_position.get(position, ()):
            if checkpoint.last_event_id != audit_event.id or checkpoint.last_hash != audit_event.hash:
                rewritten.append(
                    f"{checkpoint.describe()}; but event #{position} in the database is id {audit_event.id} "
                    f"hash {audit_event.hash}: the chain was rewritten from there on (events forged, "
                    "replaced or re-chained)"
                )
        if first_uncovered_at is None and position == (latest.event_count if latest else 0) + 1:
            first_uncovered_at = audit_event.created_at
    return first_uncovered_at, rewritten


def _report_lost_events(report: AuditReport, checkpoints: CheckpointLog | None, rewritten: list[str]) -> None:
    """Checkpoints covering events the database no longer has, then those whose event changed."""
    missing = [c for c in (checkpoints.checkpoints if checkpoints else []) if c.event_count > report.events]
    if missing:
        worst = max(missing, key=lambda c: (c.event_count, c.seq))
        everything = " (every event was deleted)" if report.events == 0 else ""
        report.failures.append(
            f"{worst.describe()}; the database has {report.events}{everything}: "
            + (
                f"event {worst.event_count} is missing"
                if worst.event_count == report.events + 1
                else f"events {report.events + 1}..{worst.event_count} are missing"
            )
        )
        if len(missing) > 1:
            report.notes.append(f"{len(missing)} checkpoints cover events that are gone")
    report.failures.extend(rewritten[:1])
    if len(rewritten) > 1:
        report.notes.append(f"{len(rewritten)} checkpoints no longer match the event at their position")


def _report_uncheckpointed(
    report: AuditReport,
    first_uncovered_at: datetime | None,
    *,
    source: str,
    now: datetime,
    tolerance_seconds: float | None,
) -> None:
    """Events newer than the latest checkpoint: a note, or a failure once the oldest is past the tolerance."""
    latest = report.latest_checkpoint
    covered = latest.event_count if latest else 0
    report.uncheckpointed = max(report.events - covered, 0)
    if report.uncheckpointed and first_uncovered_at is not None:
        age = (now - first_uncovered_at).total_seconds()
        what = f"{report.uncheckpointed} events, the oldest from {format_time(first_uncovered_at)} ({age:.0f} s ago)"
        if tolerance_seconds is not None and age > tolerance_seconds:
            report.failures.append(
                f"not checkpointed: {what}, more than the {tolerance_seconds:.0f} s tolerance: is the checkpointer "
                f"running and writing to {source}?"
            )
        else:
            limit = f"; tolerance {tolerance_seconds:.0f} s" if tolerance_seconds is not None else ""
            report.notes.append(f"not yet checkpointed: {what}{limit}")


_UNSEALED = select(func.count(), func.min(AuditEvent.created_at)).where(col(AuditEvent.seq).is_(None))


def _report_unsealed(session: Session, report: AuditReport, *, now: datetime, tolerance_seconds: float | None) -> None:
    """Committed events not chained yet: a note, or a failure once the oldest is past the tolerance."""
    count, oldest = session.exec(_UNSEALED).one()
    report.unsealed = int(count)
    if not report.unsealed or oldest is None:
        return
    age = (now - oldest).total_seconds()
    what = f"{report.unsealed} events, the oldest from {format_time(oldest)} ({age:.0f} s ago)"
    if tolerance_seconds is not None and age > tolerance_seconds:
        report.failures.append(
            f"not sealed: {what}, more than the {tolerance_seconds:.0f} s tolerance: is the checkpointer running?"
        )
    else:
        report.notes.append(f"not yet sealed (not verified): {what}")


def _report_missing_tail(session: Session, report: AuditReport, source: str) -> None:
    """A note when the database records a newer checkpoint than `source` holds."""
    latest = report.latest_checkpoint
    recorded = session.exec(select(func.max(AuditCheckpoint.seq))).one()
    if recorded is not None and (latest is None or recorded > latest.seq):
        report.notes.append(
            f"the database records checkpoint #{recorded} as written, but {source} "
            + (f"ends at #{latest.seq}" if latest else "holds none")
            + ": its tail is not here (written to another process's sink, or the file was cut)"
        )


def _report_action_mismatches(session: Session, report: AuditReport, find: MismatchFinder) -> None:
    """Actions whose row disagrees with their events, the first MAX_MISMATCHES_SHOWN of them."""
    for count, mismatch in enumerate(find(session)):
        if count < MAX_MISMATCHES_SHOWN:
            report.action_mismatches.append(f"action {mismatch.action_id} {mismatch.problem}")
        else:
            report.notes.append("more actions disagree with their events than are shown")
            break
