"""Every SQL statement of console users, sessions and sign-in attempts. Callers own the
transaction and the rules (who may sign in, when a session ends, how many attempts count)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, bindparam, delete, func, update
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from outbox.sqltypes import utcnow
from outbox.users.models import ConsoleSession, LoginAttempt, User


def insert(session: Session, row: User | ConsoleSession | LoginAttempt) -> None:
    """Insert the row now (flushed), so that what follows sees it (and its id)."""
    session.add(row)
    session.flush()


def find_user(session: Session, email: str) -> User | None:
    return session.exec(select(User).where(col(User.email) == email)).first()


def all_users(session: Session) -> Sequence[User]:
    return session.exec(select(User).order_by(col(User.email))).all()


def serialize_attempts(session: Session, keys: Sequence[str]) -> None:
    """On PostgreSQL, hold a transaction-scoped advisory lock per key (the address, the client),
    so that concurrent attempts for the same key count one after another and parallel guesses
    cannot all pass the limit. SQLite has one writer at a time already."""
    if session.get_bind().dialect.name != "postgresql":
        return
    for key in sorted(set(keys)):  # one order everywhere: two attempts never wait on each other in a cycle
        session.execute(sa_select(func.pg_advisory_xact_lock(func.hashtextextended(f"console-login:{key}", 0))))


def failures_since(session: Session, *, column: str, value: str, since: datetime) -> list[datetime]:
    """When the attempts counted against this address or client were made, oldest first."""
    field = col(LoginAttempt.email) if column == "email" else col(LoginAttempt.client_ip)
    query = (
        select(LoginAttempt.created_at)
        .where(field == value, col(LoginAttempt.created_at) >= since)
        .order_by(col(LoginAttempt.created_at))
    )
    return list(session.exec(query).all())


def forget_failures(session: Session, *, email: str) -> None:
    """Delete the attempts counted against `email`."""
    session.execute(delete(LoginAttempt).where(col(LoginAttempt.email) == email))


def replace_password_hash(session: Session, user_id: str, *, old: str, new: str) -> None:
    """Swap a user's hash for an upgraded one, unless it was changed meanwhile (a new password
    set while the old one was being verified must not be overwritten)."""
    session.execute(
        update(User)
        .where(col(User.id) == user_id, col(User.password_hash) == old)
        .values(password_hash=new, updated_at=utcnow())
    )


def purge(session: Session, *, attempts_before: datetime, sessions_expired_by: datetime) -> None:
    """Drop attempts outside the window and sessions past their expiry (both indexed)."""
    session.execute(delete(LoginAttempt).where(col(LoginAttempt.created_at) < attempts_before))
    session.execute(delete(ConsoleSession).where(col(ConsoleSession.expires_at) < sessions_expired_by))


def delete_sessions_of(session: Session, user_id: str) -> int:
    result: Any = session.execute(delete(ConsoleSession).where(col(ConsoleSession.user_id) == user_id))
    return int(result.rowcount or 0)


def session_by_token_hash(session: Session, token_hash: str) -> tuple[ConsoleSession, User] | None:
    query = (
        select(ConsoleSession, User)
        .join(User, col(User.id) == col(ConsoleSession.user_id))
        .where(col(ConsoleSession.token_hash) == token_hash)
    )
    found = session.exec(query).first()
    return None if found is None else (found[0], found[1])


def delete_session(session: Session, session_id: str) -> None:
    session.execute(delete(ConsoleSession).where(col(ConsoleSession.id) == session_id))


_SESSIONS = ConsoleSession.__table__  # type: ignore[attr-defined]
_USERS = User.__table__  # type: ignore[attr-defined]


_SESSION_USER = (
    sa_select(
        _SESSIONS.c.id,
        _SESSIONS.c.csrf_token,
        _SESSIONS.c.via,
        _SESSIONS.c.expires_at,
        _USERS.c.id.label("user_id"),
        _USERS.c.email,
        _USERS.c.role,
        _USERS.c.disabled,
    )
    .select_from(_SESSIONS.join(_USERS, _USERS.c.id == _SESSIONS.c.user_id))
    .where(_SESSIONS.c.token_hash == bindparam("token_hash"))
)


def session_user_row(connection: Connection, token_hash: str) -> RowMapping | None:
    """The session and its user, in one statement on a connection without a write lock (this
    runs on every console request)."""
    return connection.execute(_SESSION_USER, {"token_hash": token_hash}).mappings().first()
