"""Hand signed messages to a subdomain's relay with aiosmtplib, and record every reply.

One SMTP transaction per message: MAIL FROM, one RCPT TO per recipient, DATA. Each recipient's
outcome is the exact reply that decided it (its RCPT refusal, else the DATA reply), so the record
says what the relay said, not what we concluded. RFC 5321 §4.2.1: 2xx is accepted, 4xx a
temporary failure worth retrying, 5xx permanent. Retrying, with backoff, is the pipeline's job.

Workers are synchronous (Celery), so `SmtpDelivery.deliver` runs the coroutine on an event loop
owned by the calling thread, which also owns that thread's open connections: a relay connection
is reused by the next message instead of paying TCP, TLS and AUTH again for every one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import aiosmtplib

from outbox.mail.config import MailConfigError, RelayConfig

# Where a recipient's fate was decided. "suppressed" recipients never reach the relay.
Stage = Literal["connect", "mail", "rcpt", "data", "suppressed"]

# Close a cached connection unused for this long rather than find it dead: servers may drop idle
# clients after a few minutes (RFC 5321 §4.5.3.2.7).
MAX_IDLE_SECONDS = 60.0
SERVICE_CLOSING = 421


@dataclass(frozen=True, slots=True)
class RecipientResult:
    """What happened to one recipient. `code` is None when no reply came (connection failed)."""

    code: int | None
    message: str
    stage: Stage

    @property
    def delivered(self) -> bool:
        return self.code is not None and 200 <= self.code < 300

    @property
    def permanent(self) -> bool:
        """Suppressed, or a 5xx at MAIL, RCPT or DATA: this recipient will not get this message.

        A 5xx before MAIL (greeting, STARTTLS, AUTH) says nothing about the recipient: that is a
        relay problem, retryable like a refused connection.
        """
        if self.stage == "suppressed":
            return True
        return self.code is not None and self.code >= 500 and self.stage != "connect"

    @property
    def retryable(self) -> bool:
        return not self.delivered and not self.permanent

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "stage": self.stage}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecipientResult:
        """The inverse of `as_dict`, for results read back from the action record."""
        return cls(code=data["code"], message=data["message"], stage=data["stage"])


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    relay: str
    envelope_from: str
    tls: bool
    recipients: dict[str, RecipientResult]


class _StaleConnectionError(Exception):
    """A reused connection turned out dead before anything was committed: safe to redo."""


@dataclass
class _Connection:
    smtp: aiosmtplib.SMTP
    last_used: float
    sent: int = 0


@dataclass
class _ThreadState:
    pid: int
    loop: asyncio.AbstractEventLoop
    lock: threading.Lock = field(default_factory=threading.Lock)
    connections: dict[tuple[RelayConfig, str], _Connection] = field(default_factory=dict)


def _all(recipients: Sequence[str], result: RecipientResult) -> dict[str, RecipientResult]:
    return dict.fromkeys(recipients, result)


def _failure_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class SmtpDelivery:
    """Delivery with a per-thread event loop and a per-thread connection cache keyed by relay."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._states: list[_ThreadState] = []
        self._states_lock = threading.Lock()

    def _state(self) -> _ThreadState:
        state: _ThreadState | None = getattr(self._local, "state", None)
        # After a fork (Celery prefork) the child must not share the parent's sockets or loop.
        if state is None or state.pid != os.getpid():
            state = _ThreadState(pid=os.getpid(), loop=asyncio.new_event_loop())
            self._local.state = state
            with self._states_lock:
                self._states.append(state)
        return state

    def deliver(
        self,
        relay: RelayConfig,
        *,
        helo_name: str,
        envelope_from: str,
        recipients: Sequence[str],
        message: bytes,
    ) -> DeliveryReport:
        """Send `message` (CRLF bytes, exactly as signed) to every recipient; never raises on
        SMTP or network failure: failures are per-recipient results."""
        state = self._state()
        with state.lock:
            return state.loop.run_until_complete(
                self._deliver(
                    state,
                    relay,
                    helo_name=helo_name,
                    envelope_from=envelope_from,
                    recipients=list(recipients),
                    message=message,
                )
            )

    def close(self) -> None:
        """Quit every relay connection this instance holds, and close the loops.

        Call at shutdown once the threads that delivered have stopped delivering.
        """
        with self._states_lock:
            states, self._states = self._states, []
        for state in states:
            if state.pid != os.getpid():
                continue
            with state.lock:
                for connection in state.connections.values():
                    state.loop.run_until_complete(_close(connection.smtp))
                state.connections.clear()
                state.loop.close()
        self._local = threading.local()

    async def _deliver(
        self,
        state: _ThreadState,
        relay: RelayConfig,
        *,
        helo_name: str,
        envelope_from: str,
        recipients: list[str],
        message: bytes,
    ) -> DeliveryReport:
        key = (relay, helo_name)
        label = f"{relay.host}:{relay.port}"
        # At most twice: a cached connection found dead before anything was committed is
        # replaced by a fresh one, which is never "stale".
        for _ in range(2):
            try:
                connection = await self._connection(state, key)
            except aiosmtplib.SMTPResponseException as exc:
                result = RecipientResult(exc.code, exc.message, "connect")
                return DeliveryReport(label, envelope_from, False, _all(recipients, result))
            except (aiosmtplib.SMTPException, OSError, MailConfigError) as exc:
                result = RecipientResult(None, _failure_text(exc), "connect")
                return DeliveryReport(label, envelope_from, False, _all(recipients, result))
            tls = connection.smtp.get_transport_info("sslcontext") is not None
            try:
                results = await _transaction(
                    connection.smtp, envelope_from, recipients, message, reused=connection.sent > 0
                )
            except _StaleConnectionError:
                await self._drop(state, key)
                continue
            connection.sent += 1
            connection.last_used = time.monotonic()
            if not connection.smtp.is_connected:
                await self._drop(state, key)
            ordered = {r: results[r] for r in recipients}
            return DeliveryReport(label, envelope_from, tls, ordered)
        raise AssertionError("a fresh connection cannot be stale")  # pragma: no cover

    async def _connection(self, state: _ThreadState, key: tuple[RelayConfig, str]) -> _Connection:
        cached = state.connections.get(key)
        if cached is not None:
            idle = time.monotonic() - cached.last_used
            if cached.smtp.is_connected and idle < MAX_IDLE_SECONDS:
                return cached
            await self._drop(state, key)
        relay, helo_name = key
        smtp = await _open(relay, helo_name)
        connection = _Connection(smtp=smtp, last_used=time.monotonic())
        state.connections[key] = connection
        return connection

    async def _drop(self, state: _ThreadState, key: tuple[RelayConfig, str]) -> None:
        connection = state.connections.pop(key, None)
        if connection is not None:
            await _close(connection.smtp)


