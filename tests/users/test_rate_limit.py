"""Failed sign-ins are limited per address and per client over 15 minutes, in the database, so
that every replica refuses the same attempts (Settings.console_login_attempts, default 5)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlmodel import select

from outbox.runtime import Runtime
from outbox.sqltypes import utcnow
from outbox.users.errors import InvalidCredentials, TooManySignInAttempts
from outbox.users.models import LoginAttempt
from outbox.users.service import session_user, sign_in
from tests.support.dispatchers import RecordingDispatcher
from tests.users.conftest import PASSWORD, add_person, audit_events

WRONG = "definitely not the password"


def _fail(runtime: Runtime, email: str, client_ip: str, times: int = 1) -> None:
    for _ in range(times):
        with pytest.raises(InvalidCredentials):
            sign_in(runtime, email, WRONG, client_ip)


def test_the_sixth_attempt_is_refused_even_with_the_right_password(runtime: Runtime) -> None:
    assert runtime.settings.console_login_attempts == 5
    add_person(runtime, "ada@example.com")
    _fail(runtime, "ada@example.com", "192.0.2.7", times=5)

    with pytest.raises(TooManySignInAttempts) as refused:
        sign_in(runtime, "ada@example.com", PASSWORD, "192.0.2.7")

    assert refused.value.retry_after is not None
    assert 840 < refused.value.retry_after <= 900
    assert "5 within 15 minutes" in refused.value.detail
    assert "even with the right password" in refused.value.detail
    assert f"Wait {refused.value.retry_after} seconds" in (refused.value.hint or "")


def test_the_limit_per_address_holds_from_every_client(runtime: Runtime) -> None:
    add_person(runtime, "ada@example.com")
    for number in range(5):
        _fail(runtime, "ada@example.com", f"198.51.100.{number}")

    with pytest.raises(TooManySignInAttempts):
        sign_in(runtime, "ada@example.com", PASSWORD, "203.0.113.9")


def test_the_limit_per_client_holds_across_addresses(runtime: Runtime) -> None:
    add_person(runtime, "ada@example.com")
    for number in range(5):
        _fail(runtime, f"guess{number}@example.com", "192.0.2.66")

    with pytest.raises(TooManySignInAttempts):
        sign_in(runtime, "ada@example.com", PASSWORD, "192.0.2.66")
    assert sign_in(runtime, "ada@example.com", PASSWORD, "192.0.2.67").user.email == "ada@example.com"


def test_a_success_forgives_its_own_address_but_not_the_clients_other_failures(runtime: Runtime) -> None:
    add_person(runtime, "ada@example.com")
    add_person(runtime, "bob@example.com")
    _fail(runtime, "bob@example.com", "192.0.2.7", times=3)
    _fail(runtime, "ada@example.com", "192.0.2.7")

    sign_in(runtime, "ada@example.com", PASSWORD, "192.0.2.7")  # forgives ada's failure, not bob's
    _fail(runtime, "carol@example.com", "192.0.2.7", times=2)  # bob's 3 and carol's 2: five from this client

    with pytest.raises(TooManySignInAttempts):
        sign_in(runtime, "ada@example.com", PASSWORD, "192.0.2.7")
    # Ada's own count was reset: from another client she signs in at once.
    assert sign_in(runtime, "ada@example.com", PASSWORD, "198.51.100.1").user.email == "ada@example.com"


def test_four_failures_then_a_success_leave_room_for_mistakes_again(runtime: Runtime) -> None:
    add_person(runtime, "ada@example.com")
    _fail(runtime, "ada@example.com", "192.0.2.7", times=4)
    sign_in(runtime, "ada@example.com", PASSWORD, "198.51.100.1")

    for number in range(4):
        _fail(runtime, "ada@example.com", f"203.0.113.{number}")

    assert sign_in(runtime, "ada@example.com", PASSWORD, "198.51.100.1").user.email == "ada@example.com"


def test_failures_older_than_the_window_no_longer_count(runtime: Runtime) -> None:
    add_person(runtime, "ada@example.com")
    _fail(runtime, "ada@example.com", "192.0.2.7", times=5)
    with runtime.db.session() as session:
        session.execute(update(LoginAttempt).values(created_at=utcnow() - timedelta(minutes=15, seconds=1)))

    signed_in = sign_in(runtime, "ada@example.com", PASSWORD, "192.0.2.7")

    assert session_user(runtime, signed_in.session_token) is not None


def test_retry_after_counts_from_the_oldest_failure_that_must_age_out(runtime: Runtime) -> None:
    add_person(runtime, "ada@example.com")
    _fail(runtime, "ada@example.com", "192.0.2.7", times=5)
    with runtime.db.session() as session:
        session.execute(update(LoginAttempt).values(created_at=utcnow() - timedelta(minutes=10)))

    with pytest.raises(TooManySignInAttempts) as refused:
        sign_in(runtime, "ada@example.com", PASSWORD, "192.0.2.7")

    assert refused.value.retry_after is not None
    assert 240 < refused.value.retry_after <= 300


def test_replicas_count_the_same_attempts(make_runtime: Callable[..., Runtime]) -> None:
    replica_a = make_runtime(RecordingDispatcher())
    replica_b = make_runtime(RecordingDispatcher())
    add_person(replica_a, "ada@example.com")
    _fail(replica_a, "ada@example.com", "192.0.2.7", times=3)
    _fail(replica_b, "ada@example.com", "192.0.2.8", times=2)

    with pytest.raises(TooManySignInAttempts):
        sign_in(replica_a, "ada@example.com", PASSWORD, "192.0.2.9")
    with pytest.raises(TooManySignInAttempts):
        sign_in(replica_b, "ada@example.com", PASSWORD, "192.0.2.9")


def test_a_configured_limit_applies(make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime(RecordingDispatcher(), console_login_attempts=2)
    add_person(runtime, "ada@example.com")
    _fail(runtime, "ada@example.com", "192.0.2.7", times=2)

    with pytest.raises(TooManySignInAttempts, match="2 within 15 minutes"):
        sign_in(runtime, "ada@example.com", PASSWORD, "192.0.2.7")


def test_refusals_are_audited_and_do_not_extend_the_lockout(runtime: Runtime) -> None:
    add_person(runtime, "ada@example.com")
    _fail(runtime, "ada@example.com", "192.0.2.7", times=5)
    for _ in range(3):
        with pytest.raises(TooManySignInAttempts):
            sign_in(runtime, "ada@example.com", PASSWORD, "192.0.2.7")

    reasons = [e["data"]["reason"] for e in audit_events(runtime, "console.sign_in_failed")]
    assert reasons == ["invalid_credentials"] * 5 + ["rate_limited"] * 3
    with runtime.db.read_session() as session:
        assert len(session.exec(select(LoginAttempt)).all()) == 5


def test_parallel_guesses_cannot_all_slip_under_the_limit(make_runtime: Callable[..., Runtime]) -> None:
    # Two replicas, five guesses each at once: exactly five are checked, the rest refused.
    replicas = [make_runtime(RecordingDispatcher()), make_runtime(RecordingDispatcher())]
    add_person(replicas[0], "ada@example.com")
    start = threading.Barrier(10)

    def guess(number: int) -> str:
        start.wait()
        try:
            sign_in(replicas[number % 2], "ada@example.com", WRONG, f"198.51.100.{number}")
        except (InvalidCredentials, TooManySignInAttempts) as refused:
            return type(refused).__name__
        return "signed in"

    with ThreadPoolExecutor(max_workers=10) as pool:
        outcomes = list(pool.map(guess, range(10)))

    assert sorted(outcomes) == ["InvalidCredentials"] * 5 + ["TooManySignInAttempts"] * 5
