"""What the users service hands to the console and the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel

from outbox.users.models import Role


@dataclass(frozen=True, slots=True)
class ConsoleUser:
    """The person behind a valid console session."""

    user_id: str
    # The canonical address, `ada@example.com`.
    email: str
    role: Role
    session_id: str
    # Compare a submitted form's token with `check_csrf`, never with `==`.
    csrf_token: str
    expires_at: datetime
    via: str  # password | proxy

    @property
    def identity(self) -> str:
        """`user:ada@example.com`: the identity policy, approvals and audit know this person by."""
        return f"user:{self.email}"

    @property
    def is_operator(self) -> bool:
        return self.role is Role.OPERATOR


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A new session: set `session_token` as the cookie (HttpOnly, SameSite=Lax, Secure outside
    loopback, Max-Age until `user.expires_at`); it is never stored or shown again."""

    session_token: str
    csrf_token: str
    user: ConsoleUser


class UserOut(BaseModel):
    id: str
    email: str
    identity: str
    role: Role
    disabled: bool
    has_password: bool
    created_at: datetime
    updated_at: datetime
