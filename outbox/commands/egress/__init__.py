"""Sandbox egress: a per-run proxy is the only way out of a sandbox's network namespace.

`destinations` (what may be reached), `addresses` (what may never be, unless configured),
`requests` (parsing hostile CONNECT/SOCKS5 input), `resolver` (the proxy's own DNS),
`proxy` (the server and its records), `bridge` (the socket's way into the sandbox).
"""

from outbox.commands.egress.bridge import (
    PROXY_HOST,
    PROXY_PORT,
    PROXY_SOCKET_INSIDE,
    bridged_command,
    proxy_endpoint,
    proxy_env,
)
from outbox.commands.egress.destinations import AllowedDestination, NamedDestination, host_pattern_problem
from outbox.commands.egress.proxy import EgressLog, EgressPolicy, EgressProxy, EgressRecord
from outbox.commands.egress.resolver import DnsResolver, parse_nameserver

__all__ = [
    "PROXY_HOST",
    "PROXY_PORT",
    "PROXY_SOCKET_INSIDE",
    "AllowedDestination",
    "DnsResolver",
    "EgressLog",
    "EgressPolicy",
    "EgressProxy",
    "EgressRecord",
    "NamedDestination",
    "bridged_command",
    "host_pattern_problem",
    "parse_nameserver",
    "proxy_endpoint",
    "proxy_env",
]
