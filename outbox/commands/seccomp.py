"""The seccomp filter every sandbox runs under: system calls no tool needs fail, by design.

Namespaces and dropped capabilities already stop most of these calls, but each one is kernel
attack surface that a tool (kubectl, terraform, git) never uses: the filter removes it, so a
kernel bug behind one of them is out of reach too. The filter allows by default and denies the
list below (`DENIED_SYSCALLS`, plus argument rules for `clone`, `personality` and `socket`);
docs/operations.md ("Seccomp") explains each entry.

Built with libseccomp (through `pyseccomp`, a ctypes binding), exported as a classic BPF
program and handed to bubblewrap's `--seccomp FD`, which loads it just before it executes the
command (after building the sandbox, which needs some of these calls itself).

Only x86_64 is supported: the system call numbers and the argument rules are written for it,
and a filter for another architecture that was never tested would give a false sense of safety.
Elsewhere `seccomp_problem()` says so and the sandbox refuses to run (fail closed).
"""

from __future__ import annotations

import errno
import functools
import os
import platform
import socket
from collections.abc import Collection
from dataclasses import dataclass

SUPPORTED_MACHINES = frozenset({"x86_64"})


@dataclass(frozen=True, slots=True)
class DeniedSyscall:
    """One system call the filter makes fail, the errno it returns and why it is denied."""

    name: str
    errno: int
    why: str


def _eperm(names: str, why: str) -> tuple[DeniedSyscall, ...]:
    return tuple(DeniedSyscall(name, errno.EPERM, why) for name in names.split())


DENIED_SYSCALLS: tuple[DeniedSyscall, ...] = (
    *_eperm("ptrace process_vm_readv process_vm_writev pidfd_getfd", "reading or steering another process"),
    *_eperm(
        "mount umount2 pivot_root chroot fsopen fsconfig fsmount fspick move_mount open_tree mount_setattr",
        "changing the file system view the sandbox was built with",
    ),
    *_eperm("unshare setns", "new or other namespaces (new user namespaces regain capabilities)"),
    # glibc falls back to clone(2) when clone3 is not implemented; clone3's flags live in memory,
    # where a BPF filter cannot read them, so ENOSYS rather than a rule on its flags.
    DeniedSyscall("clone3", errno.ENOSYS, "flags out of the filter's sight; libc falls back to clone"),
    *_eperm("keyctl add_key request_key", "the kernel keyring (shared per uid across sandboxes)"),
    *_eperm("bpf perf_event_open", "loading kernel programs, observing the host"),
    *_eperm("kexec_load kexec_file_load reboot", "replacing or stopping the kernel"),
    *_eperm("init_module finit_module delete_module", "loading kernel code"),
    *_eperm("open_by_handle_at name_to_handle_at", "opening files by handle, around the mount view"),
    *_eperm("userfaultfd", "a classic aid to kernel exploits (stalling the kernel on a page fault)"),
    *_eperm("io_uring_setup io_uring_enter io_uring_register", "a second system call path seccomp cannot see"),
    *_eperm("swapon swapoff acct quotactl syslog", "host administration"),
)

# Flags of clone(2) that create namespaces; any of them makes clone fail with EPERM.
CLONE_NAMESPACE_FLAGS: dict[str, int] = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}
# personality(2) may not turn address space randomisation off (bit 31 set is the query 0xffffffff).
ADDR_NO_RANDOMIZE = 0x0040000
_PERSONALITY_QUERY_BIT = 0x80000000

# Socket families: AF_UNIX always (local IPC, the egress bridge's socket); AF_INET and AF_INET6
# only when the profile reaches the network. Every other family fails with EAFNOSUPPORT, which
# programs already handle as "not available here" (AF_NETLINK, AF_PACKET, AF_KEY, AF_VSOCK...).
ALWAYS_ALLOWED_FAMILIES = frozenset({socket.AF_UNIX})
NETWORK_FAMILIES = frozenset({socket.AF_INET, socket.AF_INET6})
# Families below this are denied one by one; this one and all above by a single comparison.
_FAMILY_CEILING = 11


