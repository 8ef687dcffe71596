"""Name resolution for the egress proxy: its own DNS client, never the system's `getaddrinfo`.

The sandbox has no resolver at all (no DNS can carry data out of it); the proxy resolves the
allowed names itself, with dnspython, against the nameservers the deployment configures
(`OUTBOX_SANDBOX_EGRESS_RESOLVER`), or those of the host's /etc/resolv.conf when it names none.
"""

from __future__ import annotations

from typing import Protocol

import dns.exception
import dns.resolver

from outbox.commands.egress.addresses import IPAddress, ip_literal


class ResolutionFailed(Exception):
    """The name has no usable address (NXDOMAIN, no answer, timeout, SERVFAIL)."""


class Resolves(Protocol):
    def resolve(self, host: str) -> list[IPAddress]: ...


def parse_nameserver(spec: str) -> tuple[str, int]:
    """`"ip"`, `"ip:port"` or `"[ipv6]:port"` into (address, port); ValueError otherwise."""
    host, port_text = spec, "53"
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        port_text = rest.removeprefix(":") or "53"
    elif spec.count(":") == 1:
        host, port_text = spec.split(":")
    if ip_literal(host) is None or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"nameserver {spec!r}: expected ip, ip:port or [ipv6]:port")
    return host, int(port_text)


class DnsResolver:
    """A and AAAA through dnspython; `nameserver` None reads /etc/resolv.conf's servers."""

    def __init__(self, nameserver: str | None, timeout_seconds: float) -> None:
        self._nameserver = None if nameserver is None else parse_nameserver(nameserver)
        self._timeout = timeout_seconds

    def _client(self) -> dns.resolver.Resolver:
        if self._nameserver is None:
            try:
                resolver = dns.resolver.Resolver()
            except dns.resolver.NoResolverConfiguration:
                raise ResolutionFailed(
                    "this host has no nameserver in /etc/resolv.conf: set OUTBOX_SANDBOX_EGRESS_RESOLVER"
                ) from None
        else:
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = [self._nameserver[0]]
            resolver.port = self._nameserver[1]
        resolver.lifetime = resolver.timeout = self._timeout
        return resolver

    def resolve(self, host: str) -> list[IPAddress]:
        client = self._client()
        addresses: list[IPAddress] = []
        errors: list[str] = []
        for record_type in ("A", "AAAA"):
            try:
                answer = client.resolve(host, record_type, search=False)
            except dns.resolver.NoAnswer:
                continue
            except dns.exception.DNSException as error:
                errors.append(f"{record_type}: {type(error).__name__}")
                continue
            addresses += [address for record in answer if (address := ip_literal(record.to_text())) is not None]
        if not addresses:
            raise ResolutionFailed(f"{host} has no address" + (f" ({', '.join(errors)})" if errors else ""))
        return addresses
