"""Password hashes: argon2id (argon2-cffi's RFC 9106 low-memory profile defaults), upgraded on
the next good sign-in when the parameters change."""

from __future__ import annotations

import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from outbox.users.errors import WeakPassword

MIN_PASSWORD_CHARS = 12
# Hashing cost grows with the input; no passphrase is this long.
MAX_PASSWORD_CHARS = 1024

_HASHER = PasswordHasher()


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def password_problem(password: str) -> str | None:
    """Why `password` may not be set, or None."""
    if not password:
        return "The password is empty."
    if len(password) < MIN_PASSWORD_CHARS:
        return f"The password has {len(password)} characters; at least {MIN_PASSWORD_CHARS} are needed."
    if len(password) > MAX_PASSWORD_CHARS:
        return f"The password is longer than {MAX_PASSWORD_CHARS} characters."
    if password != password.strip():
        return "The password starts or ends with whitespace (often a pasted newline); remove it."
    return None


def checked_password_hash(password: str) -> str:
    """The hash of an acceptable password, or WeakPassword saying what is wrong."""
    problem = password_problem(password)
    if problem is not None:
        raise WeakPassword(problem)
    return hash_password(password)


@functools.cache
def _dummy_hash() -> str:
    return _HASHER.hash("not-a-password: verified when no real hash exists")


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Whether `password` matches `stored_hash`. Without a stored hash (unknown user, proxy-only
    user) a dummy hash is verified instead, so the answer takes as long either way and timing
    does not tell which addresses have an account."""
    candidate = password[:MAX_PASSWORD_CHARS]
    try:
        matched = _HASHER.verify(stored_hash or _dummy_hash(), candidate)
    except (VerificationError, InvalidHashError):
        return False
    return matched and stored_hash is not None and len(password) <= MAX_PASSWORD_CHARS


def needs_rehash(stored_hash: str) -> bool:
    return _HASHER.check_needs_rehash(stored_hash)
