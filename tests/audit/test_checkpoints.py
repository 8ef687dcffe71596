"""Signed checkpoints make the audit log truncation-evident: a missing tail, a re-chained tail, an
altered checkpoint and an edited action row each fail verification, naming what is wrong."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import delete, update
from sqlmodel import col, select
from typer.testing import CliRunner, Result

from outbox.actions.models import Action
from outbox.audit.checkpointer import Checkpointer, checkpoint_file
from outbox.audit.checkpoints import Checkpoint, parse_checkpoint, sign_checkpoint
from outbox.audit.models import AuditCheckpoint, AuditEvent
from outbox.audit.service import event_hash
from outbox.audit.signing import CheckpointSigner, load_signer
from outbox.cli.main import app
from outbox.config import get_settings
from outbox.db import Database
from outbox.logs import configure_logging
from outbox.runtime import Runtime
from outbox.sqltypes import utcnow
from tests.support.agents import make_agent
from tests.support.audit import checkpointer, delete_newest, event_ids, make_events, verify
from tests.support.calls import submit_call
from tests.support.http_target import TargetServer


def lines(runtime: Runtime) -> list[dict[str, object]]:
    return [json.loads(line) for line in checkpoint_file(runtime.settings).read_text().splitlines()]


def only_failure(runtime: Runtime, **kwargs: object) -> str:
    report = verify(runtime, **kwargs)  # type: ignore[arg-type]
    assert not report.ok
    assert len(report.failures) == 1, report.failures
    return report.failures[0]


# --- what an honest log looks like -------------------------------------------------------------


def test_a_checkpointed_log_verifies(runtime: Runtime) -> None:
    make_events(runtime, 12)
    written = checkpointer(runtime).checkpoint_once()
    assert written is not None
    report = verify(runtime)
    assert report.ok, report.failures
    assert report.events == 12
    assert report.latest_checkpoint == written.signed.checkpoint
    assert report.latest_checkpoint.event_count == 12
    assert report.latest_checkpoint.last_event_id == event_ids(runtime)[-1]
    assert report.uncheckpointed == 0


def test_newer_events_are_reported_as_not_yet_checkpointed_and_fail_only_past_the_tolerance(runtime: Runtime) -> None:
    make_events(runtime, 5)
    checkpointer(runtime).checkpoint_once()
    make_events(runtime, 3)
    fresh = verify(runtime)
    assert fresh.ok
    assert fresh.uncheckpointed == 3
    assert any(note.startswith("not yet checkpointed: 3 events") for note in fresh.notes)

    later = verify(runtime, now=utcnow() + timedelta(seconds=61))
    assert not later.ok
    assert "not checkpointed: 3 events" in later.failures[0]
    assert "60 s tolerance" in later.failures[0]


def test_a_log_never_checkpointed_fails_once_its_events_are_older_than_the_tolerance(runtime: Runtime) -> None:
    make_events(runtime, 4)
    assert verify(runtime).ok
    stale = verify(runtime, now=utcnow() + timedelta(minutes=5))
    assert stale.failures and "not checkpointed: 4 events" in stale.failures[0]


# --- truncation ---------------------------------------------------------------------------------


def test_deleting_the_newest_event_is_named(runtime: Runtime) -> None:
    make_events(runtime, 30)
    checkpointer(runtime).checkpoint_once()
    last = event_ids(runtime)[-1]
    delete_newest(runtime, 1)
    failure = only_failure(runtime)
    assert f"covers 30 events up to id {last} hash " in failure
    assert "the database has 29: event 30 is missing" in failure


def test_deleting_the_newest_500_events_names_the_missing_range(runtime: Runtime) -> None:
    make_events(runtime, 1234)
    checkpointer(runtime).checkpoint_once()
    delete_newest(runtime, 500)
    failure = only_failure(runtime)
    assert "checkpoint #1 at " in failure
    assert "covers 1234 events" in failure
    assert "the database has 734: events 735..1234 are missing" in failure


def test_deleting_every_event_is_named(runtime: Runtime) -> None:
    make_events(runtime, 7)
    writer = checkpointer(runtime)
    writer.checkpoint_once()
    with runtime.db.session() as session:
        session.execute(delete(AuditEvent))
    assert writer.checkpoint_once() is None
    failure = only_failure(runtime)
    assert "the database has 0 (every event was deleted): events 1..7 are missing" in failure


def test_the_latest_of_several_checkpoints_names_the_whole_loss(runtime: Runtime) -> None:
    writer = checkpointer(runtime)
    for _ in range(3):
        make_events(runtime, 10)
        writer.checkpoint_once()
    delete_newest(runtime, 15)
    report = verify(runtime)
    assert "checkpoint #3" in report.failures[0]
    assert "events 16..30 are missing" in report.failures[0]
    assert "2 checkpoints cover events that are gone" in report.notes


# --- forged and re-chained events -----------------------------------------------------------------


def test_a_forged_event_appended_after_truncation_does_not_hide_it(runtime: Runtime) -> None:
    make_events(runtime, 40)
    checkpointer(runtime).checkpoint_once()
    delete_newest(runtime, 10)
    # The forger appends through the real sealer: the hash is recomputed and links correctly.
    make_events(runtime, 1, kind="forged.event")
    report = verify(runtime)
    assert report.chain_break is None  # the chain alone says nothing is wrong
    assert "the database has 31: events 32..40 are missing" in report.failures[0]


def test_a_truncated_tail_refilled_with_as_many_forged_events_is_named_as_rewritten(runtime: Runtime) -> None:
    make_events(runtime, 40)
    checkpointer(runtime).checkpoint_once()
    delete_newest(runtime, 10)
    make_events(runtime, 10, kind="forged.event")
    report = verify(runtime)
    assert report.chain_break is None
    assert len(report.failures) == 1
    assert "covers 40 events" in report.failures[0]
    assert "but event #40 in the database is id" in report.failures[0]
    assert "the chain was rewritten" in report.failures[0]


def test_an_edit_with_every_later_hash_recomputed_is_named_at_the_checkpoint(runtime: Runtime) -> None:
    make_events(runtime, 20)
    checkpointer(runtime).checkpoint_once()
    ids = event_ids(runtime)
    # A forger who knows the hash construction edits event 5 and re-chains everything after it.
    with runtime.db.session() as session:
        rows = session.exec(select(AuditEvent).where(col(AuditEvent.id) >= ids[4]).order_by(col(AuditEvent.id))).all()
        prev = session.exec(select(AuditEvent.hash).where(col(AuditEvent.id) == ids[3])).one()
        for row in rows:
            row.prev_hash = prev
            if row.id == ids[4]:
                row.actor = "someone-else"
            row.hash = event_hash(row)
            prev = row.hash
            session.add(row)
    report = verify(runtime)
    assert report.chain_break is None
    assert "but event #20 in the database is id" in report.failures[0]


@pytest.mark.parametrize("forged", [1, 3, 8])
def test_the_checkpointer_refuses_to_sign_a_head_built_on_deleted_events(
    runtime: Runtime, capsys: pytest.CaptureFixture[str], forged: int
) -> None:
    configure_logging(runtime.settings)
    writer = checkpointer(runtime)
    make_events(runtime, 10)
    writer.checkpoint_once()
    delete_newest(runtime, 3)
    make_events(runtime, forged, kind="forged.event")
    assert writer.checkpoint_once() is None
    assert writer.checkpoint_once() is None
    assert len(lines(runtime)) == 1
    assert capsys.readouterr().err.count("audit.tampered") == 1  # said once, not every turn
    failure = verify(runtime).failures[0]
    assert ("events 9..10 are missing" if forged == 1 else "the chain was rewritten") in failure


def test_the_checkpointer_refuses_to_sign_events_that_do_not_link(runtime: Runtime) -> None:
    writer = checkpointer(runtime)
    make_events(runtime, 4)
    writer.checkpoint_once()
    make_events(runtime, 4)
    with runtime.db.session() as session:
        session.execute(update(AuditEvent).where(col(AuditEvent.id) == event_ids(runtime)[-2]).values(actor="edited"))
    assert writer.checkpoint_once() is None
    assert [line["checkpoint"]["event_count"] for line in lines(runtime)] == [4]  # type: ignore[index]


# --- the checkpoint file itself ----------------------------------------------------------------


def _rewrite_line(runtime: Runtime, index: int, change: object) -> None:
    path = checkpoint_file(runtime.settings)
    text = path.read_text().splitlines()
    document = json.loads(text[index])
    change(document)  # type: ignore[operator]
    text[index] = json.dumps(document)
    path.write_text("\n".join(text) + "\n")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d["checkpoint"].update(event_count=d["checkpoint"]["event_count"] - 5), "signature"),
        (lambda d: d["checkpoint"].update(last_hash="0" * 64), "signature"),
        (lambda d: d["checkpoint"].update(at="2020-01-01T00:00:00.000000Z"), "signature"),
        (lambda d: d.update(signature=d["signature"][:-4] + "AAAA"), "signature"),
        (lambda d: d.update(signature="not base64!"), "signature"),
        (lambda d: d["checkpoint"].pop("prev"), "not a checkpoint record"),
        (lambda d: d["checkpoint"].update(event_count="12"), "not a checkpoint record"),
        (lambda d: d["checkpoint"].update(key_id="some-other-key"), "not a known verification key"),
    ],
    ids=["count", "hash", "time", "signature-bits", "signature-garbage", "field-removed", "type", "key-id"],
)
def test_an_altered_checkpoint_line_fails(runtime: Runtime, change: object, expected: str) -> None:
    make_events(runtime, 12)
    writer = checkpointer(runtime)
    writer.checkpoint_once()
    make_events(runtime, 3)
    writer.checkpoint_once()
    _rewrite_line(runtime, 1, change)
    report = verify(runtime)
    assert not report.ok
    assert any(expected in f for f in report.failures), report.failures
    assert any("line 2" in f for f in report.failures)


def test_a_damaged_line_fails(runtime: Runtime) -> None:
    make_events(runtime, 3)
    checkpointer(runtime).checkpoint_once()
    with checkpoint_file(runtime.settings).open("a") as handle:
        handle.write('{"checkpoint": {"seq": 2, "event_co\n')
    assert "line 2 is not JSON" in only_failure(runtime)


def test_a_checkpoint_signed_by_another_key_is_refused(runtime: Runtime) -> None:
    make_events(runtime, 3)
    checkpointer(runtime).checkpoint_once()
    previous = parse_checkpoint(lines(runtime)[0]).checkpoint
    intruder = CheckpointSigner(Ed25519PrivateKey.generate())
    forged = Checkpoint(
        seq=2,
        event_count=previous.event_count,
        last_event_id=previous.last_event_id,
        last_hash=previous.last_hash,
        at=utcnow(),
        prev=previous.digest,
        key_id=intruder.key_id,
    )
    with checkpoint_file(runtime.settings).open("a") as handle:
        handle.write(sign_checkpoint(intruder, forged).line() + "\n")
    assert "not a known verification key" in only_failure(runtime)


def test_a_validly_signed_checkpoint_that_does_not_chain_is_a_broken_history(runtime: Runtime) -> None:
    """The key signed two histories (a database restored from a backup, say): the checkpoints'
    own chain shows the fork even though every line is signed."""
    make_events(runtime, 3)
    writer = checkpointer(runtime)
    writer.checkpoint_once()
    make_events(runtime, 2)
    writer.checkpoint_once()
    second = parse_checkpoint(lines(runtime)[1]).checkpoint
    fork = Checkpoint(
        seq=3,
        event_count=second.event_count,
        last_event_id=second.last_event_id,
        last_hash=second.last_hash,
        at=utcnow(),
        prev="ab" * 32,
        key_id=second.key_id,
    )
    with checkpoint_file(runtime.settings).open("a") as handle:
        handle.write(sign_checkpoint(writer.signer, fork).line() + "\n")
    assert "checkpoint chain is BROKEN" in only_failure(runtime)


def test_lines_out_of_order_fail(runtime: Runtime) -> None:
    writer = checkpointer(runtime)
    for _ in range(3):
        make_events(runtime, 2)
        writer.checkpoint_once()
    path = checkpoint_file(runtime.settings)
    first, second, third = path.read_text().splitlines()
    path.write_text("\n".join([first, third, second]) + "\n")
    assert any("goes backwards" in f for f in verify(runtime).failures)


def test_a_witness_copy_detects_truncation_after_the_local_file_was_truncated_too(
    runtime: Runtime, tmp_path: Path
) -> None:
    writer = checkpointer(runtime)
    make_events(runtime, 50)
    writer.checkpoint_once()
    make_events(runtime, 10)
    writer.checkpoint_once()
    witness = tmp_path / "witness.jsonl"
    shutil.copy(checkpoint_file(runtime.settings), witness)

    # A thorough intruder: the newest 25 events, the local checkpoint file's tail and the
    # database's record of it, all gone.
    delete_newest(runtime, 25)
    path = checkpoint_file(runtime.settings)
    path.write_text(path.read_text().splitlines()[0] + "\n")
    with runtime.db.session() as session:
        session.execute(delete(AuditCheckpoint))

    local = verify(runtime)
    assert "the database has 35: events 36..50 are missing" in local.failures[0]  # checkpoint #1 still covers 50
    path.unlink()
    assert verify(runtime).ok  # nothing local is left to tell: this is what the witness is for

    witnessed = verify(runtime, witness=witness)
    assert not witnessed.ok
    assert "checkpoint #2" in witnessed.failures[0]
    assert "the database has 35: events 36..60 are missing" in witnessed.failures[0]


def test_the_log_sink_lines_serve_as_a_witness(
    runtime: Runtime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(runtime.settings.model_copy(update={"log_json": True, "log_level": "INFO"}))
    try:
        make_events(runtime, 9)
        checkpointer(runtime).checkpoint_once()
        captured = capsys.readouterr().err
    finally:
        configure_logging(runtime.settings)
    log_lines = [line for line in captured.splitlines() if '"audit.checkpoint"' in line]
    assert len(log_lines) == 1
    witness = tmp_path / "from-logs.jsonl"
    # Other log lines around it are skipped.
    witness.write_text(
        '{"event": "http.request", "level": "info"}\n'
        " -------------- celery@host v5 (a banner line)\n"
        "  . outbox.audit_checkpoint\n" + log_lines[0] + "\n"
    )
    report = verify(runtime, witness=witness)
    assert report.ok, report.failures
    assert report.checkpoints_read == 1
    assert "2 lines of" in report.notes[0]
    delete_newest(runtime, 2)
    checkpoint_file(runtime.settings).unlink()
    assert "events 8..9 are missing" in verify(runtime, witness=witness).failures[0]


# --- the checkpointer ---------------------------------------------------------------------------


def test_one_checkpoint_per_head(runtime: Runtime) -> None:
    writer = checkpointer(runtime)
    assert writer.checkpoint_once() is None  # an empty chain has no head
    make_events(runtime, 5)
    assert writer.checkpoint_once() is not None
    for _ in range(3):
        assert writer.checkpoint_once() is None
    make_events(runtime, 1)
    assert writer.checkpoint_once() is not None
    assert [line["checkpoint"]["event_count"] for line in lines(runtime)] == [5, 6]  # type: ignore[index]
    assert [line["checkpoint"]["seq"] for line in lines(runtime)] == [1, 2]  # type: ignore[index]


def test_a_backlog_is_covered_in_steps(runtime: Runtime) -> None:
    make_events(runtime, 250)
    writer = checkpointer(runtime, max_events=100)
    steps = []
    while (outcome := writer.checkpoint_once()) is not None:
        steps.append((outcome.signed.checkpoint.event_count, outcome.more))
    assert steps == [(100, True), (200, True), (250, False)]
    assert verify(runtime).ok


def test_concurrent_checkpointers_write_one_chain_without_contradictions(runtime: Runtime) -> None:
    """Four processes' worth of checkpointers (each its own engine and connections) race while
    events are being committed: every checkpoint is numbered once, chains to the one before, and
    no head is checkpointed twice."""
    stop = threading.Event()
    errors: list[BaseException] = []
    databases = [Database(runtime.settings) for _ in range(4)]

    def race(db: Database) -> None:
        writer = Checkpointer.from_settings(runtime.settings, db)
        try:
            while not stop.is_set():
                writer.checkpoint_once()
                # A breath between turns, as a real checkpointer's interval gives: four threads
                # retaking SQLite's write lock back to back would starve the event writer past
                # busy_timeout, which tests SQLite's fairness, not the checkpointers.
                stop.wait(0.002)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=race, args=(db,)) for db in databases]
    for thread in threads:
        thread.start()
    try:
        for _ in range(40):
            make_events(runtime, 3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        for db in databases:
            db.dispose()
    assert not errors, errors
    checkpointer(runtime).checkpoint_once()  # whatever the race left uncovered

    records = [parse_checkpoint(line).checkpoint for line in lines(runtime)]
    assert [c.seq for c in records] == list(range(1, len(records) + 1))
    heads = [c.last_event_id for c in records]
    assert heads == sorted(set(heads))
    assert records[-1].event_count == 120
    report = verify(runtime)
    assert report.ok, report.failures
    with runtime.db.session() as session:
        assert len(session.exec(select(AuditCheckpoint)).all()) == len(records)


def test_a_failed_sink_writes_nothing_and_the_next_turn_retries(runtime: Runtime) -> None:
    class Refusing:
        def write(self, signed: object) -> None:
            raise OSError("disk full")

    writer = checkpointer(runtime)
    writer.sinks.append(Refusing())
    make_events(runtime, 3)
    with pytest.raises(OSError, match="disk full"):
        writer.checkpoint_once()
    with runtime.db.session() as session:
        assert session.exec(select(AuditCheckpoint)).all() == []
    writer.sinks.pop()
    written = writer.checkpoint_once()
    assert written is not None and written.signed.checkpoint.seq == 1
    # The file sink had written before the failing one: the retry carries the same number and prev.
    assert [line["checkpoint"]["seq"] for line in lines(runtime)] == [1, 1]  # type: ignore[index]
    assert verify(runtime).ok


def test_the_signing_key_is_private_and_reused(runtime: Runtime) -> None:
    first = load_signer(runtime.settings, create=True)
    second = load_signer(runtime.settings, create=True)
    assert first is not None and second is not None
    assert first.key_id == second.key_id
    key_file = runtime.settings.data_dir / "audit-signing.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    make_events(runtime, 1)
    checkpointer(runtime).checkpoint_once()
    assert checkpoint_file(runtime.settings).stat().st_mode & 0o777 == 0o600


# --- the command line ---------------------------------------------------------------------------


@pytest.fixture
def cli(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Result]]:
    monkeypatch.setenv("OUTBOX_DATABASE_URL", runtime.settings.database_url)
    monkeypatch.setenv("OUTBOX_DATA_DIR", str(runtime.settings.data_dir))
    monkeypatch.setenv("OUTBOX_POLICY_DIR", str(runtime.settings.policy_dir))
    get_settings.cache_clear()

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(app, list(args))

    yield invoke
    get_settings.cache_clear()


def test_cli_verify_passes_then_names_the_missing_events(runtime: Runtime, cli: Callable[..., Result]) -> None:
    make_events(runtime, 1234)
    checkpointer(runtime).checkpoint_once()
    ok = cli("audit", "verify")
    assert ok.exit_code == 0, ok.output
    assert "audit chain intact: 1234 events verified" in ok.output
    assert "latest checkpoint #1 at " in ok.output
    assert "audit log verified" in ok.output

    delete_newest(runtime, 500)
    broken = cli("audit", "verify")
    assert broken.exit_code == 1
    assert "audit chain intact: 734 events verified" in broken.output  # the chain alone would pass
    assert "FAILED: checkpoint #1 at " in broken.output
    assert "covers 1234 events up to id " in broken.output
    assert "the database has 734: events 735..1234 are missing" in broken.output
    assert "audit log verified" not in broken.output


def test_cli_verify_fails_on_an_edited_action_and_a_tampered_checkpoint(
    runtime: Runtime, cli: Callable[..., Result], target_server: TargetServer
) -> None:
    key = make_agent(runtime.db, "cli-bot", ["http-writer"])
    action_id = submit_call(runtime, key, "http.request", {"method": "POST", "url": f"{target_server.base_url}/x"})
    checkpointer(runtime).checkpoint_once()
    assert cli("audit", "verify").exit_code == 0

    with runtime.db.session() as session:
        session.execute(update(Action).where(col(Action.id) == action_id).values(status="succeeded"))
    edited = cli("audit", "verify")
    assert edited.exit_code == 1
    assert f"FAILED: action {action_id} status is 'succeeded' in actions but 'queued' by its events" in edited.output

    with runtime.db.session() as session:
        session.execute(update(Action).where(col(Action.id) == action_id).values(status="queued"))
    _rewrite_line(runtime, 0, lambda d: d["checkpoint"].update(event_count=1))
    tampered = cli("audit", "verify")
    assert tampered.exit_code == 1
    assert "signature of checkpoint #1 is INVALID" in tampered.output


def test_cli_verifies_a_witness_with_an_exported_public_key(
    runtime: Runtime, cli: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_events(runtime, 20)
    checkpointer(runtime).checkpoint_once()
    exported = cli("audit", "public-key")
    assert exported.exit_code == 0
    pem = exported.stdout.strip()
    assert pem.startswith("-----BEGIN PUBLIC KEY-----")
    public_key = tmp_path / "outbox-audit.pub"
    public_key.write_text(pem + "\n")
    witness = tmp_path / "witness.jsonl"
    shutil.copy(checkpoint_file(runtime.settings), witness)
    jwk = json.loads(cli("audit", "public-key", "--jwk").stdout)
    assert jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519"
    assert jwk["kid"] == lines(runtime)[0]["checkpoint"]["key_id"]  # type: ignore[index]

    delete_newest(runtime, 20)
    checkpoint_file(runtime.settings).unlink()
    # The verifier holds no private key, only the exported public one.
    monkeypatch.setenv("OUTBOX_DATA_DIR", str(tmp_path / "verifier"))
    get_settings.cache_clear()
    no_key = cli("audit", "verify", "--checkpoint", str(witness))
    assert no_key.exit_code == 1
    assert "not a known verification key (pass its public key with --public-key)" in no_key.output
    result = cli("audit", "verify", "--checkpoint", str(witness), "--public-key", str(public_key))
    assert result.exit_code == 1
    assert "every event was deleted" in result.output
    assert "events 1..20 are missing" in result.output
    missing = cli("audit", "verify", "--checkpoint", str(tmp_path / "nowhere.jsonl"), "--public-key", str(public_key))
    assert missing.exit_code == 1
    assert "no checkpoint file at" in missing.output
