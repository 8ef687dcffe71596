"""The leased-job primitive: one winner per claim, attempts counted, expired leases re-driven,
dead-lettering after the last attempt, and full-jitter backoff. On SQLite and PostgreSQL, for
both tables that use it (actions and deliveries)."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlmodel import Session

from outbox.actions.models import Action
from outbox.agents.service import create_agent
from outbox.config import Settings
from outbox.db import Database
from outbox.deliveries.models import Delivery
from outbox.deliveries.repository import DELIVERY_JOBS
from outbox.execution.leases import ACTION_JOBS
from outbox.jobs import repository as jobs
from outbox.jobs.backoff import RetryPolicy, full_jitter
from outbox.jobs.repository import JobTable
from outbox.sqltypes import new_id, utcnow

LEASE = timedelta(seconds=60)
CONTENDERS = 8


def _new_delivery(db: Database, **overrides: Any) -> str:
    now = utcnow()
    values: dict[str, Any] = {
        "id": new_id("dlv"),
        "kind": "callback",
        "subject_id": "act_test",
        "state": "pending",
        "not_before": now,
        "created_at": now,
        "updated_at": now,
    }
    values.update(overrides)
    with db.session() as session:
        session.add(Delivery(**values))
    return str(values["id"])


def _new_action(db: Database, **overrides: Any) -> str:
    with db.session() as session:
        agent, _key = create_agent(session, f"lease-test-{new_id('a')}", ["tester"], actor="test")
        values: dict[str, Any] = {
            "id": new_id("act"),
            "agent_id": agent.id,
            "tool": "http.request",
            "args": {},
            "idempotency_key": new_id("key"),
            "status": "queued",
            "decision_effect": "allow",
            "policy_version": "test",
            "request": {},
        }
        values.update(overrides)
        session.add(Action(**values))
    return str(values["id"])


# Each table as the primitive sees it: its description, how to add a job, and its state names
# (claimable, held while leased, dead-lettered).
TableCase = tuple[JobTable, Callable[..., str], str, str, str]
TABLES: dict[str, TableCase] = {
    "actions": (ACTION_JOBS, _new_action, "queued", "running", "failed"),
    "deliveries": (DELIVERY_JOBS, _new_delivery, "pending", "pending", "dead"),
}


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = Database(settings)
    yield database
    database.dispose()


@pytest.fixture(params=sorted(TABLES))
def table(request: pytest.FixtureRequest) -> TableCase:
    return TABLES[str(request.param)]


def _claim(
    session: Session,
    jobs_table: JobTable,
    job_id: str,
    claimable: str,
    held: str,
    *,
    now: datetime | None = None,
    owner: str = "w1",
    below_attempts: int | None = None,
) -> jobs.Claim | None:
    return jobs.claim(
        session,
        jobs_table,
        job_id,
        claimable=[claimable],
        running=held if held != claimable else None,
        owner=owner,
        now=now or utcnow(),
        lease=LEASE,
        below_attempts=below_attempts,
    )


def _row(db: Database, jobs_table: JobTable, job_id: str) -> Any:
    with db.session() as session:
        return session.execute(jobs_table.table.select().where(jobs_table.id == job_id)).one()


def test_racing_workers_on_their_own_engines_yield_exactly_one_winner(
    settings: Settings, db: Database, table: TableCase
) -> None:
    jobs_table, new_job, claimable, held, _dead = table
    job_id = new_job(db)
    engines = [Database(settings) for _ in range(CONTENDERS)]
    start = threading.Barrier(CONTENDERS)
    won: list[jobs.Claim] = []
    errors: list[BaseException] = []

    def contend(index: int) -> None:
        try:
            start.wait()
            with engines[index].session() as session:
                claim = _claim(session, jobs_table, job_id, claimable, held, owner=f"worker-{index}")
            if claim is not None:
                won.append(claim)
        except BaseException as exc:  # surfaced below: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(CONTENDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for engine in engines:
        engine.dispose()

    assert errors == []
    assert len(won) == 1
    [claim] = won
    assert claim.attempt == 1
    row = _row(db, jobs_table, job_id)
    assert row.attempts == 1
    assert getattr(row, jobs_table.status.name) == held
    assert getattr(row, jobs_table.lease_until.name) is not None


def test_a_claim_counts_one_attempt_and_settling_lets_the_next_attempt_claim(db: Database, table: TableCase) -> None:
    jobs_table, new_job, claimable, held, _dead = table
    job_id = new_job(db)
    for attempt in (1, 2, 3):
        with db.session() as session:
            claim = _claim(session, jobs_table, job_id, claimable, held)
            assert claim is not None and claim.attempt == attempt
            assert _claim(session, jobs_table, job_id, claimable, held, owner="w2") is None
            assert jobs.settle(session, jobs_table, claim, held=held, now=utcnow(), values=_back(jobs_table, claimable))
    assert _row(db, jobs_table, job_id).attempts == 3


def _back(jobs_table: JobTable, claimable: str) -> dict[str, Any]:
    return {jobs_table.status.name: claimable}


@pytest.mark.parametrize(
    "why",
    ["not due yet", "leased by another worker", "finished", "no such job", "its attempts are used up"],
)
def test_a_job_that_is_not_ready_is_not_claimed(db: Database, table: TableCase, why: str) -> None:
    jobs_table, new_job, claimable, held, dead = table
    now = utcnow()
    job_id = "no-such-job"
    if why == "not due yet":
        job_id = new_job(db, not_before=now + timedelta(seconds=30))
    elif why == "leased by another worker":
        job_id = new_job(db)
        with db.session() as session:
            assert _claim(session, jobs_table, job_id, claimable, held, owner="other") is not None
    elif why == "finished":
        job_id = new_job(db, **{jobs_table.status.name: dead})
    elif why == "its attempts are used up":
        job_id = new_job(db, attempts=3)
    with db.session() as session:
        assert _claim(session, jobs_table, job_id, claimable, held, now=now, below_attempts=3) is None


def test_an_expired_lease_is_re_driven_and_the_old_attempt_can_no_longer_settle(db: Database, table: TableCase) -> None:
    jobs_table, new_job, claimable, held, dead = table
    job_id = new_job(db)
    retries = RetryPolicy(max_attempts=3, base_seconds=1, cap_seconds=10)
    with db.session() as session:
        crashed = _claim(session, jobs_table, job_id, claimable, held, owner="crashed")
    assert crashed is not None

    def values_for(_lease: jobs.ExpiredLease, is_dead: bool) -> dict[str, Any]:
        return {jobs_table.status.name: dead if is_dead else claimable}

    with db.session() as session:
        # While the lease runs, nothing is re-driven.
        assert jobs.expired_leases(session, jobs_table, held=held, now=utcnow(), limit=10) == []
        later = utcnow() + LEASE + timedelta(seconds=1)
        moved = jobs.redrive_expired(
            session,
            jobs_table,
            held=held,
            now=later,
            exhausted=retries.exhausted,
            values_for=values_for,
            limit=10,
        )
        assert [(lease.job_id, lease.attempt, is_dead) for lease, is_dead in moved] == [(job_id, 1, False)]
        # A second sweeper arriving at the same moment finds nothing left to do.
        again = jobs.redrive_expired(
            session, jobs_table, held=held, now=later, exhausted=retries.exhausted, values_for=values_for, limit=10
        )
        assert again == []
        retry = _claim(session, jobs_table, job_id, claimable, held, now=later, owner="healthy")
        assert retry is not None and retry.attempt == 2
        # The crashed worker comes back: its attempt is over, its outcome is not recorded.
        assert not jobs.settle(session, jobs_table, crashed, held=held, now=later, values=_back(jobs_table, claimable))
        assert jobs.settle(session, jobs_table, retry, held=held, now=later, values=_back(jobs_table, claimable))


def test_the_last_attempt_s_expired_lease_dead_letters_the_job_with_the_reason(db: Database) -> None:
    job_id = _new_delivery(db, attempts=2)
    retries = RetryPolicy(max_attempts=3, base_seconds=1, cap_seconds=10)
    reason = "the worker stopped answering; no attempts left"
    with db.session() as session:
        assert _claim(session, DELIVERY_JOBS, job_id, "pending", "pending") is not None
        later = utcnow() + LEASE + timedelta(seconds=1)
        moved = jobs.redrive_expired(
            session,
            DELIVERY_JOBS,
            held="pending",
            now=later,
            exhausted=retries.exhausted,
            values_for=lambda _lease, is_dead: {"state": "dead", "last_error": reason} if is_dead else {},
            limit=10,
        )
        assert [(lease.attempt, is_dead) for lease, is_dead in moved] == [(3, True)]
        assert _claim(session, DELIVERY_JOBS, job_id, "pending", "pending", now=later) is None
    row = _row(db, DELIVERY_JOBS, job_id)
    assert (row.state, row.attempts, row.last_error, row.lease_until) == ("dead", 3, reason, None)


def test_the_dead_letter_decision_counts_attempts() -> None:
    retries = RetryPolicy(max_attempts=3, base_seconds=1, cap_seconds=10)
    assert [retries.exhausted(n) for n in (0, 1, 2, 3, 4)] == [False, False, False, True, True]


# --- full jitter ---------------------------------------------------------------------------


@pytest.mark.parametrize(("base", "cap"), [(0.1, 0.5), (2.0, 600.0), (1.0, 1.0), (0.05, 30.0)])
def test_full_jitter_spreads_each_delay_over_zero_to_the_capped_exponential(base: float, cap: float) -> None:
    rng = random.Random(20151204)
    for exponent in range(12):
        ceiling = min(cap, base * 2**exponent)
        samples = [full_jitter(exponent, base=base, cap=cap, rng=rng) for _ in range(400)]
        assert all(0.0 <= sample <= ceiling for sample in samples)
        assert not all(sample == cap for sample in samples)
        # The whole interval, not its upper half ("equal jitter"): a quarter of the draws fall
        # below a quarter of the ceiling, give or take.
        below_quarter = sum(sample < ceiling / 4 for sample in samples) / len(samples)
        assert 0.15 < below_quarter < 0.35
        assert abs(sum(samples) / len(samples) - ceiling / 2) < ceiling * 0.1


def test_full_jitter_is_deterministic_for_a_seeded_source() -> None:
    first = [full_jitter(n, base=1, cap=60, rng=random.Random(7)) for n in range(8)]
    second = [full_jitter(n, base=1, cap=60, rng=random.Random(7)) for n in range(8)]
    assert first == second


@pytest.mark.parametrize("exponent", [-5, -1, 0, 64, 1_000, 10**9])
def test_full_jitter_stays_within_bounds_for_extreme_exponents(exponent: int) -> None:
    rng = random.Random(1)
    ceiling = 0.5 if exponent <= 0 else 30.0
    for _ in range(200):
        assert 0.0 <= full_jitter(exponent, base=0.5, cap=30.0, rng=rng) <= ceiling


def test_the_first_retry_waits_up_to_the_base_and_each_further_one_up_to_twice_as_long() -> None:
    retries = RetryPolicy(max_attempts=10, base_seconds=2, cap_seconds=20)
    rng = random.Random(3)
    for attempt, ceiling in [(1, 2), (2, 4), (3, 8), (4, 16), (5, 20), (9, 20)]:
        samples = [retries.delay(attempt, rng) for _ in range(300)]
        assert max(samples) <= ceiling
        assert max(samples) > ceiling * 0.9
        assert min(samples) < ceiling * 0.1
