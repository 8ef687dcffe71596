"""Concurrency slots as leases: at most `limit` holders of a key at once, on both backends.

A slot is one row per running holder; a holder that crashes frees its slot when its lease
expires. Racers use their own `Database` (own engine, own connections), as workers in separate
processes do, so only the database can keep the limit.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from sqlmodel import col, select, update

from outbox.budgets.models import ConcurrencySlot
from outbox.budgets.service import acquire_slot, release_slot
from outbox.config import Settings
from outbox.db import Database, insert_or_ignore
from outbox.sqltypes import utcnow

TTL = timedelta(minutes=5)


def acquire(db: Database, key: str, limit: int, holder: str, ttl: timedelta = TTL) -> bool:
    with db.session() as session:
        return acquire_slot(session, key, limit, holder, ttl)


def release(db: Database, key: str, holder: str) -> None:
    with db.session() as session:
        release_slot(session, key, holder)


def rows(db: Database, key: str) -> list[tuple[int, str | None]]:
    with db.session() as session:
        found = session.exec(select(ConcurrencySlot).where(col(ConcurrencySlot.key) == key)).all()
        return sorted((row.slot, row.holder) for row in found)


def test_limit_holders_get_a_slot_and_the_next_is_refused(settings: Settings) -> None:
    with Database(settings) as db:
        assert [acquire(db, "k", 3, f"h{n}") for n in range(4)] == [True, True, True, False]
        assert rows(db, "k") == [(0, "h0"), (1, "h1"), (2, "h2")]


def test_a_slot_is_a_row_per_holder_not_a_row_per_limit(settings: Settings) -> None:
    with Database(settings) as db:
        assert acquire(db, "k", 1000, "only")
        assert rows(db, "k") == [(0, "only")]


def test_a_release_frees_the_slot_and_deletes_the_lease(settings: Settings) -> None:
    with Database(settings) as db:
        assert acquire(db, "k", 1, "first")
        assert not acquire(db, "k", 1, "second")
        release(db, "k", "first")
        assert rows(db, "k") == []
        assert acquire(db, "k", 1, "second")


def test_the_holder_of_a_lease_renews_it_instead_of_taking_a_second_slot(settings: Settings) -> None:
    with Database(settings) as db:
        assert acquire(db, "k", 2, "same")
        assert acquire(db, "k", 2, "same")
        assert rows(db, "k") == [(0, "same")]
        assert acquire(db, "k", 2, "other")


def test_releasing_without_a_lease_changes_nothing(settings: Settings) -> None:
    with Database(settings) as db:
        assert acquire(db, "k", 1, "holder")
        release(db, "k", "stranger")
        release(db, "other-key", "holder")
        assert rows(db, "k") == [(0, "holder")]


def test_keys_are_limited_separately(settings: Settings) -> None:
    with Database(settings) as db:
        assert acquire(db, "http:concurrent:a", 1, "x")
        assert acquire(db, "http:concurrent:b", 1, "x")
        assert not acquire(db, "http:concurrent:a", 1, "y")


def test_an_expired_lease_frees_its_slot_and_is_cleaned(settings: Settings) -> None:
    with Database(settings) as db:
        assert acquire(db, "k", 1, "crashed")
        assert not acquire(db, "k", 1, "waiting")
        with db.session() as session:  # the holder died; its lease runs out
            session.execute(
                update(ConcurrencySlot)
                .where(col(ConcurrencySlot.holder) == "crashed")
                .values(expires_at=utcnow() - timedelta(seconds=1))
            )

        assert acquire(db, "k", 1, "waiting")
        assert rows(db, "k") == [(0, "waiting")]


def test_free_rows_of_the_pre_inserted_layout_do_not_count_and_held_ones_do(settings: Settings) -> None:
    """Rows written by the version that pre-inserted `limit` rows per key: a free row (no holder)
    is no lease, a held one is."""
    with Database(settings) as db:
        with db.session() as session:
            old: list[dict[str, object]] = [
                {"key": "k", "slot": n, "holder": None, "expires_at": None} for n in range(4)
            ]
            old[1] |= {"holder": "old-worker", "expires_at": utcnow() + TTL}
            insert_or_ignore(session, ConcurrencySlot, old)

        assert [acquire(db, "k", 2, f"h{n}") for n in range(2)] == [True, False]
        assert rows(db, "k") == [(0, "h0"), (1, "old-worker")]


def test_a_holder_racing_an_undecided_lease_still_gets_a_free_slot(settings: Settings) -> None:
    """Both want a slot of two; the second asks while the first's transaction is still open. It
    waits for the first to decide (not picking the same free slot and losing it), then takes the
    other slot."""
    second: list[bool] = []
    with Database(settings) as first_db, Database(settings) as second_db:
        with first_db.session() as session:
            assert acquire_slot(session, "k", 2, "first", TTL)
            waiter = threading.Thread(target=lambda: second.append(acquire(second_db, "k", 2, "second")))
            waiter.start()
            time.sleep(0.3)  # the second is now waiting on the first's transaction
        waiter.join()
        assert second == [True]
        assert rows(first_db, "k") == [(0, "first"), (1, "second")]


def test_racing_holders_never_exceed_the_limit_and_all_get_their_turn(settings: Settings) -> None:
    limit, racers = 3, 50
    lock = threading.Lock()
    holding: set[str] = set()
    most_at_once = 0
    served: list[str] = []
    errors: list[BaseException] = []

    def racer(name: str) -> None:
        nonlocal most_at_once
        try:
            with Database(settings) as db:
                deadline = time.monotonic() + 120
                while not acquire(db, "race", limit, name):
                    assert time.monotonic() < deadline, f"{name} never got a slot"
                    time.sleep(0.005)
                with lock:  # counted only while the database says it holds a lease
                    holding.add(name)
                    most_at_once = max(most_at_once, len(holding))
                time.sleep(0.01)
                with lock:
                    holding.discard(name)
                    served.append(name)
                release(db, "race", name)
        except BaseException as exc:  # collected: a failing racer is what this test looks for
            errors.append(exc)

    threads = [threading.Thread(target=racer, args=(f"racer-{n}",)) for n in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert most_at_once <= limit
    assert sorted(served) == sorted(f"racer-{n}" for n in range(racers))
    with Database(settings) as db:
        assert rows(db, "race") == []
