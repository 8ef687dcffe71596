"""Password hashes: argon2id, verified in the same time whether or not a hash exists, upgraded at
the next sign-in when the parameters change."""

from __future__ import annotations

from argon2 import PasswordHasher
from sqlalchemy import update
from sqlmodel import col

from outbox.runtime import Runtime
from outbox.users import repository
from outbox.users.models import User
from outbox.users.passwords import hash_password, needs_rehash, password_problem, verify_password
from outbox.users.service import sign_in
from tests.users.conftest import PASSWORD, add_person


def test_a_hash_verifies_only_its_own_password() -> None:
    stored = hash_password(PASSWORD)

    assert stored.startswith("$argon2id$")
    assert verify_password(stored, PASSWORD)
    assert not verify_password(stored, PASSWORD + " ")
    assert not verify_password(stored, "")
    assert not verify_password("not a hash", PASSWORD)


def test_without_a_hash_nothing_verifies() -> None:
    assert not verify_password(None, PASSWORD)
    assert not verify_password(None, "not-a-password: verified when no real hash exists")


def test_a_password_longer_than_the_limit_never_verifies() -> None:
    long_password = "x" * 1025
    stored = PasswordHasher().hash(long_password)

    assert not verify_password(stored, long_password)


def test_password_rules() -> None:
    assert password_problem("") == "The password is empty."
    assert "at least 12" in (password_problem("x" * 11) or "")
    assert password_problem("x" * 12) is None
    assert "whitespace" in (password_problem(" " + PASSWORD) or "")
    assert "longer than 1024" in (password_problem("x" * 1025) or "")


def _stored_hash(runtime: Runtime, email: str) -> str | None:
    with runtime.db.read_session() as session:
        user = repository.find_user(session, email)
        assert user is not None
        return user.password_hash


def test_a_hash_with_old_parameters_is_upgraded_at_the_next_sign_in(runtime: Runtime) -> None:
    add_person(runtime, "ada@example.com")
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    assert needs_rehash(weak)
    with runtime.db.session() as session:
        session.execute(update(User).where(col(User.email) == "ada@example.com").values(password_hash=weak))

    sign_in(runtime, "ada@example.com", PASSWORD, "192.0.2.7")

    upgraded = _stored_hash(runtime, "ada@example.com")
    assert upgraded is not None
    assert upgraded != weak
    assert not needs_rehash(upgraded)
    assert sign_in(runtime, "ada@example.com", PASSWORD, "192.0.2.7").user.email == "ada@example.com"


def test_a_current_hash_is_left_alone(runtime: Runtime) -> None:
    add_person(runtime, "ada@example.com")
    before = _stored_hash(runtime, "ada@example.com")

    sign_in(runtime, "ada@example.com", PASSWORD, "192.0.2.7")

    assert _stored_hash(runtime, "ada@example.com") == before


def test_an_upgrade_never_overwrites_a_password_set_meanwhile(runtime: Runtime) -> None:
    add_person(runtime, "ada@example.com")
    current = _stored_hash(runtime, "ada@example.com")
    stale = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    with runtime.db.session() as session:
        user = repository.find_user(session, "ada@example.com")
        assert user is not None
        # The hash a sign-in verified (`stale`) is no longer the stored one.
        repository.replace_password_hash(session, user.id, old=stale, new=hash_password(PASSWORD))

    assert _stored_hash(runtime, "ada@example.com") == current
