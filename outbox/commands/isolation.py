"""`outbox sandbox check`: which isolation actually works on this machine, and each profile's claims.

Containers and hardened kernels differ in what they allow (unprivileged user namespaces,
cgroup namespaces, nested namespaces), so the report is made by trying each one, as the
sandbox will run it (same bwrap, same host uid), not by reading kernel settings. Then each
profile's isolation probe (`outbox.commands.probes`) runs inside it and checks every claim.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from outbox.commands.probes import ProbeReport, probe_profile
from outbox.commands.sandbox import SandboxError, SandboxSettings, probe_bwrap, run_command
from outbox.commands.seccomp import seccomp_problem

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
    # Profile name -> why its commands cannot run here (unnamed mount, a failed claim).
    unavailable_profiles: dict[str, str] = field(default_factory=dict)
    # Each probed profile's claims, in the order of the settings' profiles.
    probes: tuple[ProbeReport, ...] = ()

    @property
    def execution_mode(self) -> str:
        if self.sandbox_available:
            return "sandboxed"
        if self.allow_unsandboxed:
            return "UNSANDBOXED (development only; recorded on every action)"
        return "refused (fail closed: no command runs)"

    @property
    def claims_hold(self) -> bool:
        """Every probed profile's every claim holds (profiles not probed are listed as unavailable)."""
        return all(report.ok for report in self.probes)

    def rows(self) -> list[tuple[str, str, str]]:
        """(check, status, detail) rows: the checks, each profile's claims, the unavailable
        profiles, then the execution mode."""
        rows = [(check.name, _status(check.ok), check.detail) for check in self.checks]
        rows += [
            (f"profile {report.profile}: {claim.name}", _status(claim.ok), claim.detail)
            for report in self.probes
            for claim in report.claims
        ]
        rows += [(f"profile {name}", "UNAVAILABLE", why) for name, why in sorted(self.unavailable_profiles.items())]
        rows.append(("command execution", "ok" if self.sandbox_available else "FAILED", self.execution_mode))
        return rows


def _status(ok: bool) -> str:
    return "ok" if ok else "FAILED"


def check_isolation(settings: SandboxSettings) -> IsolationReport:
    checks = _machine_checks(settings)
    limits = settings.resource_control()
    checks.append(IsolationCheck(f"limits per action ({limits.mode})", ok=True, detail=limits.detail))
    full = _full_sandbox_check(settings)
    checks.append(full)
    unavailable: dict[str, str] = {}
    probes: list[ProbeReport] = []
    for name in settings.profiles:
        problem = settings.profile_problem(name)
        if problem is None and full.ok:
            report = probe_profile(settings, name)
            probes.append(report)
            problem = report.problem()
        if problem is not None:
            unavailable[name] = problem
    return IsolationReport(
        tuple(checks),
        sandbox_available=full.ok,
        allow_unsandboxed=settings.allow_unsandboxed,
        unavailable_profiles=unavailable,
        probes=tuple(probes),
    )


def _machine_checks(settings: SandboxSettings) -> list[IsolationCheck]:
    """bubblewrap and each namespace, seccomp, prlimit and the host identity."""
    checks: list[IsolationCheck] = []
    bwrap = settings.resolved_bwrap()
    if bwrap is None:
        checks.append(IsolationCheck("bubblewrap", ok=False, detail="bwrap not found or not executable"))
    else:
        checks.append(IsolationCheck("bubblewrap", ok=True, detail=f"{bwrap} ({_bwrap_version(bwrap)})"))
        for name, flags in _NAMESPACE_PROBES:
            problem = probe_bwrap(bwrap, settings.run_as(), flags)
            checks.append(IsolationCheck(name, ok=problem is None, detail=problem or "works"))
    seccomp = seccomp_problem()
    checks.append(IsolationCheck("seccomp filter (libseccomp)", ok=seccomp is None, detail=seccomp or "builds"))
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
    return checks


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
