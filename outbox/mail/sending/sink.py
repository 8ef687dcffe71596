"""A local SMTP server that keeps every message it accepts in a Maildir.

The embedded quickstart points its subdomain's relay here, so mail really is delivered and can be
opened with any Maildir-reading client (mutt -f .outbox/maildir). Tests use it as a relay whose
replies they script: a recipient can be refused at RCPT or at DATA with a given 4xx/5xx reply,
optionally behind STARTTLS and AUTH, to exercise every branch of delivery against a real server.

Each stored file is the received message byte for byte, preceded by `Return-Path` and
`Delivered-To` lines (as a local delivery agent writes them) and an `X-Outbox-Sink` line that marks
where the envelope ends.
"""

from __future__ import annotations

import asyncio
import mailbox
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from pathlib import Path
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from outbox.sqltypes import utcnow
from outbox.state_files import PRIVATE_FILE_MODE, private_directory, private_parents

DEFAULT_MAILDIR = Path(".outbox/maildir")
_ENVELOPE_END = "X-Outbox-Sink"

_GENERIC_REPLIES = {
    421: "421 4.3.0 Service not available (scripted)",
    450: "450 4.2.0 Mailbox unavailable (scripted)",
    451: "451 4.3.0 Local error in processing (scripted)",
    452: "452 4.2.2 Insufficient storage (scripted)",
    550: "550 5.1.1 Mailbox unavailable (scripted)",
    552: "552 5.3.4 Message too big (scripted)",
    554: "554 5.7.1 Transaction failed (scripted)",
}


def _reply(value: int | str) -> str:
    if isinstance(value, int):
        return _GENERIC_REPLIES.get(value, f"{value} Scripted reply")
    return value


@dataclass(frozen=True)
class SinkScript:
    """Scripted refusals. Keys are recipient addresses; values a reply code or a full reply line.

    `rcpt` refuses the recipient at RCPT TO. `data` refuses the whole DATA when any recipient
    accepted in the transaction is listed (DATA has one reply for all of them, RFC 5321 §4.1.1.4).
    """

    rcpt: Mapping[str, int | str] = field(default_factory=dict)
    data: Mapping[str, int | str] = field(default_factory=dict)


@dataclass(frozen=True)
class SinkMessage:
    """One stored message: the envelope, and the bytes exactly as received."""

    key: str
    envelope_from: str
    recipients: tuple[str, ...]
    # The client's "ip:port": messages sent over one reused connection share it.
    peer: str
    content: bytes

    @property
    def message_id(self) -> str | None:
        value = BytesHeaderParser().parsebytes(self.content).get("Message-ID")
        return None if value is None else str(value).strip()


class _MaildirHandler:
    def __init__(self, maildir: mailbox.Maildir, script: SinkScript, credentials: tuple[str, str] | None) -> None:
        self._maildir = maildir
        self._credentials = credentials
        self.set_script(script)

    def set_script(self, script: SinkScript) -> None:
        self._rcpt = {k.lower(): _reply(v) for k, v in script.rcpt.items()}
        self._data = {k.lower(): _reply(v) for k, v in script.data.items()}

    async def handle_RCPT(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        refusal = self._rcpt.get(address.lower())
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
    ) -> str:
        peer = ":".join(str(p) for p in session.peer[:2]) if session.peer else "unknown"
        for recipient in envelope.rcpt_tos:
            refusal = self._data.get(recipient.lower())
            if refusal is not None:
                return refusal
        content = envelope.original_content or b""
        head = f"Return-Path: <{envelope.mail_from}>\r\n"
        head += "".join(f"Delivered-To: {r}\r\n" for r in envelope.rcpt_tos)
        head += f"X-Outbox-Sink: from {peer} at {utcnow().isoformat()}\r\n"
        key = self._maildir.add(head.encode("utf-8", "surrogateescape") + content)
        # mailbox writes 0666 & ~umask; a stored message is the outbox's data, for its uid only.
        os.chmod(os.path.join(self._maildir._path, "new", key), PRIVATE_FILE_MODE)
        return f"250 2.0.0 Ok: queued as {key}"

    def authenticate(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        if self._credentials is None or not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user, password = self._credentials
        ok = auth_data.login == user.encode() and auth_data.password == password.encode()
        return AuthResult(success=ok, handled=False)


class _FreePortController(Controller):
    """aiosmtpd's Controller, able to listen on port 0 and report the port the OS chose."""

    def _trigger_server(self) -> None:
        server = self.server
        if isinstance(server, asyncio.Server) and self.port == 0:
            self.port = server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]  # aiosmtpd leaves it unannotated


class MaildirSink:
    """Start with `start()` (or `with MaildirSink(...) as sink:`); `port` tells where it listens."""

    def __init__(
        self,
        directory: Path = DEFAULT_MAILDIR,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        script: SinkScript | None = None,
        tls_context: ssl.SSLContext | None = None,
        require_starttls: bool = False,
        credentials: tuple[str, str] | None = None,
        idle_timeout: float = 300.0,
    ) -> None:
        self.directory = directory
        # mailbox makes the Maildir and its tmp/new/cur 0700 only when it creates them itself.
        self.maildir = mailbox.Maildir(private_parents(directory), create=True)
        private_directory(directory)
        self._handler = _MaildirHandler(self.maildir, script or SinkScript(), credentials)
        handler = self._handler
        options: dict[str, Any] = {
            "server_hostname": "outbox-sink",
            "data_size_limit": 64 * 1024 * 1024,
            # Seconds an idle client may keep its connection (RFC 5321 §4.5.3.2.7 says 5 min).
            "timeout": idle_timeout,
        }
        if tls_context is not None:
            options.update(tls_context=tls_context, require_starttls=require_starttls)
        if credentials is not None:
            options.update(authenticator=handler.authenticate, auth_required=True)
        self._controller = _FreePortController(handler, hostname=host, port=port, **options)

    @property
    def host(self) -> str:
        return str(self._controller.hostname)

    @property
    def port(self) -> int:
        return int(self._controller.port)

    def start(self) -> MaildirSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> MaildirSink:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def set_script(self, script: SinkScript) -> None:
        """Replace the scripted replies; takes effect for the next command received."""
        self._handler.set_script(script)

    def messages(self) -> list[SinkMessage]:
        return read_maildir(self.directory)


def _split_envelope(key: str, stored: bytes) -> SinkMessage:
    envelope_from, recipients, peer = "", [], ""
    offset = 0
    while True:
        end = stored.index(b"\r\n", offset)
        name, _, value = stored[offset:end].decode("utf-8", "surrogateescape").partition(":")
        offset = end + 2
        if name == "Return-Path":
            envelope_from = value.strip().removeprefix("<").removesuffix(">")
        elif name == "Delivered-To":
            recipients.append(value.strip())
        elif name == _ENVELOPE_END:
            peer = value.split()[1]
            break
    return SinkMessage(key, envelope_from, tuple(recipients), peer, stored[offset:])


def read_maildir(directory: Path = DEFAULT_MAILDIR) -> list[SinkMessage]:
    """Every message the sink stored under `directory`, oldest first."""
    files = [
        entry
        for folder in ("new", "cur")
        if (directory / folder).is_dir()
        for entry in (directory / folder).iterdir()
        if not entry.name.startswith(".")
    ]
    files.sort(key=lambda path: (path.stat().st_mtime_ns, path.name))
    # A Maildir file name is the message key, then ":2,<flags>" once a reader has seen it.
    return [_split_envelope(path.name.split(":")[0], path.read_bytes()) for path in files]
