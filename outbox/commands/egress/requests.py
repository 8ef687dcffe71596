"""Reading what a sandboxed client asks the proxy for: an HTTP CONNECT or a SOCKS5 request.

Everything here is hostile input: the head is bounded in size and in time (a client that
trickles a header byte by byte is cut off at the deadline), the target must be `host:port`
with an explicit port in 1-65535, no user information, IPv6 in brackets, and the host goes
through the canonical form of `outbox.urls` (so `0x7f.1`, `2130706433` or `[::ffff:127.0.0.1]`
are either refused or recognised for what they are before any allowlist is asked).
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

from outbox.commands.egress.addresses import URLRefused, canonical_host

MAX_HEAD_BYTES = 8192
_SOCKS_VERSION = 5
_SOCKS_NO_AUTH = 0
_SOCKS_CONNECT = 1
# SOCKS5 reply codes (RFC 1928 §6).
SOCKS_NOT_ALLOWED = 2
SOCKS_HOST_UNREACHABLE = 4
SOCKS_REFUSED = 5
SOCKS_COMMAND_UNSUPPORTED = 7
SOCKS_ADDRESS_UNSUPPORTED = 8
SOCKS_GENERAL_FAILURE = 1


class Refusal(Exception):
    """The request is refused: `reason` goes on the record, `status`/`socks_code` to the client."""

    def __init__(
        self, reason: str, *, status: int = 403, socks_code: int = SOCKS_NOT_ALLOWED, reply: bool = True
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        # False when the client already had its answer (a refused SOCKS5 method negotiation).
        self.reply = reply
        self.status = status
        self.socks_code = socks_code


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """Where the client wants to go, as it wrote it and in canonical form."""

    protocol: str  # "http-connect" or "socks5"
    target: str  # as written, for the record (bounded)
    host: str
    port: int


class HeadReader:
    """Reads from the client until a deadline; a read past it is a refusal (408)."""

    def __init__(self, client: socket.socket, timeout_seconds: float) -> None:
        self._client = client
        self._deadline = time.monotonic() + timeout_seconds
        self._timeout = timeout_seconds
        self.buffer = b""

    def fill(self, want: int) -> bytes:
        """Exactly `want` more bytes (after what is buffered), consumed from the buffer."""
        while len(self.buffer) < want:
            self._read_more()
        taken, self.buffer = self.buffer[:want], self.buffer[want:]
        return taken

    def until_blank_line(self) -> bytes:
        """The HTTP head up to and including CRLF CRLF; bounded by MAX_HEAD_BYTES."""
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            if len(self.buffer) > MAX_HEAD_BYTES:
                raise Refusal(f"request head longer than {MAX_HEAD_BYTES} bytes", status=431)
            self._read_more()
        if end > MAX_HEAD_BYTES:
            raise Refusal(f"request head longer than {MAX_HEAD_BYTES} bytes", status=431)
        head, self.buffer = self.buffer[: end + 4], self.buffer[end + 4 :]
        return head

    def _read_more(self) -> None:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise Refusal(f"request not complete within {self._timeout:g} s", status=408)
        self._client.settimeout(remaining)
        try:
            chunk = self._client.recv(4096)
        except TimeoutError:
            raise Refusal(f"request not complete within {self._timeout:g} s", status=408) from None
        if not chunk:
            raise Refusal("the client closed the connection before completing its request", status=400)
        self.buffer += chunk


def read_http_connect(reader: HeadReader) -> ConnectRequest:
    """`CONNECT host:port HTTP/1.1` and its headers (ignored); anything else is refused."""
    head = reader.until_blank_line()
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise Refusal("the request head is not ASCII", status=400) from None
    request_line = text.split("\r\n", 1)[0]
    parts = request_line.split(" ")
    if len(parts) != 3 or parts[2] not in {"HTTP/1.1", "HTTP/1.0"}:
        raise Refusal(f"malformed request line {_shown(request_line)}", status=400)
    method, target, _ = parts
    if method != "CONNECT":
        raise Refusal(
            f"{_shown(method)} is not supported: the egress proxy only tunnels (CONNECT), so use https", status=405
        )
    host, port = split_target(target)
    return ConnectRequest("http-connect", _shown(target), host, port)


def split_target(target: str) -> tuple[str, int]:
    """`host:port` or `[ipv6]:port` into the canonical host and the port; Refusal otherwise."""
    if "@" in target:
        raise Refusal(f"user information is not allowed in the target {_shown(target)}", status=400)
    if target.startswith("["):
        host_text, bracket, rest = target[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise Refusal(f"expected [ipv6]:port, not {_shown(target)}", status=400)
        host_text, port_text = f"[{host_text}]", rest[1:]
    else:
        host_text, colon, port_text = target.rpartition(":")
        if not colon or ":" in host_text:
            raise Refusal(f"expected host:port (an IPv6 address in brackets), not {_shown(target)}", status=400)
    return _canonical(host_text), parse_port(port_text)


def parse_port(text: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 5) or not 1 <= int(text) <= 65535:
        raise Refusal(f"the port {_shown(text)!r} is not a number from 1 to 65535", status=400)
    return int(text)


def read_socks5(client: socket.socket, reader: HeadReader) -> ConnectRequest:
    """RFC 1928 without authentication, CONNECT only; answers the method negotiation itself."""
    version, count = reader.fill(2)
    methods = reader.fill(count)
    if version != _SOCKS_VERSION or _SOCKS_NO_AUTH not in methods:
        client.sendall(bytes([_SOCKS_VERSION, 0xFF]))
        raise Refusal("SOCKS5 without an acceptable authentication method (only 'none' is offered)", reply=False)
    client.sendall(bytes([_SOCKS_VERSION, _SOCKS_NO_AUTH]))
    version, command, reserved, kind = reader.fill(4)
    if version != _SOCKS_VERSION or reserved != 0:
        raise Refusal("malformed SOCKS5 request", socks_code=SOCKS_GENERAL_FAILURE)
    if command != _SOCKS_CONNECT:
        raise Refusal(f"SOCKS5 command {command} is not supported (CONNECT only)", socks_code=SOCKS_COMMAND_UNSUPPORTED)
    if kind == 1:
        written = socket.inet_ntop(socket.AF_INET, reader.fill(4))
    elif kind == 4:
        written = "[" + socket.inet_ntop(socket.AF_INET6, reader.fill(16)) + "]"
    elif kind == 3:
        raw = reader.fill(reader.fill(1)[0])
        if not raw or not raw.isascii() or not raw.decode().isprintable():
            raise Refusal(f"SOCKS5 host name {raw[:64]!r} is not printable ASCII")
        written = raw.decode()
    else:
        raise Refusal(f"SOCKS5 address type {kind} is not supported", socks_code=SOCKS_ADDRESS_UNSUPPORTED)
    port = int.from_bytes(reader.fill(2), "big")
    target = f"{_shown(written)}:{port}"
    if port == 0:
        raise Refusal("port 0 is not a destination")
    return ConnectRequest("socks5", target, _canonical(written), port)


def _canonical(host_text: str) -> str:
    try:
        return canonical_host(host_text)
    except URLRefused as error:
        raise Refusal(f"the host {_shown(host_text)} is refused: {error}", status=400) from None


def _shown(text: str, limit: int = 200) -> str:
    """Client text for a record or a message: bounded and without control characters."""
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in text[:limit])
    return cleaned + ("…" if len(text) > limit else "")