class SeccompUnavailable(Exception):
    """No filter can be built here; the message says why."""


def socket_families(*, network: bool) -> frozenset[int]:
    """The socket families a profile's commands may create."""
    return ALWAYS_ALLOWED_FAMILIES | (NETWORK_FAMILIES if network else frozenset())


def seccomp_problem(machine: str | None = None) -> str | None:
    """Why no seccomp filter can be built on this machine (or on `machine`), or None."""
    machine = platform.machine() if machine is None else machine
    if machine not in SUPPORTED_MACHINES:
        return (
            f"the seccomp filter is written for x86_64 and this machine is {machine or 'unknown'}:"
            " sandboxed commands are refused rather than run without it"
        )
    try:
        import pyseccomp  # noqa: F401, PLC0415 - its import loads libseccomp.so, which may be missing
    except (ImportError, RuntimeError, OSError) as error:
        return f"libseccomp is not usable ({error}): install libseccomp2"
    return None


@functools.lru_cache(maxsize=8)
def seccomp_program(families: frozenset[int]) -> bytes:
    """The compiled BPF program for a profile allowing `families`; SeccompUnavailable if none."""
    problem = seccomp_problem()
    if problem is not None:
        raise SeccompUnavailable(problem)
    import pyseccomp  # noqa: PLC0415 - see seccomp_problem

    rules = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    # Another ABI on the same kernel (i386 through int 0x80, x32) would bypass every rule.
    rules.set_attr(pyseccomp.Attr.ACT_BADARCH, pyseccomp.KILL_PROCESS)
    for denied in DENIED_SYSCALLS:
        rules.add_rule(pyseccomp.ERRNO(denied.errno), denied.name)
    for flag in CLONE_NAMESPACE_FLAGS.values():
        rules.add_rule(pyseccomp.ERRNO(errno.EPERM), "clone", pyseccomp.Arg(0, pyseccomp.MASKED_EQ, flag, flag))
    no_aslr = pyseccomp.Arg(0, pyseccomp.MASKED_EQ, ADDR_NO_RANDOMIZE | _PERSONALITY_QUERY_BIT, ADDR_NO_RANDOMIZE)
    rules.add_rule(pyseccomp.ERRNO(errno.EPERM), "personality", no_aslr)
    for family in denied_families(families):
        rules.add_rule(pyseccomp.ERRNO(errno.EAFNOSUPPORT), "socket", pyseccomp.Arg(0, pyseccomp.EQ, family))
    # All 64 bits compared: a family with high bits set (the kernel reads only the low 32) is caught here.
    ceiling = pyseccomp.Arg(0, pyseccomp.GE, _FAMILY_CEILING)
    rules.add_rule(pyseccomp.ERRNO(errno.EAFNOSUPPORT), "socket", ceiling)
    # A memory file rather than a pipe: export writes it all before anything reads.
    fd = os.memfd_create("outbox-seccomp", os.MFD_CLOEXEC)
    with os.fdopen(fd, "w+b") as program:
        rules.export_bpf(program)
        program.seek(0)
        return program.read()


def denied_families(allowed: Collection[int]) -> list[int]:
    """Families below the ceiling that are not allowed (the ceiling and above are always denied)."""
    if any(family >= _FAMILY_CEILING for family in allowed):
        raise ValueError(f"socket families from {_FAMILY_CEILING} up cannot be allowed")
    return [family for family in range(_FAMILY_CEILING) if family not in allowed]


def syscall_number(name: str) -> int:
    """The x86_64 number of a system call (for probes that call it directly)."""
    import pyseccomp  # noqa: PLC0415 - see seccomp_problem

    number = int(pyseccomp.resolve_syscall(pyseccomp.Arch.X86_64, name))
    if number < 0:
        raise ValueError(f"unknown system call {name!r}")
    return number
