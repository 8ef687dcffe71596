"""Console users and sign-in: the one place that decides who is signed in to the console.

A user is a person policy already knows as `user:<email>` (canonical form from
`outbox.identities`), so what they may approve is decided by `outbox.approvals.authority` as for
the CLI and Slack; this module only establishes who is at the keyboard.

Sessions are rows: the cookie carries a random token, the table only its SHA-256. Each session
has its own CSRF token. Failed password sign-ins are rows too, counted per address and per
client address over a 15-minute window, so every replica refuses the same attempts. An attempt
is recorded *before* its password is checked (and forgotten when it succeeds), so that parallel
guesses cannot all slip under the limit. Every sign-in, refusal, sign-out and user change is an
audit event written in the same transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

import structlog
from sqlmodel import Session

from outbox.audit.service import record_event
from outbox.identities import InvalidIdentity, PrincipalKind, parse_principal
from outbox.sqltypes import new_id, utcnow
from outbox.users import repository
from outbox.users.errors import (
    ConsoleMisconfigured,
    InvalidCredentials,
    InvalidEmail,
    ProxyIdentityRefused,
    SignInRefused,
    TooManySignInAttempts,
    UserDisabled,
    UserExists,
    UserNotFound,
)
from outbox.users.models import ConsoleSession, LoginAttempt, Role, User
from outbox.users.passwords import checked_password_hash, hash_password, needs_rehash, verify_password
from outbox.users.schemas import ConsoleUser, SignedIn, UserOut

if TYPE_CHECKING:
    from outbox.config import Settings
    from outbox.db import Database

log = structlog.get_logger(__name__)

# The rate-limit window; the limit itself is `Settings.console_login_attempts`.
ATTEMPT_WINDOW = timedelta(minutes=15)
# Who the audit log names for a refused sign-in whose address is not one.
ANONYMOUS = "anonymous"
_CLIENT_IP_CHARS = 64


class UsersRuntime(Protocol):
    """What sign-in needs of `outbox.runtime.Runtime`."""

    @property
    def settings(self) -> Settings: ...

    @property
    def db(self) -> Database: ...


# Identities


def canonical_email(text: str) -> str:
    """The canonical address of `ada@example.com` or `user:Ada@Example.com`, or InvalidEmail."""
    try:
        principal = parse_principal(text)
    except InvalidIdentity as exc:
        raise InvalidEmail(exc.message) from exc
    if principal.kind is not PrincipalKind.EMAIL:
        raise InvalidEmail(f"{text!r} is not an e-mail address; console users are people with an address.")
    return principal.value


def _user_out(user: User) -> UserOut:
    return UserOut(
        id=user.id,
        email=user.email,
        identity=f"user:{user.email}",
        role=Role(user.role),
        disabled=user.disabled,
        has_password=user.password_hash is not None,
        created_at=user.created_at,
        updated_at=user.updated_at,
    )


# Managing users (the CLI)


def add_user(db: Database, email: str, *, role: Role = Role.APPROVER, actor: str) -> UserOut:
    """Add a user; for an existing one, enable it again and give it `role`. UserExists when the
    user is already enabled with that role (nothing to do is worth saying)."""
    address = canonical_email(email)
    with db.session() as session:
        user = repository.find_user(session, address)
        if user is None:
            user = User(id=new_id("usr"), email=address, role=role.value)
            event = "user.added"
        elif user.disabled:
            event = "user.enabled"
        elif user.role != role.value:
            event = "user.role_changed"
        else:
            raise UserExists(address)
        data = {"user_id": user.id, "email": address, "role": role.value}
        if event == "user.role_changed":
            data["previous_role"] = user.role
        user.disabled, user.role, user.updated_at = False, role.value, utcnow()
        repository.insert(session, user)
        record_event(session, event_type=event, actor=actor, data=data)
        return _user_out(user)


def set_password(db: Database, email: str, password: str, *, actor: str) -> UserOut:
    """Set a user's password (WeakPassword when too short) and end their sessions everywhere."""
    new_hash = checked_password_hash(password)  # slow: hashed before the transaction

    def change(user: User) -> None:
        user.password_hash = new_hash

    return _change_user(db, email, change, event_type="user.password_set", actor=actor)


