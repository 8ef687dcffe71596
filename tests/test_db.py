"""`insert_or_ignore`: rows with new keys are inserted, the others skipped, on both backends."""

from __future__ import annotations

import threading

from sqlmodel import col, select

from outbox.budgets.models import ConcurrencySlot
from outbox.config import Settings
from outbox.db import Database, insert_or_ignore


def slots(db: Database, key: str) -> list[int]:
    with db.session() as session:
        return sorted(r.slot for r in session.exec(select(ConcurrencySlot).where(col(ConcurrencySlot.key) == key)))


def test_new_rows_are_inserted_and_counted(settings: Settings) -> None:
    with Database(settings) as db:
        with db.session() as session:
            assert insert_or_ignore(session, ConcurrencySlot, [{"key": "k", "slot": n} for n in range(3)]) == 3
        assert slots(db, "k") == [0, 1, 2]


def test_rows_whose_key_exists_are_skipped_not_failed(settings: Settings) -> None:
    with Database(settings) as db:
        with db.session() as session:
            insert_or_ignore(session, ConcurrencySlot, [{"key": "k", "slot": 0}])
        with db.session() as session:
            # A mix of existing and new keys, and one key twice in the same statement.
            rows = [{"key": "k", "slot": 0}, {"key": "k", "slot": 1}, {"key": "k", "slot": 1}]
            assert insert_or_ignore(session, ConcurrencySlot, rows) == 1
        with db.session() as session:
            assert insert_or_ignore(session, ConcurrencySlot, [{"key": "k", "slot": 0}]) == 0
        assert slots(db, "k") == [0, 1]


def test_no_rows_is_no_statement(settings: Settings) -> None:
    with Database(settings) as db, db.session() as session:
        assert insert_or_ignore(session, ConcurrencySlot, []) == 0


def test_concurrent_writers_of_the_same_rows_all_succeed_and_each_row_is_inserted_once(settings: Settings) -> None:
    inserted: list[int] = []
    errors: list[BaseException] = []
    with Database(settings) as db:

        def writer() -> None:
            try:
                with db.session() as session:
                    inserted.append(
                        insert_or_ignore(session, ConcurrencySlot, [{"key": "race", "slot": n} for n in range(20)])
                    )
            except BaseException as exc:  # collected: a failing writer is the bug this test looks for
                errors.append(exc)

        threads = [threading.Thread(target=writer) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert sum(inserted) == 20
        assert slots(db, "race") == list(range(20))
