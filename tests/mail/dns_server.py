"""A real DNS server on loopback (dnslib), serving the TXT records a test publishes.

dns_checks talks to it through dnspython exactly as it would talk to a production resolver:
UDP on a free port, NXDOMAIN for unknown names, SERVFAIL for names a test marks as broken.
"""

from __future__ import annotations

import threading

from dnslib import QTYPE, RCODE, RR, TXT, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer


def _chunks(value: str) -> list[bytes]:
    """A TXT record is a list of character-strings of at most 255 bytes (RFC 1035 §3.3.14)."""
    data = value.encode()
    return [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]


class LoopbackDns(BaseResolver):  # type: ignore[misc]
    def __init__(self) -> None:
        self.txt: dict[str, list[str]] = {}
        self.servfail: set[str] = set()
        self.queries: list[str] = []
        self._lock = threading.Lock()
        self._server = DNSServer(
            self, address="127.0.0.1", port=0, logger=DNSLogger("-request,-reply,-truncated,-error")
        )

    @property
    def address(self) -> str:
        host, port = self._server.server.server_address
        return f"{host}:{port}"

    def reset(self) -> None:
        with self._lock:
            self.txt.clear()
            self.servfail.clear()
            self.queries.clear()

    def publish(self, name: str, *values: str) -> None:
        with self._lock:
            self.txt.setdefault(name.lower().rstrip("."), []).extend(values)

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply()
        name = str(request.q.qname).lower().rstrip(".")
        with self._lock:
            self.queries.append(name)
            if name in self.servfail:
                reply.header.rcode = RCODE.SERVFAIL
            elif name not in self.txt:
                reply.header.rcode = RCODE.NXDOMAIN
            elif request.q.qtype == QTYPE.TXT:
                for value in self.txt[name]:
                    reply.add_answer(RR(request.q.qname, QTYPE.TXT, rdata=TXT(_chunks(value)), ttl=60))
        return reply

    def start(self) -> LoopbackDns:
        self._server.start_thread()
        return self

    def stop(self) -> None:
        self._server.stop()
        self._server.server.server_close()
        self._server.thread.join(timeout=5)
