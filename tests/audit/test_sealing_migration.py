"""Migration 0006 numbers the events chained before it (`seq` = position in id order), on SQLite
and PostgreSQL: the stored hashes and the checkpoints signed before the upgrade still verify, and
the checkpointer continues their chain."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from alembic.script import ScriptDirectory
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import create_engine, text

from outbox.actions.reconstruction import find_action_mismatches
from outbox.audit.checkpointer import Checkpointer, FileSink
from outbox.audit.checkpoints import GENESIS_DIGEST, Checkpoint, sign_checkpoint
from outbox.audit.models import AuditCheckpoint
from outbox.audit.service import GENESIS_HASH, link_hash, record_event, verify_chain
from outbox.audit.signing import CheckpointSigner
from outbox.audit.verification import AuditReport, load_checkpoint_log, verify_audit
from outbox.config import Settings
from outbox.db import Database
from outbox.migrations import alembic_config, upgrade
from outbox.sqltypes import UTCDateTime, utcnow

REVISION = "0006"
# The table as the revision before this one had it: no `seq`, links NOT NULL.
_OLD_EVENTS = sa.table(
    "audit_events",
    sa.column("id", sa.BigInteger),
    sa.column("action_id", sa.String),
    sa.column("event_type", sa.String),
    sa.column("actor", sa.String),
    sa.column("from_status", sa.String),
    sa.column("to_status", sa.String),
    sa.column("data_json", sa.Text),
    sa.column("created_at", UTCDateTime),
    sa.column("prev_hash", sa.String),
    sa.column("hash", sa.String),
)
# Ids may have gaps (a rolled-back PostgreSQL transaction draws one too).
OLD_IDS = [1, 2, 4, 7, 8]


def _old_chain() -> list[dict[str, object]]:
    """Events as the previous revision sealed them at commit: chained in id order."""
    rows: list[dict[str, object]] = []
    prev = GENESIS_HASH
    start = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    for position, event_id in enumerate(OLD_IDS):
        fields: dict[str, object] = {
            "action_id": None,
            "event_type": "old.event",
            "actor": "tëst",
            "from_status": None,
            "to_status": None,
            "data_json": f'{{"n":{position}}}',
            "created_at": start + timedelta(seconds=position, microseconds=position * 1001),
        }
        digest = link_hash(prev, **fields)  # type: ignore[arg-type]
        rows.append({"id": event_id, **fields, "prev_hash": prev, "hash": digest})
        prev = digest
    return rows


def _old_checkpoint(signer: CheckpointSigner, last: dict[str, object]) -> Checkpoint:
    return Checkpoint(
        seq=1,
        event_count=len(OLD_IDS),
        last_event_id=int(str(last["id"])),
        last_hash=str(last["hash"]),
        at=utcnow(),
        prev=GENESIS_DIGEST,
        key_id=signer.key_id,
    )


def _write_before_upgrade(settings: Settings, signer: CheckpointSigner, sink: FileSink) -> None:
    """The previous revision's events and its signed checkpoint of them (file and bookkeeping row)."""
    rows = _old_chain()
    checkpoint = _old_checkpoint(signer, rows[-1])
    signed = sign_checkpoint(signer, checkpoint)
    sink.write(signed)
    engine = create_engine(settings.database_url)
    with engine.begin() as connection:
        connection.execute(sa.insert(_OLD_EVENTS), rows)
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT setval('audit_events_id_seq', 8)"))
        connection.execute(
            sa.insert(AuditCheckpoint.__table__),  # type: ignore[attr-defined]
            {
                "seq": 1,
                "created_at": checkpoint.at,
                "event_count": checkpoint.event_count,
                "last_event_id": checkpoint.last_event_id,
                "last_hash": checkpoint.last_hash,
                "digest": checkpoint.digest,
                "line": signed.line(),
            },
        )
    engine.dispose()


def _verify(db: Database, signer: CheckpointSigner, sink: FileSink) -> AuditReport:
    log = load_checkpoint_log(sink.path, {signer.key_id: signer.public_key})
    with db.read_session() as session:
        return verify_audit(
            session,
            log,
            source=str(sink.path),
            now=utcnow(),
            tolerance_seconds=None,
            find_action_mismatches=find_action_mismatches,
        )


def test_events_chained_before_the_upgrade_get_their_positions_and_still_verify(
    empty_database: str, tmp_path: Path
) -> None:
    settings = Settings(database_url=empty_database, data_dir=tmp_path / "data")
    before = ScriptDirectory.from_config(alembic_config(settings)).get_revision(REVISION).down_revision
    assert isinstance(before, str)
    upgrade(settings, before)
    signer = CheckpointSigner(Ed25519PrivateKey.generate())
    sink = FileSink(tmp_path / "checkpoints.jsonl")
    _write_before_upgrade(settings, signer, sink)

    upgrade(settings)

    with Database(settings) as db:
        with db.read_session() as session:
            positions = session.execute(text("SELECT id, seq FROM audit_events ORDER BY id")).all()
            assert [tuple(row) for row in positions] == [(event_id, n) for n, event_id in enumerate(OLD_IDS, 1)]
            assert verify_chain(session) == (5, None)
        old = _verify(db, signer, sink)
        assert old.ok, old.failures
        assert (old.events, old.latest_checkpoint and old.latest_checkpoint.event_count) == (5, 5)

        # New events are sealed after the old ones, and the checkpoint chain continues.
        with db.session() as session:
            record_event(session, event_type="new.event", actor="test")
        written = Checkpointer(db, signer, [sink]).checkpoint_once()
        assert written is not None
        assert (written.signed.checkpoint.seq, written.signed.checkpoint.event_count) == (2, 6)
        assert written.signed.checkpoint.last_event_id > OLD_IDS[-1]
        new = _verify(db, signer, sink)
        assert new.ok, new.failures
        assert new.events == 6
