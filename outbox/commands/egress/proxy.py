"""The host-side egress proxy of one sandboxed run: HTTP CONNECT and SOCKS5 on a Unix socket.

The sandbox has its own network namespace with nothing but `lo`; this proxy is its only way
out. It listens on a Unix socket that is bound into the sandbox (and bridged there to
127.0.0.1:3128, `bridge.py`), reads one CONNECT or SOCKS5 request per connection, and
connects only when the canonical host and port match the run's allowlist, after resolving the
name itself and refusing loopback, private, link-local, CGNAT, multicast, unspecified and
metadata addresses unless the matching destination is configured with `allow_private`. Every
connection, allowed or refused, becomes an `EgressRecord` on the run's result.

One proxy per run, living exactly as long as the run: nothing is shared between actions.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from outbox.commands.egress.addresses import IPAddress, forbidden_address, ip_literal
from outbox.commands.egress.destinations import AllowedDestination
from outbox.commands.egress.requests import (
    SOCKS_HOST_UNREACHABLE,
    SOCKS_REFUSED,
    ConnectRequest,
    HeadReader,
    Refusal,
    read_http_connect,
    read_socks5,
)
from outbox.commands.egress.resolver import ResolutionFailed, Resolves
from outbox.sqltypes import utcnow

_HTTP_REASONS = {400: "Bad Request", 403: "Forbidden", 405: "Method Not Allowed", 408: "Request Timeout"}
_HTTP_REASONS |= {431: "Request Header Fields Too Large", 502: "Bad Gateway", 503: "Service Unavailable"}
_POLL_SECONDS = 0.2
_JOIN_SECONDS = 5.0
_LINGER_SECONDS = 1.0
_LINGER_READS = 16


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """What one run may reach, and how patient the proxy is with its client."""

    allowed: tuple[AllowedDestination, ...]
    resolver: Resolves
    header_timeout_seconds: float = 10.0
    connect_timeout_seconds: float = 10.0
    # Records kept on the result; later connections are counted, not listed.
    record_cap: int = 100
    # Connections open at once; more are refused (and recorded) at once.
    max_connections: int = 32
    # The outbox's own ports (API, SMTP sink, database, broker): never on loopback, whatever a
    # destination allows, so not even a loopback destination with allow_private reaches them.
    reserved_ports: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class EgressRecord:
    """One connection through (or refused by) the proxy."""

    time: str
    protocol: str
    target: str
    host: str | None
    port: int | None
    address: str | None
    # connected, refused (by the allowlist or address rules), failed (allowed, but unreachable).
    outcome: str
    reason: str | None
    bytes_sent: int
    bytes_received: int
    duration_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "protocol": self.protocol,
            "target": self.target,
            "host": self.host,
            "port": self.port,
            "address": self.address,
            "outcome": self.outcome,
            "reason": self.reason,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "duration_seconds": round(self.duration_seconds, 3),
        }


@dataclass(frozen=True, slots=True)
class EgressLog:
    records: tuple[EgressRecord, ...] = ()
    # Connections beyond the record cap: counted, not listed.
    dropped: int = 0

    @property
    def truncated(self) -> bool:
        return self.dropped > 0


@dataclass(slots=True)
class _Connection:
    started: float = field(default_factory=time.monotonic)
    time: str = field(default_factory=lambda: utcnow().isoformat(timespec="milliseconds"))
    protocol: str = "unknown"
    target: str = ""
    host: str | None = None
    port: int | None = None
    address: str | None = None
    outcome: str = "refused"
    reason: str | None = None
    sent: int = 0
    received: int = 0
    ended: float | None = None

    def record(self) -> EgressRecord:
        end = self.ended if self.ended is not None else time.monotonic()
        return EgressRecord(
            self.time,
            self.protocol,
            self.target,
            self.host,
            self.port,
            self.address,
            self.outcome,
            self.reason,
            self.sent,
            self.received,
            end - self.started,
        )


def decide(policy: EgressPolicy, request: ConnectRequest) -> list[IPAddress]:
    """The addresses to try for an allowed request; Refusal saying why otherwise."""
    matching = [allowed for allowed in policy.allowed if allowed.matches(request.host, request.port)]
    if not matching:
        raise Refusal(f"{request.host}:{request.port} is not among this tool's allowed destinations")
    literal = ip_literal(request.host)
    try:
        addresses = [literal] if literal is not None else policy.resolver.resolve(request.host)
    except ResolutionFailed as error:
        raise Refusal(
            f"could not resolve {request.host}: {error}", status=502, socks_code=SOCKS_HOST_UNREACHABLE
        ) from None
    if request.port in policy.reserved_ports and any(address.is_loopback for address in addresses):
        raise Refusal(f"{request.host}:{request.port} is one of the outbox's own services on this machine")
    if not any(allowed.allow_private for allowed in matching):
        for address in addresses:
            if (reason := forbidden_address(address)) is not None:
                raise Refusal(
                    f"{request.host} is or resolves to {address}, {reason}: refused unless a server-side"
                    " destination for it sets allow_private"
                )
    return addresses


class EgressProxy:
    """Serve one run's egress on `socket_path` until the context exits; `log()` after that."""

    def __init__(self, policy: EgressPolicy, socket_path: Path, owner: tuple[int, int] | None = None) -> None:
        self._policy = policy
        self._path = socket_path
        self._owner = owner
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._connections: list[_Connection] = []
        self._dropped = 0
        self._active = 0
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._accepting = threading.Thread(target=self._accept_loop, name="egress-accept", daemon=True)

    def __enter__(self) -> EgressProxy:
        self._listener.bind(str(self._path))
        if self._owner is not None:
            os.chown(self._path, *self._owner)
        self._path.chmod(0o600)
        self._listener.listen(64)
        self._listener.settimeout(_POLL_SECONDS)
        self._accepting.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self._stopping.set()
        self._accepting.join(_JOIN_SECONDS)
        self._listener.close()
        with self._lock:
            for sock in list(self._sockets):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            threads = list(self._threads)
        for thread in threads:
            thread.join(_JOIN_SECONDS)

    def log(self) -> EgressLog:
        with self._lock:
            return EgressLog(tuple(connection.record() for connection in self._connections), self._dropped)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connection = self._register(client)
            with self._lock:
                too_many = self._active > self._policy.max_connections
            if too_many:
                connection.reason = f"more than {self._policy.max_connections} connections open at once"
                self._finish(client, None, connection)
                continue
            thread = threading.Thread(target=self._serve, args=(client, connection), name="egress-conn", daemon=True)
            with self._lock:
                self._threads = [alive for alive in self._threads if alive.is_alive()]
                self._threads.append(thread)
            thread.start()

    def _register(self, client: socket.socket) -> _Connection:
        connection = _Connection()
        with self._lock:
            self._active += 1
            self._sockets.add(client)
            if len(self._connections) < self._policy.record_cap:
                self._connections.append(connection)
            else:
                self._dropped += 1
        return connection

    def _serve(self, client: socket.socket, connection: _Connection) -> None:
        upstream: socket.socket | None = None
        reader = HeadReader(client, self._policy.header_timeout_seconds)
        try:
            request = self._read_request(client, reader, connection)
            connection.target, connection.host, connection.port = request.target, request.host, request.port
            addresses = decide(self._policy, request)
            connection.outcome = "failed"
            upstream = self._connect(addresses, request.port, connection)
            _reply_success(client, connection.protocol)
            connection.outcome = "connected"
            self._relay(client, upstream, connection, reader.buffer)
        except Refusal as refusal:
            connection.reason = refusal.reason
            if refusal.reply:
                with contextlib.suppress(OSError):
                    _reply_refusal(client, connection.protocol, refusal)
                    _linger(client)
        except OSError as error:
            connection.reason = connection.reason or f"connection error: {error}"
        finally:
            self._finish(client, upstream, connection)

    def _read_request(self, client: socket.socket, reader: HeadReader, connection: _Connection) -> ConnectRequest:
        first = reader.fill(1)
        reader.buffer = first + reader.buffer  # looked at, not consumed
        if first == b"\x05":
            connection.protocol = "socks5"
            return read_socks5(client, reader)
        connection.protocol = "http-connect"
        return read_http_connect(reader)

    def _connect(self, addresses: list[IPAddress], port: int, connection: _Connection) -> socket.socket:
        errors: list[str] = []
        for address in addresses:
            connection.address = str(address)
            try:
                upstream = socket.create_connection((str(address), port), timeout=self._policy.connect_timeout_seconds)
            except OSError as error:
                errors.append(f"{address}: {error.strerror or error}")
                continue
            with self._lock:
                self._sockets.add(upstream)
            return upstream
        raise Refusal(f"could not connect: {'; '.join(errors)}", status=502, socks_code=SOCKS_REFUSED)

    def _relay(self, client: socket.socket, upstream: socket.socket, connection: _Connection, early: bytes) -> None:
        """Copy both ways until both sides have closed (or the run ends), counting bytes."""
        if early:
            upstream.sendall(early)
            connection.sent += len(early)
        client.settimeout(None)
        upstream.settimeout(None)
        peers = {client: upstream, upstream: client}
        with selectors.DefaultSelector() as selector:
            for sock in peers:
                selector.register(sock, selectors.EVENT_READ)
            while peers and not self._stopping.is_set():
                for key, _ in selector.select(timeout=_POLL_SECONDS):
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = source.recv(65536)
                    if not data:
                        selector.unregister(source)
                        with contextlib.suppress(OSError):
                            peers.pop(source).shutdown(socket.SHUT_WR)
                        continue
                    peers[source].sendall(data)
                    if source is client:
                        connection.sent += len(data)
                    else:
                        connection.received += len(data)

    def _finish(self, client: socket.socket, upstream: socket.socket | None, connection: _Connection) -> None:
        connection.ended = time.monotonic()
        with self._lock:
            self._active -= 1
            for sock in (client, upstream):
                if sock is not None:
                    self._sockets.discard(sock)
                    sock.close()


def _linger(client: socket.socket) -> None:
    """Read (and drop) what the client is still sending before closing, briefly and boundedly:
    closing with unread input resets the connection, and the client would lose the answer."""
    client.shutdown(socket.SHUT_WR)
    client.settimeout(_LINGER_SECONDS)
    for _ in range(_LINGER_READS):
        if not client.recv(65536):
            return


def _reply_success(client: socket.socket, protocol: str) -> None:
    if protocol == "socks5":
        client.sendall(bytes([5, 0, 0, 1, 0, 0, 0, 0, 0, 0]))
    else:
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")


def _reply_refusal(client: socket.socket, protocol: str, refusal: Refusal) -> None:
    if protocol == "socks5":
        client.sendall(bytes([5, refusal.socks_code, 0, 1, 0, 0, 0, 0, 0, 0]))
        return
    body = f"outbox egress proxy: refused: {refusal.reason}\n".encode()
    head = (
        f"HTTP/1.1 {refusal.status} {_HTTP_REASONS.get(refusal.status, 'Refused')}\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    client.sendall(head.encode() + body)
