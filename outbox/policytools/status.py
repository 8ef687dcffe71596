"""Which policy version each server runs, and whether they agree (`outbox policy status`).

Replicas reload independently (file watch, SIGHUP, the admin endpoint), so after a deploy or a
failed reload two replicas can decide the same call differently. Each server reports its version
at `GET /v1/policy`; this compares them.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True, slots=True)
class ServerPolicy:
    url: str
    version: str | None = None
    git_commit: str | None = None
    loaded_at: str | None = None
    last_reload_error: str | None = None
    unreachable: str | None = None


def fetch_server_policy(url: str, *, timeout: float = 5.0, token: str | None = None) -> ServerPolicy:
    """`token`: the admin token (or an agent key, which does not see the git commit)."""
    endpoint = url.rstrip("/") + "/v1/policy"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.get(endpoint, timeout=timeout, follow_redirects=False, trust_env=False, headers=headers)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        return ServerPolicy(url, unreachable=f"{type(exc).__name__}: {exc}")
    failure = body.get("last_reload_error")
    return ServerPolicy(
        url,
        version=body.get("version"),
        git_commit=body.get("git_commit"),
        loaded_at=body.get("loaded_at"),
        last_reload_error=failure.get("error") if isinstance(failure, dict) else None,
    )


def fetch_all(urls: Sequence[str], *, timeout: float = 5.0, token: str | None = None) -> list[ServerPolicy]:
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(urls)))) as pool:
        return list(pool.map(lambda url: fetch_server_policy(url, timeout=timeout, token=token), urls))


@dataclass(frozen=True, slots=True)
class SkewReport:
    servers: tuple[ServerPolicy, ...]
    expected: str | None = None

    @property
    def versions(self) -> set[str]:
        return {s.version for s in self.servers if s.version is not None}

    @property
    def unreachable(self) -> list[ServerPolicy]:
        return [s for s in self.servers if s.unreachable is not None]

    @property
    def skewed(self) -> bool:
        if len(self.versions) > 1:
            return True
        return self.expected is not None and self.versions != {self.expected}

    @property
    def ok(self) -> bool:
        return not self.skewed and not self.unreachable

    def format_text(self) -> str:
        rows = [("SERVER", "VERSION", "GIT COMMIT", "LOADED AT", "NOTE")]
        for s in self.servers:
            note = s.unreachable or (f"last reload failed: {s.last_reload_error}" if s.last_reload_error else "")
            rows.append((s.url, s.version or "-", (s.git_commit or "-")[:12], s.loaded_at or "-", note))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = ["  ".join([*(cell.ljust(widths[i]) for i, cell in enumerate(r[:4])), r[4]]).rstrip() for r in rows]
        if self.skewed:
            wanted = f"; expected {self.expected}" if self.expected else ""
            found = ", ".join(sorted(self.versions))
            lines.append(f"SKEW: servers run {len(self.versions)} policy versions ({found}){wanted}")
        elif self.versions:
            lines.append(f"all reachable servers run {next(iter(self.versions))}")
        if self.unreachable:
            lines.append(f"{len(self.unreachable)} server(s) unreachable")
        return "\n".join(lines)