def disable_user(db: Database, email: str, *, actor: str) -> UserOut:
    """Disable a user and end their sessions; idempotent."""

    def change(user: User) -> None:
        user.disabled = True

    return _change_user(db, email, change, event_type="user.disabled", actor=actor)


def _change_user(db: Database, email: str, change: Callable[[User], None], *, event_type: str, actor: str) -> UserOut:
    """Apply `change` to the user, end all their sessions, and record it: one transaction."""
    address = canonical_email(email)
    with db.session() as session:
        user = repository.find_user(session, address)
        if user is None:
            raise UserNotFound(address)
        change(user)
        user.updated_at = utcnow()
        repository.insert(session, user)
        ended = repository.delete_sessions_of(session, user.id)
        record_event(
            session,
            event_type=event_type,
            actor=actor,
            data={"user_id": user.id, "email": address, "sessions_ended": ended},
        )
        return _user_out(user)


def list_users(db: Database) -> list[UserOut]:
    with db.read_session() as session:
        return [_user_out(user) for user in repository.all_users(session)]


def get_user(db: Database, email: str) -> UserOut:
    address = canonical_email(email)
    with db.read_session() as session:
        user = repository.find_user(session, address)
        if user is None:
            raise UserNotFound(address)
        return _user_out(user)


# Sessions


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _client(client_ip: str | None) -> str:
    return (client_ip or "unknown")[:_CLIENT_IP_CHARS]


def _open_session(session: Session, settings: Settings, user: User, *, via: str, client_ip: str | None) -> SignedIn:
    token = secrets.token_urlsafe(32)
    row = ConsoleSession(
        id=new_id("ses"),
        token_hash=_token_hash(token),
        user_id=user.id,
        csrf_token=secrets.token_urlsafe(32),
        via=via,
        client_ip=_client(client_ip),
        expires_at=utcnow() + timedelta(minutes=settings.console_session_minutes),
    )
    repository.insert(session, row)
    record_event(
        session,
        event_type="console.signed_in",
        actor=f"user:{user.email}",
        data={"user_id": user.id, "session_id": row.id, "via": via, "client_ip": row.client_ip},
    )
    return SignedIn(
        session_token=token,
        csrf_token=row.csrf_token,
        user=ConsoleUser(
            user_id=user.id,
            email=user.email,
            role=Role(user.role),
            session_id=row.id,
            csrf_token=row.csrf_token,
            expires_at=row.expires_at,
            via=via,
        ),
    )


def session_user(runtime: UsersRuntime, token: str | None) -> ConsoleUser | None:
    """The person signed in with the cookie `token`, or None (no such session, expired, user
    disabled). One read, no write lock: this runs on every console request."""
    if not token or len(token) > 256:
        return None
    with runtime.db.single_reads() as connection:
        row = repository.session_user_row(connection, _token_hash(token))
    if row is None or row["disabled"] or row["expires_at"] <= utcnow():
        return None
    return ConsoleUser(
        user_id=row["user_id"],
        email=row["email"],
        role=Role(row["role"]),
        session_id=row["id"],
        csrf_token=row["csrf_token"],
        expires_at=row["expires_at"],
        via=row["via"],
    )


def check_csrf(user: ConsoleUser, token: str | None) -> bool:
    """Whether a form's CSRF token is this session's, compared in constant time."""
    if not token:
        return False
    return hmac.compare_digest(user.csrf_token.encode(), token.encode("utf-8", "surrogatepass"))


def sign_out(runtime: UsersRuntime, token: str | None) -> bool:
    """End the session of cookie `token`; False when there was none (already ended or expired)."""
    if not token or len(token) > 256:
        return False
    with runtime.db.session() as session:
        found = repository.session_by_token_hash(session, _token_hash(token))
        if found is None:
            return False
        row, user = found
        repository.delete_session(session, row.id)
        record_event(
            session,
            event_type="console.signed_out",
            actor=f"user:{user.email}",
            data={"user_id": user.id, "session_id": row.id},
        )
    return True


# Password sign-in


@dataclass(frozen=True, slots=True)
class _Attempt:
    user: User | None
    refusal: TooManySignInAttempts | None


