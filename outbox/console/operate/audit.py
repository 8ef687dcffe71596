"""The audit page: the chain's state at a glance, a full verification on request, the export.

A page view reads only what is cheap: the newest checkpoint the database records, the chain's
head and the events not sealed yet. Walking the whole chain (`verify_audit`, what `outbox audit
verify` runs) reads every event, so it runs only when an operator asks for it, and its report is
shown on the page that answers that request.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, TYPE_CHECKING, TextIO, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.exc import DBAPIError

from outbox.actions.reconstruction import find_action_mismatches
from outbox.audit.checkpointer import checkpoint_file
from outbox.audit.models import AuditCheckpoint
from outbox.audit.sealer import seal_all
from outbox.audit.service import unsealed_events
from outbox.audit.signing import SigningKeyError, load_signer
from outbox.audit.verification import AuditReport, load_checkpoint_log, verify_audit
from outbox.console.operate import repository
from outbox.console.operate.repository import ChainHead
from outbox.recordings.export import export_jsonl
from outbox.sqltypes import utcnow

if TYPE_CHECKING:
    from outbox.runtime import Runtime  # annotations only: the app hands the runtime in

# The export is written to a temporary file and streamed from it: memory stays bounded whatever
# the chain's length, and the database session is closed before the first byte is sent.
_SPOOL_BYTES = 1 << 20
CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class ChainStatus:
    checkpoint: AuditCheckpoint | None
    head: ChainHead
    unsealed: int
    sinks: Sequence[str]
    checkpoint_file: str | None

    @property
    def uncheckpointed(self) -> int:
        """Sealed events newer than the newest checkpoint."""
        return max(self.head.sealed - (self.checkpoint.event_count if self.checkpoint else 0), 0)


def chain_status(runtime: Runtime) -> ChainStatus:
    settings = runtime.settings
    with runtime.db.read_session() as session:
        checkpoint = repository.latest_checkpoint(session)
        head = repository.chain_head(session)
        unsealed = unsealed_events(session)
        # Out of the session before it ends: its rollback would expire what the page reads.
        session.expunge_all()
    sinks = list(settings.audit_checkpoint_sinks)
    return ChainStatus(
        checkpoint=checkpoint,
        head=head,
        unsealed=unsealed,
        sinks=sinks,
        checkpoint_file=str(checkpoint_file(settings)) if "file" in sinks else None,
    )


@dataclass
class Verification:
    """A verification's report, with what kept it from reading the checkpoints (if anything)."""

    report: AuditReport
    at: datetime
    problems: list[str] = field(default_factory=list)
    sealed_first: str | None = None

    @property
    def ok(self) -> bool:
        return self.report.ok and not self.problems


def verify_now(runtime: Runtime) -> Verification:
    """What `outbox audit verify` does, against this server's checkpoint file and signing key:
    seal what is pending, then verify the chain, the checkpoints and every action's row."""
    settings = runtime.settings
    sealed_first = _seal(runtime)
    problems: list[str] = []
    keys: dict[str, Ed25519PublicKey] = {}
    try:
        signer = load_signer(settings, create=False)
    except SigningKeyError as exc:
        signer = None
        problems.append(f"the configured signing key cannot be used ({exc}); run `outbox audit verify --public-key`")
    if signer is not None:
        keys[signer.key_id] = signer.public_key
    if "file" in settings.audit_checkpoint_sinks:
        path = checkpoint_file(settings)
        log, source = load_checkpoint_log(path, keys), str(path)
    else:
        log, source = None, "no checkpoint file (the file sink is off: verify against a copy with the CLI)"
    with runtime.db.read_session() as session:
        report = verify_audit(
            session,
            log,
            source=source,
            now=utcnow(),
            tolerance_seconds=settings.audit_checkpoint_tolerance_seconds,
            find_action_mismatches=find_action_mismatches,
        )
    return Verification(report, utcnow(), problems, sealed_first)


def _seal(runtime: Runtime) -> str | None:
    """Chain every committed event first; a database this process may only read is read as it
    is (the report then counts the events not sealed). Returns why sealing failed, if it did."""
    try:
        seal_all(runtime.db)
    except DBAPIError as exc:
        return str(exc.orig if exc.orig is not None else exc).splitlines()[0]
    return None


def export_file(runtime: Runtime, since: datetime | None) -> IO[str]:
    """The chain as JSON Lines (`outbox audit export`), sealed first, in a temporary file
    positioned at its start. The caller closes it."""
    _seal(runtime)
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES, mode="w+", encoding="utf-8")  # noqa: SIM115
    try:
        with runtime.db.read_session() as session:
            export_jsonl(session, cast("TextIO", spool), since=since)
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return spool


def chunks(spool: IO[str]) -> Iterator[bytes]:
    """The file's text as UTF-8 chunks; closes it when done (or when the client goes away)."""
    try:
        while text := spool.read(CHUNK_BYTES):
            yield text.encode("utf-8")
    finally:
        spool.close()
