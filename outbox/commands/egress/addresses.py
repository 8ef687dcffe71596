"""Which hosts and addresses a sandboxed command may reach, in one canonical form.

Every host a tool names (a CONNECT target, a SOCKS5 request, a pattern in a tool definition, a
server-side destination) goes through `outbox.urls.canonical_host` first: lower-case, IDNA,
one trailing dot dropped, `localhost` as `127.0.0.1`, IPv6 in RFC 5952 form, an IPv4-mapped
IPv6 address as the IPv4 address it is, and the IPv4 spellings parsers disagree on (`127.1`,
`0x7f.0.0.1`, `2130706433`, `0177.0.0.1`) refused. Matching and the address checks below then
compare one spelling only.
"""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from outbox.urls import URLRefused, canonical_host

IPAddress = IPv4Address | IPv6Address

# Named because an approver should see *why*, not only "not global". Everything else that is not
# globally routable (`is_global` false: private, reserved, documentation, benchmarking...) or is
# multicast is refused as well, under a generic name.
_NAMED_RANGES: tuple[tuple[IPv4Network | IPv6Network, str], ...] = (
    (IPv4Network("169.254.169.254/32"), "a cloud metadata service address"),
    (IPv4Network("100.100.100.200/32"), "a cloud metadata service address"),
    (IPv6Network("fd00:ec2::254/128"), "a cloud metadata service address"),
    (IPv4Network("0.0.0.0/8"), "an unspecified ('this host') address"),
    (IPv6Network("::/128"), "an unspecified ('this host') address"),
    (IPv4Network("127.0.0.0/8"), "a loopback address"),
    (IPv6Network("::1/128"), "a loopback address"),
    (IPv4Network("169.254.0.0/16"), "a link-local address"),
    (IPv6Network("fe80::/10"), "a link-local address"),
    (IPv4Network("10.0.0.0/8"), "a private address"),
    (IPv4Network("172.16.0.0/12"), "a private address"),
    (IPv4Network("192.168.0.0/16"), "a private address"),
    (IPv6Network("fc00::/7"), "a private (unique local) address"),
    (IPv4Network("100.64.0.0/10"), "a carrier-grade NAT (shared) address"),
    (IPv4Network("224.0.0.0/4"), "a multicast address"),
    (IPv6Network("ff00::/8"), "a multicast address"),
    (IPv6Network("64:ff9b:1::/48"), "a local-use NAT64 address"),
)
# IPv6 forms that carry an IPv4 address the network may deliver to: NAT64 (RFC 6052) and 6to4.
_NAT64 = IPv6Network("64:ff9b::/96")


def ip_literal(host: str) -> IPAddress | None:
    """The address a canonical host is, or None for a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def forbidden_address(address: IPAddress) -> str | None:
    """Why `address` is not a destination without `allow_private`, or None for a global one."""
    if isinstance(address, IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            reason = forbidden_address(embedded)
            return None if reason is None else f"{reason} ({address} carries {embedded})"
    for network, reason in _NAMED_RANGES:
        if address.version == network.version and address in network:
            return reason
    if not address.is_global:
        return "an address that is not globally routable (reserved, documentation or special-purpose)"
    return None


def _embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return IPv4Address(address.packed[12:])
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address.packed[:12] == bytes(12) and int(address) > 1:
        return IPv4Address(address.packed[12:])  # deprecated IPv4-compatible ::a.b.c.d
    return None


__all__ = ["IPAddress", "URLRefused", "canonical_host", "forbidden_address", "ip_literal"]
