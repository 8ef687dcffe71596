"""Memory and task limits: a delegated cgroup v2 where there is one, per-process rlimits elsewhere.

This machine's hierarchy is what it is (CI's is cgroup v1/hybrid), so the "delegated" branch is
shown on a cgroup file system laid out in a temporary directory: the files the kernel would
show, plain files here. What that cannot show (the kernel enforcing memory.max and pids.max)
is the kernel's part; see docs/operations.md ("Resource limits").
"""

from __future__ import annotations

from pathlib import Path

import pytest

from outbox.commands import SandboxSettings, builtin_profiles, run_command
from outbox.commands.cgroups import (
    ACTION_PREFIX,
    SERVICE_LEAF,
    action_cgroup,
    detect_resource_control,
    enter_cgroup,
)

OWN = "system.slice/outbox.service"


def fake_cgroupfs(root: Path, *, controllers: str = "cpu memory pids", pids: str = "100\n101\n") -> Path:
    """A cgroup v2 file system with this service's cgroup at OWN, delegated (writable)."""
    service = root / OWN
    service.mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu io memory pids\n")
    (service / "cgroup.controllers").write_text(controllers + "\n")
    (service / "cgroup.subtree_control").write_text("\n")
    (service / "cgroup.procs").write_text(pids)
    return service


def proc_self_cgroup(directory: Path, text: str) -> Path:
    path = directory / "cgroup"
    path.write_text(text)
    return path


def test_a_delegated_v2_cgroup_with_memory_and_pids_is_used(tmp_path: Path) -> None:
    service = fake_cgroupfs(tmp_path / "fs")

    control = detect_resource_control(tmp_path / "fs", proc_self_cgroup(tmp_path, f"0::/{OWN}\n"))

    assert control.mode == "cgroup-v2"
    assert control.delegated == service
    assert "memory.max and pids.max per action" in control.detail


@pytest.mark.parametrize(
    ("proc", "controllers", "why"),
    [
        ("12:memory:/x\n4:pids:/x\n0::/x\n", "cpu memory pids", "cgroup v1 or hybrid hierarchy"),
        ("4:pids:/x\n", "cpu memory pids", "cgroup v1 or hybrid hierarchy"),
        (f"0::/{OWN}\n", "cpu pids", "controller memory not available"),
        (f"0::/{OWN}\n", "cpu", "controller memory, pids not available"),
        ("0::/elsewhere\n", "cpu memory pids", "unreadable"),
    ],
)
def test_without_delegation_the_per_process_rlimits_apply_and_say_why(
    tmp_path: Path, proc: str, controllers: str, why: str
) -> None:
    fake_cgroupfs(tmp_path / "fs", controllers=controllers)

    control = detect_resource_control(tmp_path / "fs", proc_self_cgroup(tmp_path, proc))

    assert control.mode == "rlimits"
    assert control.delegated is None
    assert control.detail.startswith("per-process rlimits (RLIMIT_AS, RLIMIT_NPROC in the user namespace): ")
    assert why in control.detail


def test_a_unified_line_without_a_v2_file_system_is_not_delegation(tmp_path: Path) -> None:
    control = detect_resource_control(tmp_path / "no-fs", proc_self_cgroup(tmp_path, f"0::/{OWN}\n"))

    assert control.mode == "rlimits"
    assert "no cgroup v2 file system" in control.detail


def test_this_machine_is_detected_from_its_own_proc_self_cgroup() -> None:
    lines = Path("/proc/self/cgroup").read_text().splitlines()

    control = detect_resource_control()

    if any(not line.startswith("0::") for line in lines):
        assert control.mode == "rlimits"
        assert "cgroup v1 or hybrid hierarchy" in control.detail
    else:
        assert control.mode in {"cgroup-v2", "rlimits"}


def test_an_action_cgroup_gets_the_profiles_limits_and_the_service_moves_to_a_leaf(tmp_path: Path) -> None:
    service = fake_cgroupfs(tmp_path / "fs")

    with action_cgroup(service, memory_bytes=512 * 1024 * 1024, tasks=64) as cgroup:
        enter_cgroup(cgroup, 4242)
        limits = {name: (cgroup / name).read_text() for name in ("memory.max", "pids.max", "cgroup.procs")}
        name = cgroup.name

    assert name.startswith(ACTION_PREFIX)
    assert limits == {"memory.max": "536870912\n", "pids.max": "64\n", "cgroup.procs": "4242\n"}
    assert (service / "cgroup.subtree_control").read_text() == "+memory +pids\n"
    # Both of the service's processes were moved into the leaf (the fake file keeps the last).
    assert (service / SERVICE_LEAF / "cgroup.procs").read_text() == "101\n"


def test_a_command_runs_inside_its_action_cgroup_with_the_profiles_limits(
    require_sandbox: None, shared_dir: Path
) -> None:
    """The wiring, on the laid-out file system: the shell that starts bubblewrap enters the
    action's cgroup first (its pid lands in cgroup.procs), then the sandbox runs as usual."""
    service = fake_cgroupfs(shared_dir / "fs")
    proc = proc_self_cgroup(shared_dir, f"0::/{OWN}\n")
    settings = SandboxSettings(cgroup_fs=shared_dir / "fs", proc_self_cgroup=proc)
    code = "import os; print(os.getuid(), os.getppid() > 0)"

    result = run_command(
        ["/usr/bin/python3", "-c", code],
        settings=settings,
        profile="default",
        timeout_seconds=30,
        output_cap_bytes=4096,
    )

    (cgroup,) = service.glob(f"{ACTION_PREFIX}*")
    assert (result.exit_code, result.stdout.strip()) == (0, "65534 True")
    assert "cgroup:memory.max,pids.max" in result.isolation
    default = builtin_profiles()["default"]
    assert (cgroup / "memory.max").read_text() == f"{default.memory_bytes}\n"
    assert (cgroup / "pids.max").read_text() == f"{default.processes}\n"
    assert int((cgroup / "cgroup.procs").read_text()) > 1