async def _open(relay: RelayConfig, helo_name: str) -> aiosmtplib.SMTP:
    """Connect, EHLO, STARTTLS (as configured) and log in, step by step.

    STARTTLS and AUTH are driven here rather than by aiosmtplib's connect() so that a failure
    at any step closes the socket at once, and `require_tls` is enforced by us.
    """
    credentials = relay.credentials()
    tls_context = None
    if relay.starttls:
        cafile = None if relay.tls_ca_file is None else str(relay.tls_ca_file)
        tls_context = ssl.create_default_context(cafile=cafile)
    smtp = aiosmtplib.SMTP(
        hostname=relay.host,
        port=relay.port,
        local_hostname=helo_name,
        timeout=relay.timeout_seconds,
        start_tls=False,
        tls_context=tls_context,
    )
    try:
        await smtp.connect()
        await smtp.ehlo()
        if relay.starttls and smtp.supports_extension("starttls"):
            await smtp.starttls()
        elif relay.require_tls:
            raise aiosmtplib.SMTPException(
                "the relay does not offer STARTTLS and require_tls forbids sending in clear text"
            )
        if credentials is not None:
            await smtp.login(*credentials)
    except BaseException:
        await _close(smtp)
        raise
    return smtp


async def _close(smtp: aiosmtplib.SMTP) -> None:
    """QUIT politely, then make sure the socket is really closed before the loop may be.

    A graceful TLS close waits for the peer's close_notify; aborting after QUIT closes the
    socket within the next loop iterations instead of leaving it to the garbage collector.
    """
    transport = smtp.transport
    if smtp.is_connected:
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            await smtp.quit()
    smtp.close()
    if isinstance(transport, asyncio.Transport):
        transport.abort()
    for _ in range(3):
        await asyncio.sleep(0)


async def _reset(smtp: aiosmtplib.SMTP) -> None:
    """Abandon the envelope so the connection can carry the next message (RFC 5321 §4.1.1.5)."""
    if not smtp.is_connected:
        return
    try:
        await smtp.rset()
    except (aiosmtplib.SMTPException, OSError):
        await _close(smtp)


async def _transaction(
    smtp: aiosmtplib.SMTP,
    envelope_from: str,
    recipients: list[str],
    message: bytes,
    *,
    reused: bool,
) -> dict[str, RecipientResult]:
    try:
        await smtp.mail(envelope_from)
    except aiosmtplib.SMTPResponseException as exc:
        if reused and exc.code == SERVICE_CLOSING:
            raise _StaleConnectionError from exc
        await _reset(smtp)
        return _all(recipients, RecipientResult(exc.code, exc.message, "mail"))
    except (aiosmtplib.SMTPException, OSError) as exc:
        if reused:
            raise _StaleConnectionError from exc
        await _close(smtp)
        return _all(recipients, RecipientResult(None, _failure_text(exc), "mail"))

    results: dict[str, RecipientResult] = {}
    accepted: list[str] = []
    for index, recipient in enumerate(recipients):
        try:
            await smtp.rcpt(recipient)
        except aiosmtplib.SMTPResponseException as exc:
            results[recipient] = RecipientResult(exc.code, exc.message, "rcpt")
            continue
        except (aiosmtplib.SMTPException, OSError) as exc:
            await _close(smtp)
            lost = RecipientResult(None, _failure_text(exc), "rcpt")
            results.update(_all(recipients[index:], lost))
            results.update(_all(accepted, lost))
            return results
        accepted.append(recipient)
    if not accepted:
        await _reset(smtp)
        return results

    try:
        reply = await smtp.data(message)
    except aiosmtplib.SMTPResponseException as exc:
        await _reset(smtp)
        results.update(_all(accepted, RecipientResult(exc.code, exc.message, "data")))
        return results
    except (aiosmtplib.SMTPException, OSError) as exc:
        # The connection died after the message may have been taken but before the reply: the
        # outcome is unknown (RFC 1047). Reported as retryable, so a retry may duplicate it.
        await _close(smtp)
        unknown = RecipientResult(None, f"outcome unknown: {_failure_text(exc)}", "data")
        results.update(_all(accepted, unknown))
        return results
    results.update(_all(accepted, RecipientResult(reply.code, reply.message, "data")))
    return results
