"""Password sign-in, sessions, sign-out and CSRF tokens (outbox/users/service.py)."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from sqlalchemy import text, update
from sqlmodel import col

from outbox.runtime import Runtime
from outbox.sqltypes import utcnow
from outbox.users.errors import InvalidCredentials, UserDisabled
from outbox.users.models import ConsoleSession, Role
from outbox.users.service import check_csrf, disable_user, session_user, sign_in, sign_out
from tests.users.conftest import PASSWORD, add_person, audit_events


def test_sign_in_opens_a_session_the_cookie_token_finds(runtime: Runtime) -> None:
    add_person(runtime, "ada@example.com", role=Role.OPERATOR)

    signed_in = sign_in(runtime, "USER:Ada@Example.com", PASSWORD, "192.0.2.7")

    user = session_user(runtime, signed_in.session_token)
    assert user == signed_in.user
    assert (user.email, user.identity, user.role, user.is_operator, user.via) == (
        "ada@example.com",
        "user:ada@example.com",
        Role.OPERATOR,
        True,
        "password",
    )
    minutes = runtime.settings.console_session_minutes
    assert utcnow() + timedelta(minutes=minutes - 1) < user.expires_at <= utcnow() + timedelta(minutes=minutes)


def test_only_the_tokens_sha256_is_stored(runtime: Runtime) -> None:
    add_person(runtime, "ada@example.com")

    signed_in = sign_in(runtime, "ada@example.com", PASSWORD, "192.0.2.7")

    with runtime.db.read_session() as session:
        rows = [tuple(row) for row in session.connection().execute(text("SELECT * FROM console_sessions"))]
    assert len(rows) == 1
    assert hashlib.sha256(signed_in.session_token.encode()).hexdigest() in rows[0]
    assert all(signed_in.session_token not in str(value) for value in rows[0])
    assert len(signed_in.session_token) >= 43  # 32 random bytes, URL-safe base64


def test_each_sign_in_gets_its_own_session_and_csrf_token(runtime: Runtime) -> None:
    add_person(runtime, "ada@example.com")

    first = sign_in(runtime, "ada@example.com", PASSWORD, "192.0.2.7")
    second = sign_in(runtime, "ada@example.com", PASSWORD, "192.0.2.7")

    assert first.session_token != second.session_token
    assert first.csrf_token != second.csrf_token
    assert session_user(runtime, first.session_token) == first.user
    assert session_user(runtime, second.session_token) == second.user


def test_wrong_password_unknown_user_and_user_without_password_get_the_same_answer(runtime: Runtime) -> None:
    add_person(runtime, "ada@example.com")
    add_person(runtime, "proxy-only@example.com", password=None)

    answers = []
    for email, password in (
        ("ada@example.com", "not the password at all"),
        ("nobody@example.com", PASSWORD),
        ("proxy-only@example.com", PASSWORD),
        ("not an address", PASSWORD),
    ):
        with pytest.raises(InvalidCredentials) as refused:
            sign_in(runtime, email, password, "192.0.2.7")
        answers.append((refused.value.detail, refused.value.hint))

    assert len(set(answers)) == 1


def test_a_disabled_user_is_refused_even_with_the_right_password(runtime: Runtime) -> None:
    add_person(runtime, "ada@example.com")
    disable_user(runtime.db, "ada@example.com", actor="test")

    with pytest.raises(UserDisabled, match="disabled"):
        sign_in(runtime, "ada@example.com", PASSWORD, "192.0.2.7")
    # A wrong password does not learn that the account exists.
    with pytest.raises(InvalidCredentials):
        sign_in(runtime, "ada@example.com", "not the password at all", "192.0.2.7")


def test_an_expired_session_signs_nobody_in(runtime: Runtime) -> None:
    add_person(runtime, "ada@example.com")
    signed_in = sign_in(runtime, "ada@example.com", PASSWORD, "192.0.2.7")

    with runtime.db.session() as session:
        session.execute(
            update(ConsoleSession)
            .where(col(ConsoleSession.id) == signed_in.user.session_id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )

    assert session_user(runtime, signed_in.session_token) is None


def test_disabling_a_user_ends_their_sessions(runtime: Runtime) -> None:
    add_person(runtime, "ada@example.com")
    signed_in = sign_in(runtime, "ada@example.com", PASSWORD, "192.0.2.7")

    disable_user(runtime.db, "ada@example.com", actor="test")

    assert session_user(runtime, signed_in.session_token) is None


def test_unknown_and_malformed_tokens_find_no_session(runtime: Runtime) -> None:
    add_person(runtime, "ada@example.com")
    signed_in = sign_in(runtime, "ada@example.com", PASSWORD, "192.0.2.7")

    for token in (None, "", "x", signed_in.session_token + "x", signed_in.csrf_token, "é" * 300, "\udcff"):
        assert session_user(runtime, token) is None, token


def test_sign_out_ends_the_session_once(runtime: Runtime) -> None:
    add_person(runtime, "ada@example.com")
    signed_in = sign_in(runtime, "ada@example.com", PASSWORD, "192.0.2.7")
    other = sign_in(runtime, "ada@example.com", PASSWORD, "192.0.2.8")

    assert sign_out(runtime, signed_in.session_token) is True

    assert session_user(runtime, signed_in.session_token) is None
    assert sign_out(runtime, signed_in.session_token) is False
    assert sign_out(runtime, None) is False
    assert session_user(runtime, other.session_token) == other.user  # the other browser stays in


def test_csrf_tokens_are_compared_with_the_sessions_own(runtime: Runtime) -> None:
    add_person(runtime, "ada@example.com")
    first = sign_in(runtime, "ada@example.com", PASSWORD, "192.0.2.7")
    second = sign_in(runtime, "ada@example.com", PASSWORD, "192.0.2.7")
    user = session_user(runtime, first.session_token)
    assert user is not None

    assert check_csrf(user, first.csrf_token) is True
    assert check_csrf(user, second.csrf_token) is False
    assert check_csrf(user, first.csrf_token[:-1]) is False
    assert check_csrf(user, "") is False
    assert check_csrf(user, None) is False
    assert check_csrf(user, "ü" + first.csrf_token) is False


def test_sign_in_and_out_are_audited_without_the_password(runtime: Runtime) -> None:
    add_person(runtime, "ada@example.com")
    with pytest.raises(InvalidCredentials):
        sign_in(runtime, "ada@example.com", "a wrong guess of a password", "192.0.2.7")
    signed_in = sign_in(runtime, "ada@example.com", PASSWORD, "192.0.2.7")
    sign_out(runtime, signed_in.session_token)

    events = audit_events(runtime, "console.")

    assert [(e["event_type"], e["actor"]) for e in events] == [
        ("console.sign_in_failed", "user:ada@example.com"),
        ("console.signed_in", "user:ada@example.com"),
        ("console.signed_out", "user:ada@example.com"),
    ]
    assert events[0]["data"] == {
        "email": "ada@example.com",
        "client_ip": "192.0.2.7",
        "via": "password",
        "reason": "invalid_credentials",
    }
    assert events[1]["data"]["session_id"] == signed_in.user.session_id == events[2]["data"]["session_id"]
    assert events[1]["data"]["via"] == "password"
    for event in events:
        for secret in (PASSWORD, "a wrong guess", signed_in.session_token, signed_in.csrf_token):
            assert secret not in event["raw"]


def test_an_unparseable_address_is_audited_as_anonymous(runtime: Runtime) -> None:
    with pytest.raises(InvalidCredentials):
        sign_in(runtime, "Robert'); DROP TABLE users", PASSWORD, "192.0.2.7")

    (event,) = audit_events(runtime, "console.")
    assert event["actor"] == "anonymous"
    assert event["data"]["reason"] == "invalid_credentials"
