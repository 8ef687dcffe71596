"""`outbox audit verify` and `export` (the commands themselves are in outbox/cli/main.py): seal
what is pending, so that both cover every committed event, then read."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TextIO

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

from outbox.actions.reconstruction import find_action_mismatches
from outbox.audit.checkpointer import checkpoint_file
from outbox.audit.sealer import seal_all
from outbox.audit.signing import SigningKeyError, key_id, load_signer, parse_public_key
from outbox.audit.verification import load_checkpoint_log, verify_audit
from outbox.config import Settings
from outbox.db import Database
from outbox.recordings.export import export_jsonl
from outbox.sqltypes import utcnow


def seal_before_reading(db: Database) -> None:
    """Chain every event committed so far. A database this process may only read (a replica, a
    read-only role) is read as it is: the report then counts the events not yet sealed."""
    try:
        seal_all(db)
    except DBAPIError as exc:
        reason = str(exc.orig if exc.orig is not None else exc).splitlines()[0]
        typer.echo(f"note: pending audit events could not be sealed ({reason}): only sealed events are read", err=True)


def verify_database(db: Database, settings: Settings, *, checkpoint: Path | None, public_keys: list[Path]) -> int:
    """`outbox audit verify`: seal, then verify; the exit code."""
    seal_before_reading(db)
    with db.read_session() as session:
        return run_verify(session, settings, checkpoint=checkpoint, public_keys=public_keys)


def export_database(db: Database, stream: TextIO, *, since: datetime | None) -> int:
    """`outbox audit export`: seal, then write the chain; how many events were written."""
    seal_before_reading(db)
    with db.read_session() as session:
        return export_jsonl(session, stream, since=since)


def _public_keys(settings: Settings, files: list[Path], problems: list[str]) -> dict[str, Ed25519PublicKey]:
    keys: dict[str, Ed25519PublicKey] = {}
    try:
        signer = load_signer(settings, create=False)
    except SigningKeyError as exc:
        signer = None
        if not files:
            problems.append(f"the configured signing key cannot be used ({exc}); pass --public-key")
    if signer is not None:
        keys[signer.key_id] = signer.public_key
    for path in files:
        try:
            key = parse_public_key(path.read_text(encoding="ascii"))
        except (OSError, UnicodeDecodeError, SigningKeyError) as exc:
            problems.append(f"--public-key {path}: {exc}")
            continue
        keys[key_id(key)] = key
    return keys


def run_verify(session: Session, settings: Settings, *, checkpoint: Path | None, public_keys: list[Path]) -> int:
    """Verify and print the report; the exit code is 1 on any failure."""
    problems: list[str] = []
    keys = _public_keys(settings, public_keys, problems)
    witness = checkpoint is not None
    path = checkpoint if checkpoint is not None else checkpoint_file(settings)
    if witness or "file" in settings.audit_checkpoint_sinks:
        log = load_checkpoint_log(path, keys)
        source = str(path)
        if log is None and witness:
            problems.append(f"no checkpoint file at {path}")
    else:
        log, source = None, "no checkpoint file (the file sink is off: pass --checkpoint)"
    # Read the checkpoints before the events: whatever they cover was committed before.
    report = verify_audit(
        session,
        log,
        source=source,
        now=utcnow(),
        tolerance_seconds=None if witness else settings.audit_checkpoint_tolerance_seconds,
        find_action_mismatches=find_action_mismatches,
    )
    failures = [*problems, *report.failures]

    if report.chain_break is not None:
        typer.echo(f"audit chain BROKEN at event {report.chain_break.event_id}: {report.chain_break.problem}", err=True)
    else:
        typer.echo(f"audit chain intact: {report.events} events verified")
    latest = report.latest_checkpoint
    if latest is not None:
        typer.echo(f"latest {latest.describe()} ({report.checkpoints_read} checkpoints read from {source})")
    elif log is None and not witness:
        typer.echo(f"no checkpoints yet ({source})")
    for note in report.notes:
        typer.echo(note)
    for failure in failures:
        typer.echo(f"FAILED: {failure}", err=True)
    for mismatch in report.action_mismatches:
        typer.echo(f"FAILED: {mismatch}", err=True)
    if report.chain_break is None and not failures and not report.action_mismatches:
        typer.echo("audit log verified: chain, checkpoints and action rows agree")
        return 0
    return 1
