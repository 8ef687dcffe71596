"""Memory and task limits per action: a cgroup v2 where one is delegated, else per-process rlimits.

A cgroup bounds the whole sandbox at once (every process of the command together), which
rlimits cannot: RLIMIT_AS is per process, RLIMIT_NPROC per uid in the sandbox's user namespace.
The outbox uses one only where it was given a subtree of its own to manage ("delegation": a
cgroup v2 hierarchy, the service's own cgroup writable, with the memory and pids controllers
available in it, as systemd's `Delegate=yes` or a container runtime's cgroup namespace give).
Elsewhere, hybrid or v1 hierarchies included, the per-process limits (prlimit) are what applies,
and `outbox sandbox check` and every result's isolation list say so ("limits:rlimits").

With delegation, the outbox's own processes move into a leaf (`outbox-service`: cgroup v2 lets
only leaves hold processes once controllers are enabled below), and each action gets a sibling
(`outbox-action-<id>`) with `memory.max`, `memory.swap.max` and `pids.max` from its profile.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CGROUP_FS = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
REQUIRED_CONTROLLERS = ("memory", "pids")
SERVICE_LEAF = "outbox-service"
ACTION_PREFIX = "outbox-action-"


@dataclass(frozen=True, slots=True)
class ResourceControl:
    """How the sandbox's memory and tasks are bounded on this machine, and why."""

    # The delegated cgroup the per-action cgroups go under; None: per-process rlimits.
    delegated: Path | None
    detail: str

    @property
    def mode(self) -> str:
        return "cgroup-v2" if self.delegated is not None else "rlimits"


def detect_resource_control(cgroup_fs: Path = CGROUP_FS, proc_self_cgroup: Path = PROC_SELF_CGROUP) -> ResourceControl:
    """Look at this process's cgroup: delegated v2 with memory and pids, or the rlimit fallback."""
    try:
        lines = [line for line in proc_self_cgroup.read_text().splitlines() if line]
    except OSError as error:
        return _rlimits(f"{proc_self_cgroup} unreadable ({error.strerror})")
    unified = [line.split(":", 2)[2] for line in lines if line.startswith("0::")]
    legacy = [line for line in lines if not line.startswith("0::")]
    if legacy or not unified:
        return _rlimits(f"cgroup v1 or hybrid hierarchy ({len(legacy)} v1 controller hierarchies), no v2 delegation")
    if not (cgroup_fs / "cgroup.controllers").is_file():
        return _rlimits(f"no cgroup v2 file system at {cgroup_fs}")
    own = cgroup_fs / unified[0].lstrip("/")
    try:
        available = (own / "cgroup.controllers").read_text().split()
    except OSError as error:
        return _rlimits(f"{own} unreadable ({error.strerror})")
    missing = [name for name in REQUIRED_CONTROLLERS if name not in available]
    if missing:
        return _rlimits(f"controller {', '.join(missing)} not available in {own}")
    writable = [own, own / "cgroup.subtree_control", own / "cgroup.procs"]
    if not all(os.access(path, os.W_OK) for path in writable):
        return _rlimits(f"{own} is not delegated to this process (not writable)")
    return ResourceControl(own, f"cgroup v2 delegated at {own}: memory.max and pids.max per action")


def _rlimits(why: str) -> ResourceControl:
    return ResourceControl(None, f"per-process rlimits (RLIMIT_AS, RLIMIT_NPROC in the user namespace): {why}")


def prepare_delegation(delegated: Path) -> None:
    """Move this service's processes into a leaf and enable memory and pids for the siblings.

    Idempotent: run before each action cgroup, because processes started since (the API's
    worker threads do not count; new processes do) land in the delegated cgroup itself.
    """
    leaf = delegated / SERVICE_LEAF
    leaf.mkdir(exist_ok=True)
    pids = (delegated / "cgroup.procs").read_text().split()
    for pid in pids:
        (leaf / "cgroup.procs").write_text(f"{pid}\n")
    enabled = (delegated / "cgroup.subtree_control").read_text().split()
    wanted = [f"+{name}" for name in REQUIRED_CONTROLLERS if name not in enabled]
    if wanted:
        (delegated / "cgroup.subtree_control").write_text(" ".join(wanted) + "\n")


@contextmanager
def action_cgroup(delegated: Path, *, memory_bytes: int, tasks: int) -> Iterator[Path]:
    """A fresh cgroup for one action, with its limits; removed afterwards (once it is empty)."""
    prepare_delegation(delegated)
    path = delegated / f"{ACTION_PREFIX}{secrets.token_hex(8)}"
    path.mkdir()
    try:
        (path / "memory.max").write_text(f"{memory_bytes}\n")
        if (path / "memory.swap.max").exists():
            (path / "memory.swap.max").write_text("0\n")
        (path / "pids.max").write_text(f"{tasks}\n")
        yield path
    finally:
        _remove_cgroup(path)


def enter_cgroup(path: Path, pid: int) -> None:
    """Move a process (with the threads of its group) into the cgroup."""
    (path / "cgroup.procs").write_text(f"{pid}\n")


def _remove_cgroup(path: Path) -> None:
    # A cgroup directory holds only kernel files and goes with rmdir once its processes are gone
    # (the sandbox dies with its parent); one still busy is left for the kernel to empty.
    with contextlib.suppress(OSError):
        path.rmdir()


SHELL = Path("/usr/bin/sh")
SETPRIV = Path("/usr/bin/setpriv")
# "$0" is the action's cgroup; the shell moves itself there, then becomes the command ("$@"),
# so the sandbox and everything it starts are in the cgroup from their first instruction.
_ENTER = 'echo $$ > "$0/cgroup.procs" && exec "$@"'


def in_action_cgroup(
    cgroup: Path, argv: Sequence[str], run_as: tuple[int, int] | None
) -> tuple[list[str], tuple[int, int] | None]:
    """`argv` started inside `cgroup`, and the identity to spawn that with.

    Moving into the cgroup takes the rights of the delegated subtree's owner (this service), so
    the shell runs as this service and `setpriv` drops to the sandbox's host uid afterwards.
    """
    if run_as is None:
        return [str(SHELL), "-c", _ENTER, str(cgroup), *argv], None
    uid, gid = run_as
    drop = [str(SETPRIV), f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]
    return [str(SHELL), "-c", _ENTER, str(cgroup), *drop, *argv], None
