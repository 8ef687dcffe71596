"""Fence the host's own services off from profiles that share the host network.

A profile with `network: true` (kubectl, terraform) shares the host's network namespace, so
without this it could connect to everything listening on this machine: the outbox's API, its
SMTP sink and metrics, PostgreSQL and Redis holding its state. Until egress goes through a proxy
with a per-tool allowlist, an nftables table drops that: packets from the sandbox's host uid
(`host_uid`, which commands run as when the outbox runs as root) to any address of this host
(`fib daddr type local`: 127.0.0.0/8, ::1 and every address on an interface) are rejected,
except to the local ports the deployment allows (DNS by default, for a local stub resolver);
link-local addresses (cloud metadata services at 169.254.169.254) are rejected as well.

The table is replaced atomically before every run of such a profile, so a firewall reload that
dropped it cannot open the host for long. Fail closed: when the table cannot be installed (not
root, so commands would run as the outbox's own uid; no `nft`; no CAP_NET_ADMIN), the profile
is unavailable and says why. Everything that is not this host stays reachable.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Collection
from pathlib import Path

TABLE_FAMILY = "inet"
TABLE_NAME = "outbox_sandbox"
_NFT_TIMEOUT_SECONDS = 10.0


def ruleset(uid: int, allowed_local_ports: Collection[int], reserved_ports: Collection[int] = ()) -> str:
    """The nftables script: replaces the outbox's table in one transaction.

    `reserved_ports` are the outbox's own (API, SMTP sink, database, broker): a command that
    binds one of them while it is free (the sink is not running, the API is restarting) gets no
    answer through to anyone, so the outbox never hands mail or requests to an impostor.
    """
    # Every packet that does not belong to an established flow: what the sandbox's uid opens (or
    # forges). Replies of a local service that happens to run as the same uid (a daemon running
    # as nobody) belong to flows others opened, and are left alone.
    owner = f"meta skuid {uid} ct state {{ new, invalid, untracked }}"
    rules: list[str] = []
    if allowed_local_ports:
        ports = ", ".join(str(port) for port in sorted(set(allowed_local_ports)))
        rules += [
            f"{owner} fib daddr type local tcp dport {{ {ports} }} accept",
            f"{owner} fib daddr type local udp dport {{ {ports} }} accept",
        ]
    rules += [
        # A TCP reset makes connect() fail at once with "connection refused".
        f"{owner} fib daddr type local meta l4proto tcp reject with tcp reset",
        f"{owner} fib daddr type local reject",
        f"{owner} ip daddr 169.254.0.0/16 meta l4proto tcp reject with tcp reset",
        f"{owner} ip daddr 169.254.0.0/16 reject",
        f"{owner} ip6 daddr fe80::/10 reject",
    ]
    if reserved_ports:
        ports = ", ".join(str(port) for port in sorted(set(reserved_ports)))
        answers = f"meta skuid {uid} ct direction reply"
        rules += [f"{answers} tcp sport {{ {ports} }} drop", f"{answers} udp sport {{ {ports} }} drop"]
    body = "\n".join(f"    {rule}" for rule in rules)
    table = f"{TABLE_FAMILY} {TABLE_NAME}"
    # `table` then `delete table`: deleting needs it to exist; both apply in one transaction
    # with the new definition, so there is no moment without the rules.
    return (
        f"table {table}\n"
        f"delete table {table}\n"
        f"table {table} {{\n"
        "  chain output {\n"
        "    type filter hook output priority filter; policy accept;\n"
        f"{body}\n"
        "  }\n"
        "}\n"
    )


def find_nft() -> Path | None:
    """`nft` on PATH, or where Debian and Fedora put it (sbin is often not on a service's PATH)."""
    found = shutil.which("nft") or shutil.which("/usr/sbin/nft") or shutil.which("/sbin/nft")
    return Path(found) if found else None


def install_host_fence(
    nft: Path | None, uid: int, allowed_local_ports: Collection[int], reserved_ports: Collection[int] = ()
) -> str | None:
    """Install (or replace) the table; None on success, else why it could not be installed."""
    if nft is None or not os.access(nft, os.X_OK):
        return "nft (nftables) is not installed or not executable"
    try:
        completed = subprocess.run(
            [str(nft), "-f", "-"],
            input=ruleset(uid, allowed_local_ports, reserved_ports).encode(),
            capture_output=True,
            timeout=_NFT_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"nft could not run: {error}"
    if completed.returncode != 0:
        detail = completed.stderr.decode("utf-8", errors="replace").strip()
        return f"nft refused the rules: {detail or completed.returncode}"
    return None


def remove_host_fence() -> None:
    """Delete the table (tests, and operators retiring the outbox); absent is fine."""
    nft = find_nft()
    if nft is not None:
        subprocess.run(
            [str(nft), "delete", "table", TABLE_FAMILY, TABLE_NAME],
            capture_output=True,
            timeout=_NFT_TIMEOUT_SECONDS,
            check=False,
        )
