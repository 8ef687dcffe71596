"""Where a tool may connect: host patterns, ports, and the server-side named destinations.

A host pattern is either one exact host (a name or an IP address, written canonically) or
`*.` followed by a name of at least two labels. `*.example.com` matches any name that ends in
`.example.com` with one or more labels before it (`api.example.com`, `a.b.example.com`), never
`example.com` itself and never `badexample.com`; the `*` stands for whole labels only, and
only at the start. Patterns are compared with the canonical form of the requested host, so
`API.Example.COM.` is `api.example.com`.

Tool definitions name what they reach (`egress:` in `policies/tools/*.yaml`); the deployment
names where each named destination is (`OUTBOX_SANDBOX_DESTINATIONS`), the way it names secrets
and mounts: a definition says "the cluster the agent chose", the server says where that is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator

from outbox.commands.egress.addresses import URLRefused, canonical_host, ip_literal

Port = Annotated[StrictInt, Field(ge=1, le=65535)]
_WILDCARD = "*."


def host_pattern_problem(pattern: str) -> str | None:
    """Why `pattern` is not a valid host pattern (see the module docstring), or None."""
    name = pattern.removeprefix(_WILDCARD)
    if "*" in name:
        return f"{pattern!r}: '*' may only stand for whole labels at the start, as in *.example.com"
    try:
        # IPv6 addresses are written without brackets, as canonical_host returns them.
        canonical = canonical_host(f"[{name}]" if ":" in name else name)
    except URLRefused as error:
        return f"{pattern!r}: {error}"
    if canonical != name:
        return f"{pattern!r}: write the host in canonical form, {_WILDCARD if pattern != name else ''}{canonical}"
    if pattern != name and (ip_literal(name) is not None or name.count(".") < 1):
        return f"{pattern!r}: after '*.' comes a domain of two or more labels, not an address or a top-level domain"
    return None


def host_matches(pattern: str, host: str) -> bool:
    """Does the canonical `host` match the (valid) `pattern`?"""
    if pattern.startswith(_WILDCARD):
        suffix = pattern[1:]  # ".example.com"
        return host.endswith(suffix) and len(host) > len(suffix) and ip_literal(host) is None
    return host == pattern


class NamedDestination(BaseModel):
    """One server-side destination, e.g. the `staging` cluster's API server.

    `allow_private` lets the proxy connect to this destination even when it is, or resolves to,
    a loopback, private, link-local, CGNAT or metadata address (a cluster on 10.0.0.5, a kind
    cluster on 127.0.0.1). It is off by default and exists only here, never in a tool definition.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: StrictStr
    port: Port
    allow_private: StrictBool = False

    @field_validator("host")
    @classmethod
    def _valid_pattern(cls, host: str) -> str:
        if (problem := host_pattern_problem(host)) is not None:
            raise ValueError(problem)
        return host


@dataclass(frozen=True, slots=True)
class AllowedDestination:
    """One host pattern and port a run may connect to, with where the permission came from."""

    host: str
    port: int
    allow_private: bool = False
    # `destination staging` or `tool definition`: shown with a refusal, so the approver sees why.
    source: str = "tool definition"

    def matches(self, host: str, port: int) -> bool:
        return port == self.port and host_matches(self.host, host)


__all__ = ["AllowedDestination", "NamedDestination", "Port", "host_matches", "host_pattern_problem"]
