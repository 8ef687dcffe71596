"""`outbox users add|passwd|list|disable`, run as an operator would, against SQLite and PostgreSQL."""

from __future__ import annotations

import json

from argon2 import PasswordHasher

from outbox.runtime import Runtime
from outbox.users import repository
from outbox.users.service import get_user, session_user, sign_in
from tests.users.conftest import PASSWORD, UsersCli, audit_events


def _stored_hash(runtime: Runtime, email: str) -> str | None:
    with runtime.db.read_session() as session:
        user = repository.find_user(session, email)
        assert user is not None
        return user.password_hash


def test_add_stores_the_canonical_address_as_an_approver(users_cli: UsersCli, runtime: Runtime) -> None:
    result = users_cli("add", "User:Ada@Example.COM")

    assert "user:ada@example.com is a console approver" in result.stdout
    assert "outbox users passwd ada@example.com" in result.stdout
    user = get_user(runtime.db, "ada@example.com")
    assert (user.email, user.role.value, user.disabled, user.has_password) == (
        "ada@example.com",
        "approver",
        False,
        False,
    )


def test_add_with_role_operator(users_cli: UsersCli, runtime: Runtime) -> None:
    users_cli("add", "ops@example.com", "--role", "operator")

    assert get_user(runtime.db, "ops@example.com").role.value == "operator"


def test_adding_an_enabled_user_twice_is_refused(users_cli: UsersCli) -> None:
    users_cli("add", "ada@example.com")

    again = users_cli("add", "ADA@example.com", ok=False)

    assert again.exit_code == 1
    assert "ada@example.com is already a console user with that role" in again.stderr


def test_add_with_another_role_changes_the_role_and_keeps_the_password(users_cli: UsersCli, runtime: Runtime) -> None:
    users_cli("add", "ada@example.com")
    users_cli("passwd", "ada@example.com", input=PASSWORD + "\n")

    assert (
        "user:ada@example.com is a console operator" in users_cli("add", "ada@example.com", "--role", "operator").stdout
    )

    user = get_user(runtime.db, "ada@example.com")
    assert (user.role.value, user.has_password) == ("operator", True)
    (event,) = audit_events(runtime, "user.role_changed")
    assert event["data"]["previous_role"] == "approver"
    assert event["data"]["role"] == "operator"


def test_add_refuses_what_is_not_an_email_address(users_cli: UsersCli, runtime: Runtime) -> None:
    for text in ("slack:U0123ABC", "Ada <ada@example.com>", "user:ada"):
        result = users_cli("add", text, ok=False)
        assert result.exit_code == 1, text
        assert "error:" in result.stderr
    assert users_cli("list", "--json").stdout.strip() == ""


def test_passwd_reads_the_password_from_stdin_and_hashes_it_with_argon2id(
    users_cli: UsersCli, runtime: Runtime
) -> None:
    users_cli("add", "ada@example.com")

    result = users_cli("passwd", "ada@example.com", input=PASSWORD + "\n")

    assert "password set for user:ada@example.com" in result.stdout
    stored = _stored_hash(runtime, "ada@example.com")
    assert stored is not None
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored
    assert PasswordHasher().verify(stored, PASSWORD)
    assert sign_in(runtime, "ada@example.com", PASSWORD, "127.0.0.1").user.email == "ada@example.com"


def test_passwd_refuses_empty_and_short_passwords_and_keeps_the_old_one(users_cli: UsersCli, runtime: Runtime) -> None:
    users_cli("add", "ada@example.com")
    users_cli("passwd", "ada@example.com", input=PASSWORD + "\n")
    before = _stored_hash(runtime, "ada@example.com")

    empty = users_cli("passwd", "ada@example.com", input="\n", ok=False)
    short = users_cli("passwd", "ada@example.com", input="eleven char\n", ok=False)

    assert empty.exit_code == short.exit_code == 1
    assert "The password is empty" in empty.stderr
    assert "11 characters; at least 12" in short.stderr
    assert _stored_hash(runtime, "ada@example.com") == before


def test_passwd_for_an_unknown_user_is_refused(users_cli: UsersCli) -> None:
    result = users_cli("passwd", "nobody@example.com", input=PASSWORD + "\n", ok=False)

    assert result.exit_code == 1
    assert "No console user nobody@example.com" in result.stderr


def test_passwd_ends_the_users_sessions(users_cli: UsersCli, runtime: Runtime) -> None:
    users_cli("add", "ada@example.com")
    users_cli("passwd", "ada@example.com", input=PASSWORD + "\n")
    signed_in = sign_in(runtime, "ada@example.com", PASSWORD, "127.0.0.1")

    users_cli("passwd", "ada@example.com", input="another long passphrase\n")

    assert session_user(runtime, signed_in.session_token) is None


def test_list_shows_every_user_in_text_and_json(users_cli: UsersCli) -> None:
    users_cli("add", "bob@example.com", "--role", "operator")
    users_cli("add", "ada@example.com")
    users_cli("passwd", "ada@example.com", input=PASSWORD + "\n")

    text = users_cli("list").stdout.splitlines()
    lines = [json.loads(line) for line in users_cli("list", "--json").stdout.splitlines()]

    assert text[0].split() == ["EMAIL", "ROLE", "STATE", "PASSWORD", "CREATED"]
    assert text[1].split()[:4] == ["ada@example.com", "approver", "enabled", "password"]
    assert text[2].split()[:5] == ["bob@example.com", "operator", "enabled", "no", "password"]
    assert [(u["identity"], u["role"], u["has_password"]) for u in lines] == [
        ("user:ada@example.com", "approver", True),
        ("user:bob@example.com", "operator", False),
    ]
    assert all("password_hash" not in line for line in lines)


def test_disable_ends_sessions_and_add_enables_again(users_cli: UsersCli, runtime: Runtime) -> None:
    users_cli("add", "ada@example.com")
    users_cli("passwd", "ada@example.com", input=PASSWORD + "\n")
    signed_in = sign_in(runtime, "ada@example.com", PASSWORD, "127.0.0.1")

    assert "user:ada@example.com is disabled" in users_cli("disable", "ada@example.com").stdout

    assert session_user(runtime, signed_in.session_token) is None
    assert get_user(runtime.db, "ada@example.com").disabled
    users_cli("add", "ada@example.com", "--role", "operator")
    user = get_user(runtime.db, "ada@example.com")
    assert (user.disabled, user.role.value, user.has_password) == (False, "operator", True)


def test_disable_of_an_unknown_user_is_refused(users_cli: UsersCli) -> None:
    result = users_cli("disable", "nobody@example.com", ok=False)

    assert result.exit_code == 1
    assert "No console user nobody@example.com" in result.stderr


def test_every_change_is_audited_by_the_cli_without_the_password(users_cli: UsersCli, runtime: Runtime) -> None:
    users_cli("add", "ada@example.com")
    users_cli("passwd", "ada@example.com", input=PASSWORD + "\n")
    users_cli("disable", "ada@example.com")
    users_cli("add", "ada@example.com")

    events = audit_events(runtime, "user.")

    assert [(e["event_type"], e["actor"], e["data"]["email"]) for e in events] == [
        ("user.added", "cli", "ada@example.com"),
        ("user.password_set", "cli", "ada@example.com"),
        ("user.disabled", "cli", "ada@example.com"),
        ("user.enabled", "cli", "ada@example.com"),
    ]
    stored_hash = _stored_hash(runtime, "ada@example.com")
    assert stored_hash is not None
    for event in events:
        assert PASSWORD not in event["raw"]
        assert stored_hash not in event["raw"]