def _retry_after(times: Sequence[datetime], limit: int, now: datetime) -> int | None:
    """Seconds until fewer than `limit` of `times` are inside the window, or None if already."""
    if len(times) < limit:
        return None
    # The attempt whose ageing out brings the count below the limit.
    frees_at = times[len(times) - limit] + ATTEMPT_WINDOW
    return max(1, math.ceil((frees_at - now).total_seconds()))


def _refused_event(session: Session, actor: str, *, email: str, client_ip: str, via: str, reason: str) -> None:
    # Never the password, nor anything derived from it.
    record_event(
        session,
        event_type="console.sign_in_failed",
        actor=actor,
        data={"email": email, "client_ip": client_ip, "via": via, "reason": reason},
    )


def _begin_attempt(runtime: UsersRuntime, key: str, actor: str, client_ip: str) -> _Attempt:
    """Refuse when this address or client has used up its attempts; otherwise record the attempt
    (as failed until the password checks out) and load the user."""
    settings = runtime.settings
    limit = settings.console_login_attempts

    def begin(session: Session) -> _Attempt:
        now = utcnow()
        since = now - ATTEMPT_WINDOW
        repository.serialize_attempts(session, [f"email:{key}", f"client:{client_ip}"])
        repository.purge(session, attempts_before=since, sessions_expired_by=now)
        waits = [
            _retry_after(repository.failures_since(session, column=column, value=value, since=since), limit, now)
            for column, value in (("email", key), ("client_ip", client_ip))
        ]
        longest = max((wait for wait in waits if wait is not None), default=None)
        if longest is not None:
            refusal = TooManySignInAttempts(
                longest, limit=limit, window_minutes=int(ATTEMPT_WINDOW.total_seconds() // 60)
            )
            _refused_event(session, actor, email=key, client_ip=client_ip, via="password", reason=refusal.reason)
            return _Attempt(None, refusal)
        attempt = LoginAttempt(email=key, client_ip=client_ip, created_at=now)
        repository.insert(session, attempt)
        return _Attempt(repository.find_user(session, key), None)

    return runtime.db.write(begin)


def sign_in(runtime: UsersRuntime, email: str, password: str, client_ip: str | None) -> SignedIn:
    """Sign in with a password: a new session, or a SignInRefused (InvalidCredentials,
    UserDisabled, TooManySignInAttempts). Takes as long for an unknown address as for a known one."""
    client = _client(client_ip)
    try:
        key = canonical_email(email)
        actor = f"user:{key}"
    except InvalidEmail:
        key, actor = (email or "").strip().casefold()[:200], ANONYMOUS
    attempt = _begin_attempt(runtime, key, actor, client)
    if attempt.refusal is not None:
        log.warning("console.sign_in_rate_limited", email=key, client_ip=client)
        raise attempt.refusal
    user = attempt.user
    # Slow by design (argon2), so outside any transaction; a dummy hash when there is no user.
    matched = verify_password(user.password_hash if user is not None else None, password)
    refusal: SignInRefused | None = None
    if user is None or not matched:
        refusal = InvalidCredentials()
    elif user.disabled:
        refusal = UserDisabled(user.email)
    # A hash made with older parameters is upgraded now that the password is known (hashed
    # here, outside the transaction, for the same reason).
    upgraded = (
        hash_password(password)
        if refusal is None and user is not None and user.password_hash and needs_rehash(user.password_hash)
        else None
    )

    def finish(session: Session) -> SignedIn | None:
        if refusal is not None:
            # The attempt stays recorded: it counts against the address and the client.
            _refused_event(session, actor, email=key, client_ip=client, via="password", reason=refusal.reason)
            return None
        assert user is not None
        assert user.password_hash is not None
        # A success forgives this address's failures, not other addresses' failures from the
        # same client: the per-client count still catches guessing across many accounts.
        # (This attempt was made for the same address, so it goes too.)
        repository.forget_failures(session, email=key)
        if upgraded is not None:
            repository.replace_password_hash(session, user.id, old=user.password_hash, new=upgraded)
        return _open_session(session, runtime.settings, user, via="password", client_ip=client)

    signed_in = runtime.db.write(finish)
    if signed_in is None:
        assert refusal is not None
        log.info("console.sign_in_failed", email=key, client_ip=client, reason=refusal.reason)
        raise refusal
    return signed_in


# Sign-in through an authenticating proxy

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_NETWORKS: dict[tuple[str, ...], tuple[_Network, ...]] = {}


def trusted_proxy_networks(entries: Sequence[str]) -> tuple[_Network, ...]:
    """`Settings.console_trusted_proxies` parsed (addresses or CIDR networks), once per value;
    ConsoleMisconfigured names an entry that is neither."""
    key = tuple(entries)
    cached = _NETWORKS.get(key)
    if cached is not None:
        return cached
    networks: list[_Network] = []
    for entry in key:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError as exc:
            raise ConsoleMisconfigured(
                f"OUTBOX_CONSOLE_TRUSTED_PROXIES has {entry!r}, which is not an IP address or network ({exc})."
            ) from exc
    _NETWORKS[key] = tuple(networks)
    return _NETWORKS[key]


def is_trusted_proxy(settings: Settings, peer_ip: str | None) -> bool:
    """Whether the TCP peer `peer_ip` is one of the configured proxies."""
    networks = trusted_proxy_networks(settings.console_trusted_proxies)
    if not networks or not peer_ip:
        return False
    try:
        address = ipaddress.ip_address(peer_ip.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


@dataclass(frozen=True, slots=True)
class _ProxyRefusal:
    reason: str
    detail: str
    hint: str
    email: str = ""
    actor: str = ANONYMOUS


def _refuse_proxy(runtime: UsersRuntime, refusal: _ProxyRefusal, peer: str) -> ProxyIdentityRefused:
    """Audit and log a refused proxy identity; the error to raise."""

    def record(session: Session) -> None:
        _refused_event(session, refusal.actor, email=refusal.email, client_ip=peer, via="proxy", reason=refusal.reason)

    runtime.db.write(record)
    log.warning("console.proxy_identity_refused", reason=refusal.reason, email=refusal.email, peer_ip=peer)
    return ProxyIdentityRefused(refusal.detail, reason=refusal.reason, hint=refusal.hint)


def _proxied_address(settings: Settings, header_value: str | None, peer_ip: str | None) -> str | _ProxyRefusal:
    """The canonical address a trusted proxy vouches for, or why the header does not count."""
    header = settings.console_identity_header
    configure = f"Configure the proxy to pass the signed-in e-mail address in {header}."
    if not is_trusted_proxy(settings, peer_ip):
        return _ProxyRefusal(
            "untrusted_proxy",
            f"The {header} header came from {_client(peer_ip)}, which is not a trusted proxy; it was ignored.",
            "Sign in with a password, or list the proxy's address in OUTBOX_CONSOLE_TRUSTED_PROXIES.",
            email=(header_value or "")[:200],
        )
    if not header_value:
        return _ProxyRefusal("no_identity", f"The trusted proxy at {peer_ip} sent no {header} header.", configure)
    try:
        return canonical_email(header_value)
    except InvalidEmail as exc:
        return _ProxyRefusal(
            "invalid_identity",
            f"The proxy's {header} header is not an e-mail address: {exc.detail}",
            configure,
            email=header_value[:200],
        )


def sign_in_from_proxy(runtime: UsersRuntime, header_value: str | None, peer_ip: str | None) -> SignedIn:
    """Sign in the person an authenticating proxy names in `Settings.console_identity_header`.

    Trusted only when the TCP peer (not any forwarded-for header) is a configured proxy and the
    address is a known, enabled user; anything else is ProxyIdentityRefused, logged and audited.
    """
    settings = runtime.settings
    found = _proxied_address(settings, header_value, peer_ip)
    if isinstance(found, _ProxyRefusal):
        raise _refuse_proxy(runtime, found, _client(peer_ip))
    address = found

    def open_session(session: Session) -> SignedIn | str:
        user = repository.find_user(session, address)
        if user is None:
            return "unknown_user"
        if user.disabled:
            return "disabled"
        return _open_session(session, settings, user, via="proxy", client_ip=peer_ip)

    outcome = runtime.db.write(open_session)
    if isinstance(outcome, SignedIn):
        return outcome
    refusal = _ProxyRefusal(
        outcome,
        f"{address} is not a console user."
        if outcome == "unknown_user"
        else f"{address}'s console account is disabled.",
        "An operator adds people with `outbox users add EMAIL` (or enables a disabled one the same way).",
        email=address,
        actor=f"user:{address}",
    )
    raise _refuse_proxy(runtime, refusal, _client(peer_ip))
