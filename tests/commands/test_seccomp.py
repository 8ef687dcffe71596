"""The seccomp filter: every denied system call fails inside a real sandbox with its errno.

The calls are made directly (`syscall(2)` through python3's ctypes, inside the sandbox) with
arguments chosen so that, for most of them, the call without the filter succeeds or fails
differently: a bubblewrap that silently drops `--seccomp` shows the difference (last tests).
"""

from __future__ import annotations

import errno
import json
import signal
import socket
from pathlib import Path

import pytest

from outbox.commands import SandboxSettings
from outbox.commands.sandbox import SandboxResult, run_command
from outbox.commands.seccomp import (
    ADDR_NO_RANDOMIZE,
    CLONE_NAMESPACE_FLAGS,
    DENIED_SYSCALLS,
    denied_families,
    seccomp_problem,
    seccomp_program,
    socket_families,
    syscall_number,
)
from tests.commands.broken_bwrap import broken_bwrap

CALLS = r"""
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
for name, number, args in json.loads(sys.argv[1]):
    ctypes.set_errno(0)
    result = libc.syscall(ctypes.c_long(number), *[ctypes.c_long(arg) for arg in args])
    if result == 0 and name == "clone":
        os._exit(0)  # a child the filter should have prevented: gone at once
    print(json.dumps([name, result, ctypes.get_errno() if result == -1 else 0]), flush=True)
"""

# Arguments that, without the filter, make the call succeed or fail with another errno where
# one exists (pointer 1: EFAULT; PTRACE_TRACEME and UFFD_USER_MODE_ONLY: success).
ARGUMENTS: dict[str, tuple[int, ...]] = {
    "ptrace": (0, 0, 0, 0),
    "userfaultfd": (1,),
    "mount": (1, 1, 1, 0, 0),
    "umount2": (1, 0),
    "chroot": (1,),
    "unshare": (0,),
    "clone3": (0, 0),
}
# Where the kernel itself answers EPERM (a capability check comes first), only the filter's
# content shows the difference; the rest must behave differently without the filter.
SAME_ERRNO_WITHOUT_FILTER = frozenset(
    ["pivot_root", "fsopen", "fsmount", "fspick", "move_mount", "reboot", "swapon", "swapoff", "acct", "syslog"]
)
AF_KEY, AF_BLUETOOTH, AF_ALG, AF_VSOCK = 15, 31, 38, 40


def calls(
    settings: SandboxSettings, plan: list[tuple[str, int, tuple[int, ...]]], profile: str = "default"
) -> SandboxResult:
    python = "/usr/bin/python3"
    return run_command(
        [python, "-c", CALLS, json.dumps(plan)],
        settings=settings,
        profile=profile,
        timeout_seconds=30,
        output_cap_bytes=65536,
    )


def outcomes(result: SandboxResult) -> dict[str, tuple[int, int]]:
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    return {f"{name}#{index}": (value, code) for index, (name, value, code) in enumerate(rows)}


def denied_plan() -> list[tuple[str, int, tuple[int, ...]]]:
    return [(d.name, syscall_number(d.name), ARGUMENTS.get(d.name, (0, 0, 0, 0, 0, 0))) for d in DENIED_SYSCALLS]


@pytest.fixture(scope="module")
def denied_outcomes(require_sandbox: None) -> dict[str, tuple[int, int]]:
    return outcomes(calls(SandboxSettings(), denied_plan()))


@pytest.mark.parametrize("index", range(len(DENIED_SYSCALLS)), ids=[d.name for d in DENIED_SYSCALLS])
def test_each_denied_system_call_fails_with_its_errno(denied_outcomes: dict[str, tuple[int, int]], index: int) -> None:
    denied = DENIED_SYSCALLS[index]

    assert denied_outcomes[f"{denied.name}#{index}"] == (-1, denied.errno)


@pytest.mark.parametrize("flag", sorted(CLONE_NAMESPACE_FLAGS))
def test_clone_with_a_namespace_flag_is_refused(settings: SandboxSettings, flag: str) -> None:
    plan = [("clone", syscall_number("clone"), (CLONE_NAMESPACE_FLAGS[flag], 0, 0, 0, 0))]

    assert outcomes(calls(settings, plan)) == {"clone#0": (-1, errno.EPERM)}


