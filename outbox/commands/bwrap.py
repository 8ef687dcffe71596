"""The bubblewrap command line for one sandboxed run.

Everything the command can see is listed here: system directories read-only, a generated
`/etc/passwd`, a fresh `/tmp`, the scratch directory, the profile's read-only mounts, the
secrets (copied from memory file descriptors, never written to the host's disk) and, for a
profile with egress, the directory of the egress proxy's socket. The root of the sandbox is
remounted read-only last, so nothing outside scratch and `/tmp` is writable. Every sandbox has a
network namespace of its own (bwrap brings up its `lo`, nothing else), and no resolver
configuration is bound: there is no DNS inside.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from outbox.commands.egress.bridge import PROXY_SOCKET_DIR_INSIDE
from outbox.commands.profiles import SCRATCH_DIR, SandboxProfile

# The uid/gid the command runs as inside its user namespace ("nobody").
SANDBOX_UID = 65534
SANDBOX_GID = 65534

# Top-level system paths: bound read-only when they are directories, recreated as symlinks
# when (as on merged-/usr systems) they are symlinks into /usr.
_SYSTEM_TOP_LEVEL = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# The parts of /etc that programs need to start, resolve users, verify TLS and find time zones.
# Not the rest: /etc holds host configuration and sometimes credentials. Not resolv.conf either:
# names are resolved by the egress proxy, never inside the sandbox.
_ETC_ESSENTIALS = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/hosts",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    "/etc/crypto-policies",
)

PASSWD = f"nobody:x:{SANDBOX_UID}:{SANDBOX_GID}:nobody:{SCRATCH_DIR}:/usr/sbin/nologin\n"
GROUP = f"nogroup:x:{SANDBOX_GID}:\n"


@dataclass(frozen=True, slots=True)
class DataFile:
    """A file whose content bwrap copies from an inherited descriptor (`--ro-bind-data`)."""

    fd: int
    path: str
    mode: str = "0444"


def system_binds() -> list[str]:
    """Read-only /usr and the top-level system paths as they exist on this host."""
    args = ["--ro-bind", "/usr", "/usr"]
    for path in _SYSTEM_TOP_LEVEL:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return args


def limit_args(profile: SandboxProfile) -> list[str]:
    """`prlimit` options for the profile's per-process limits (soft = hard: no raising them)."""
    limits = {
        "cpu": profile.cpu_seconds,
        "as": profile.memory_bytes,
        "nofile": profile.open_files,
        "fsize": profile.file_size_bytes,
        "nproc": profile.processes,
        "core": 0,
    }
    return [f"--{name}={value}:{value}" for name, value in limits.items()]


def bwrap_argv(
    *,
    bwrap: Path,
    profile: SandboxProfile,
    scratch: Path,
    mounts: Mapping[str, Path],
    data_files: Sequence[DataFile],
    status_fd: int,
    seccomp_fd: int,
    command: Sequence[str],
    egress_socket_dir: Path | None = None,
) -> list[str]:
    """The full bwrap invocation; `command` is what runs inside (already wrapped in prlimit).

    bwrap loads the filter in `seccomp_fd` (`outbox.commands.seccomp`) just before the command.

    RLIMIT_NPROC is set inside the new user namespace (by `prlimit`, after bwrap created it)
    because the kernel counts tasks per uid per user namespace: set there, the limit bounds this
    sandbox's tree only, and a fork bomb in one sandbox cannot starve concurrent ones.
    """
    args = [
        str(bwrap),
        "--unshare-all",
        "--unshare-user",
        "--uid",
        str(SANDBOX_UID),
        "--gid",
        str(SANDBOX_GID),
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--hostname",
        "sandbox",
        *system_binds(),
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--size",
        str(profile.tmpfs_bytes),
        "--tmpfs",
        "/tmp",  # noqa: S108 - the sandbox's own fresh tmpfs, not the host's /tmp
        "--bind",
        str(scratch),
        SCRATCH_DIR,
        "--chdir",
        SCRATCH_DIR,
    ]
    for path in _ETC_ESSENTIALS:
        args += ["--ro-bind-try", path, path]
    if egress_socket_dir is not None:
        args += ["--ro-bind", str(egress_socket_dir), PROXY_SOCKET_DIR_INSIDE]
    for name, inside in profile.mounts.items():
        args += ["--ro-bind", str(mounts[name]), inside]
    for data in data_files:
        args += ["--perms", data.mode, "--ro-bind-data", str(data.fd), data.path]
    args += ["--remount-ro", "/", "--seccomp", str(seccomp_fd), "--json-status-fd", str(status_fd), "--", *command]
    return args
