"""What the users service refuses, as domain errors (`outbox/errors.py`): the console turns them
into a page or problem+json, the CLI prints detail and hint.

Password sign-in failures share one message whatever went wrong (no such user, wrong password,
no password set), so the answer never tells whether an address has an account.
"""

from __future__ import annotations

from outbox.errors import Conflict, DomainError, Invalid, NotFound, Unavailable

__all__ = [
    "ConsoleMisconfigured",
    "InvalidCredentials",
    "InvalidEmail",
    "ProxyIdentityRefused",
    "SignInRefused",
    "TooManySignInAttempts",
    "UserDisabled",
    "UserExists",
    "UserNotFound",
    "WeakPassword",
]


class SignInRefused(DomainError):
    """Base of every refused sign-in (password or proxy); `reason` is a stable slug for the audit."""

    reason: str = "refused"


class InvalidCredentials(SignInRefused, Invalid):
    type = "console-invalid-credentials"
    title = "Wrong e-mail address or password"
    reason = "invalid_credentials"

    def __init__(self) -> None:
        super().__init__(
            "The e-mail address or the password is wrong.",
            hint="Check both and try again; an operator can set a new password with `outbox users passwd EMAIL`.",
        )


class UserDisabled(SignInRefused, Invalid):
    """Said only to someone who gave the right password (or a trusted proxy's identity)."""

    type = "console-user-disabled"
    title = "Account disabled"
    reason = "disabled"

    def __init__(self, email: str) -> None:
        super().__init__(
            f"The console account of {email} is disabled.",
            hint="Ask an operator to enable it again (`outbox users add EMAIL` enables a disabled account).",
        )


class TooManySignInAttempts(SignInRefused, Unavailable):
    """Answer it with 429 Too Many Requests and Retry-After: `retry_after` seconds."""

    type = "console-too-many-sign-in-attempts"
    title = "Too many failed sign-in attempts"
    reason = "rate_limited"

    def __init__(self, retry_after: int, *, limit: int, window_minutes: int) -> None:
        minutes = max(1, -(-retry_after // 60))
        super().__init__(
            f"Too many failed sign-in attempts ({limit} within {window_minutes} minutes) for this account "
            f"or from this address; sign-in is refused for about {minutes} more minute(s), even with the "
            "right password.",
            hint=f"Wait {retry_after} seconds and try again, or ask an operator to check the account.",
            retry_after=retry_after,
        )


class ProxyIdentityRefused(SignInRefused, Invalid):
    """The identity header was not trusted: wrong peer, no header, unknown or disabled user."""

    type = "console-proxy-identity-refused"
    title = "Proxy identity refused"

    def __init__(self, detail: str, *, reason: str, hint: str) -> None:
        super().__init__(detail, hint=hint)
        self.reason = reason


class ConsoleMisconfigured(Unavailable):
    type = "console-misconfigured"
    title = "Console sign-in misconfigured"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, hint="Fix OUTBOX_CONSOLE_TRUSTED_PROXIES (IP addresses or CIDR networks, JSON list).")


class InvalidEmail(Invalid):
    type = "console-invalid-email"
    title = "Not an e-mail address"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, hint="Give the person's bare e-mail address, like ada@example.com.")


class UserNotFound(NotFound):
    type = "console-user-not-found"
    title = "No such console user"

    def __init__(self, email: str) -> None:
        super().__init__(
            f"No console user {email}.", hint="`outbox users list` shows them; `outbox users add` adds one."
        )


class UserExists(Conflict):
    type = "console-user-exists"
    title = "Console user exists"

    def __init__(self, email: str) -> None:
        super().__init__(
            f"{email} is already a console user with that role.",
            hint="Use `outbox users passwd EMAIL` to set a password, `outbox users add EMAIL --role ROLE` to "
            "change the role, or `outbox users disable EMAIL`.",
        )


class WeakPassword(Invalid):
    type = "console-weak-password"
    title = "Password refused"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, hint="Use at least 12 characters; a passphrase of several words is easiest.")
