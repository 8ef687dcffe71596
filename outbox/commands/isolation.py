"""`outbox sandbox check`: which isolation actually works on this machine.

Containers and hardened kernels differ in what they allow (unprivileged user namespaces,
cgroup namespaces, nested namespaces), so the report is made by trying each one, as the
sandbox will run it (same bwrap, same host uid), not by reading kernel settings.
"""

from __future__ import annotations

import os
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from outbox.commands.profiles import SandboxProfile
from outbox.commands.sandbox import SandboxError, SandboxSettings, probe_bwrap, run_command

# Connects with bash's /dev/tcp: no python or netcat needed inside the sandbox.
_BASH = Path("/usr/bin/bash")

_NAMESPACE_PROBES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("user + mount namespaces (uid 65534)", ("--unshare-user", "--uid", "65534", "--gid", "65534")),
    ("pid namespace", ("--unshare-user", "--unshare-pid")),
    ("network namespace", ("--unshare-user", "--unshare-net")),
    ("ipc namespace", ("--unshare-user", "--unshare-ipc")),
    ("uts namespace", ("--unshare-user", "--unshare-uts")),
    ("cgroup namespace", ("--unshare-user", "--unshare-cgroup")),
    ("nested user namespaces disabled", ("--unshare-user", "--disable-userns")),
)


@dataclass(frozen=True, slots=True)
class IsolationCheck:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class IsolationReport:
    """The outcome of every probe, and what the outbox will do with commands as a result."""

    checks: tuple[IsolationCheck, ...]
    sandbox_available: bool
    allow_unsandboxed: bool
    # Profile name -> why its commands cannot run here (unnamed mount, host services unfenced).
    unavailable_profiles: dict[str, str] = field(default_factory=dict)

    @property
    def execution_mode(self) -> str:
        if self.sandbox_available:
            return "sandboxed"
        if self.allow_unsandboxed:
            return "UNSANDBOXED (development only; recorded on every action)"
        return "refused (fail closed: no command runs)"

    def rows(self) -> list[tuple[str, str, str]]:
        """(check, status, detail) rows: the probes, the unavailable profiles, then the execution mode."""
        rows = [(check.name, "ok" if check.ok else "FAILED", check.detail) for check in self.checks]
        rows += [(f"profile {name}", "UNAVAILABLE", why) for name, why in sorted(self.unavailable_profiles.items())]
        rows.append(("command execution", "ok" if self.sandbox_available else "FAILED", self.execution_mode))
        return rows


def check_isolation(settings: SandboxSettings) -> IsolationReport:
    checks: list[IsolationCheck] = []
    bwrap = settings.resolved_bwrap()
    if bwrap is None:
        checks.append(IsolationCheck("bubblewrap", ok=False, detail="bwrap not found or not executable"))
    else:
        checks.append(IsolationCheck("bubblewrap", ok=True, detail=f"{bwrap} ({_bwrap_version(bwrap)})"))
        for name, flags in _NAMESPACE_PROBES:
            problem = probe_bwrap(bwrap, settings.run_as(), flags)
            checks.append(IsolationCheck(name, ok=problem is None, detail=problem or "works"))
    prlimit_ok = os.access(settings.prlimit_path, os.X_OK)
    checks.append(
        IsolationCheck(
            "resource limits (prlimit)",
            ok=prlimit_ok,
            detail=str(settings.prlimit_path) if prlimit_ok else f"{settings.prlimit_path} not executable",
        )
    )
    run_as = settings.run_as()
    identity = (
        f"commands run as host uid {run_as[0]} (root would be exempt from the process limit)"
        if run_as is not None
        else f"commands run as this process's uid {os.geteuid()}"
    )
    checks.append(IsolationCheck("host identity", ok=True, detail=identity))
    full = _full_sandbox_check(settings)
    checks.append(full)
    fence = _host_fence_check(settings)
    checks.append(fence)
    unavailable: dict[str, str] = {}
    for name, profile in settings.profiles.items():
        problem = settings.profile_problem(name)
        if problem is None and profile.network and not fence.ok:
            problem = f"this host's services are not fenced off: {fence.detail}"
        if problem is not None:
            unavailable[name] = problem
    return IsolationReport(
        tuple(checks),
        sandbox_available=full.ok,
        allow_unsandboxed=settings.allow_unsandboxed,
        unavailable_profiles=unavailable,
    )


def _host_fence_check(settings: SandboxSettings) -> IsolationCheck:
    """Install the host fence, then prove it: a host-network sandbox must not reach a local port."""
    name = "host services fenced (network profiles)"
    probe = SandboxProfile(name="host-fence-probe", description="probe", network=True)
    probing = settings.model_copy(update={"profiles": {probe.name: probe}})
    problem = probing.profile_problem(probe.name)
    if problem is not None:
        return IsolationCheck(name, ok=False, detail=problem)
    if not _BASH.is_file():
        return IsolationCheck(name, ok=False, detail=f"cannot prove it: no {_BASH} to connect with")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        connect = f"exec 3<>/dev/tcp/127.0.0.1/{port} && echo CONNECTED"
        try:
            result = run_command(
                [str(_BASH), "-c", connect],
                settings=probing,
                profile=probe.name,
                timeout_seconds=10,
                output_cap_bytes=4096,
            )
        except SandboxError as error:
            return IsolationCheck(name, ok=False, detail=str(error))
    if "CONNECTED" in result.stdout or result.exit_code == 0:
        return IsolationCheck(name, ok=False, detail=f"a sandboxed command reached 127.0.0.1:{port}")
    allowed = ", ".join(map(str, settings.network_allowed_local_ports)) or "none"
    return IsolationCheck(
        name,
        ok=True,
        detail=(
            f"uid {settings.host_uid} refused on every local address (probed 127.0.0.1:{port});"
            f" allowed local ports: {allowed}"
        ),
    )


def _full_sandbox_check(settings: SandboxSettings) -> IsolationCheck:
    strict = settings.model_copy(update={"allow_unsandboxed": False})
    name = "full sandbox (profile default)"
    try:
        result = run_command(["true"], settings=strict, profile="default", timeout_seconds=10, output_cap_bytes=4096)
    except SandboxError as error:
        return IsolationCheck(name, ok=False, detail=str(error))
    if result.exit_code != 0:
        return IsolationCheck(name, ok=False, detail=f"`true` exited {result.exit_code}: {result.stderr.strip()}")
    return IsolationCheck(name, ok=True, detail=", ".join(result.isolation))


def _bwrap_version(bwrap: Path) -> str:
    try:
        completed = subprocess.run([str(bwrap), "--version"], capture_output=True, timeout=10, check=False, text=True)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"version unknown: {error}"
    return completed.stdout.strip() or "version unknown"