def test_personality_may_not_turn_address_randomisation_off_but_may_be_asked(settings: SandboxSettings) -> None:
    number = syscall_number("personality")
    plan = [("personality", number, (ADDR_NO_RANDOMIZE,)), ("personality", number, (0xFFFFFFFF,))]

    result = outcomes(calls(settings, plan))

    assert result["personality#0"] == (-1, errno.EPERM)
    assert result["personality#1"][1] == 0


DENIED_EVERYWHERE = [socket.AF_NETLINK, socket.AF_PACKET, AF_KEY, AF_VSOCK, AF_BLUETOOTH, AF_ALG, 0, 0x1_0000_0001]


@pytest.mark.parametrize(
    ("profile", "allowed"),
    [("default", [socket.AF_UNIX]), ("network", [socket.AF_UNIX, socket.AF_INET, socket.AF_INET6])],
)
def test_sockets_of_the_profiles_families_only(settings: SandboxSettings, profile: str, allowed: list[int]) -> None:
    families = [socket.AF_UNIX, socket.AF_INET, socket.AF_INET6, *DENIED_EVERYWHERE]
    plan = [("socket", syscall_number("socket"), (family, socket.SOCK_DGRAM, 0)) for family in families]

    result = outcomes(calls(settings, plan, profile=profile))

    for index, family in enumerate(families):
        value, code = result[f"socket#{index}"]
        if family in allowed:
            assert value >= 0, f"family {family} refused ({code})"
        else:
            assert (value, code) == (-1, errno.EAFNOSUPPORT), f"family {family}"


def test_ordinary_work_still_runs_under_the_filter(settings: SandboxSettings) -> None:
    code = """
import os, socket, subprocess, threading
left, right = socket.socketpair()
left.send(b"ping")
threads = [threading.Thread(target=lambda: None) for _ in range(4)]
for thread in threads: thread.start()
for thread in threads: thread.join()
child = subprocess.run(["/usr/bin/echo", "child"], capture_output=True, text=True).stdout.strip()
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(right.recv(4).decode(), child, status["Seccomp"].strip())
"""
    result = run_command(
        ["/usr/bin/python3", "-c", code],
        settings=settings,
        profile="default",
        timeout_seconds=30,
        output_cap_bytes=4096,
    )

    assert (result.exit_code, result.stdout.strip()) == (0, "ping child 2")
    assert "seccomp" in result.isolation


def test_without_the_filter_the_calls_behave_differently(require_sandbox: None, shared_dir: Path) -> None:
    """The arguments above tell a filtered call from an unfiltered one (else the tests prove nothing)."""
    unfiltered = SandboxSettings(bwrap_path=broken_bwrap(shared_dir, "drop-seccomp"))

    result = outcomes(calls(unfiltered, denied_plan()))

    for index, denied in enumerate(DENIED_SYSCALLS):
        if denied.name not in SAME_ERRNO_WITHOUT_FILTER:
            assert result[f"{denied.name}#{index}"] != (-1, denied.errno), denied.name


def test_the_filter_denies_every_family_it_does_not_allow() -> None:
    assert denied_families(socket_families(network=False)) == [0, *range(2, 11)]
    assert denied_families(socket_families(network=True)) == [0, 3, 4, 5, 6, 7, 8, 9]
    with pytest.raises(ValueError, match="cannot be allowed"):
        denied_families({socket.AF_NETLINK})


def test_the_filter_is_built_on_x86_64_and_refused_elsewhere_with_the_reason() -> None:
    assert seccomp_problem("x86_64") is None
    assert len(seccomp_program(socket_families(network=False))) % 8 == 0  # whole BPF instructions
    for machine in ("aarch64", "i686", ""):
        problem = seccomp_problem(machine)
        assert problem is not None
        assert "written for x86_64" in problem
        assert "refused" in problem


def test_a_call_through_another_abi_kills_the_process(settings: SandboxSettings) -> None:
    """x32 numbers (bit 30 set) would get around every rule written for x86_64's numbers."""
    code = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
print("before", flush=True)
libc.syscall(ctypes.c_long(0x40000000 | 39))  # x32 getpid
print("survived", flush=True)
"""
    argv = ["/usr/bin/python3", "-c", code]
    result = run_command(argv, settings=settings, profile="default", timeout_seconds=30, output_cap_bytes=4096)

    assert result.stdout.splitlines() == ["before"]
    assert result.exit_code == 128 + signal.SIGSYS
