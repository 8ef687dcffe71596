"""Isolation that proves itself: before a profile's first command, a probe checks each claim.

A sandbox that silently does not apply (a container whose bubblewrap drops a namespace, a
wrapper that loses `--seccomp`) looks exactly like one that works until something escapes. So
before the first command of each profile runs, and in `outbox sandbox check`, the outbox runs a
probe inside that profile exactly as it runs commands (`run_command`: same argv builder, same
host uid, same seccomp filter, same egress bridge) and checks what the profile claims:

- no route out except the proxy (a listener on the host's loopback and any other address are
  unreachable), no DNS, the outbox's own ports unreachable (directly and through the proxy);
- the file system read-only outside /scratch and /tmp;
- the seccomp filter active (denied calls fail with the expected errno);
- uid 65534 with no capabilities and no_new_privs;
- with egress, the proxy answering on its port.

If any claim fails the profile refuses to run (fail closed), and tools of that profile say which
claim failed (`CommandTool.unavailable_reason`, hence `/readyz` and `/v1/tools`). A passed probe
is remembered for the process and these settings; a failed one is probed again after
`FAILED_PROBE_REUSE_SECONDS`, so a repaired host is seen without a restart.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from outbox.commands.egress import proxy_endpoint
from outbox.commands.probe_script import PROBE_SCRIPT
from outbox.commands.profiles import SCRATCH_DIR
from outbox.commands.sandbox import (
    FAILED_PROBE_REUSE_SECONDS,
    SandboxError,
    SandboxSettings,
    run_command,
    sandbox_problem,
)
from outbox.commands.seccomp import seccomp_problem, syscall_number

# Where the probe's interpreter is: Debian's, or the python image's (/usr/local is under /usr,
# which every sandbox sees read-only).
PYTHON_CANDIDATES = (Path("/usr/bin/python3"), Path("/usr/local/bin/python3"))
_PROBE_TIMEOUT_SECONDS = 30.0
_PROBE_OUTPUT_BYTES = 64 * 1024
_CLONE_NEWUSER = 0x10000000
_AF_NETLINK, _AF_PACKET, _SOCK_RAW = 16, 17, 3
# (system call, arguments, errno the filter answers): each succeeds or fails differently
# without the filter (ptrace(PTRACE_TRACEME) and userfaultfd(UFFD_USER_MODE_ONLY) succeed).
# What every profile claims (and egress profiles one more); a report lacking one is a failure.
CLAIMS = (
    "unprivileged uid, no capabilities",
    "file system read-only outside scratch",
    "seccomp filter active",
    "no route out except the proxy",
    "no DNS",
    "the outbox's ports unreachable",
)
EGRESS_CLAIM = "egress proxy answers"
_DENIED_PROBES: tuple[tuple[str, tuple[int, ...], int], ...] = (
    ("ptrace", (0, 0, 0, 0), errno.EPERM),
    ("userfaultfd", (1,), errno.EPERM),
    ("unshare", (_CLONE_NEWUSER,), errno.EPERM),
    ("clone3", (0, 0), errno.ENOSYS),
    ("socket", (_AF_NETLINK, _SOCK_RAW, 0), errno.EAFNOSUPPORT),
    ("socket", (_AF_PACKET, _SOCK_RAW, 0), errno.EAFNOSUPPORT),
)


@dataclass(frozen=True, slots=True)
class Claim:
    """One thing a profile promises, and whether the probe found it true."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class ProbeReport:
    profile: str
    claims: tuple[Claim, ...]

    @property
    def ok(self) -> bool:
        return bool(self.claims) and all(claim.ok for claim in self.claims)

    def problem(self) -> str | None:
        """Why the profile refuses to run, naming each failed claim; None when all hold."""
        failed = [f"{claim.name}: {claim.detail}" for claim in self.claims if not claim.ok]
        if not failed:
            return None
        return f"sandbox profile {self.profile!r} failed its isolation probe ({'; '.join(failed)})"


def python_for_probe() -> Path | None:
    return next((path for path in PYTHON_CANDIDATES if os.access(path, os.X_OK)), None)


def probe_profile(settings: SandboxSettings, profile: str) -> ProbeReport:
    """Run the probe inside `profile` now and report every claim."""
    python = python_for_probe()
    if python is None:
        shown = " or ".join(map(str, PYTHON_CANDIDATES))
        return _failed(profile, "probe interpreter", f"no {shown} to run the probe with")
    if (problem := seccomp_problem()) is not None:
        return _failed(profile, "seccomp filter active", problem)
    # The probe proves the sandbox; it never runs unsandboxed, whatever development allows.
    strict = settings.model_copy(update={"allow_unsandboxed": False})
    with socket.create_server(("127.0.0.1", 0)) as listener:
        plan = _plan(settings, profile, listener.getsockname()[1])
        try:
            result = run_command(
                [str(python), "-I", "-c", PROBE_SCRIPT, json.dumps(plan)],
                settings=strict,
                profile=profile,
                timeout_seconds=_PROBE_TIMEOUT_SECONDS,
                output_cap_bytes=_PROBE_OUTPUT_BYTES,
            )
        except SandboxError as error:
            return _failed(profile, "sandbox starts", str(error))
    try:
        rows = json.loads(result.stdout)
        claims = tuple(Claim(str(name), bool(ok), str(detail)) for name, ok, detail in rows)
    except (ValueError, TypeError):
        tail = (result.stderr.strip().splitlines() or [f"exit code {result.exit_code}"])[-1]
        return _failed(profile, "probe ran", f"no report from inside the sandbox: {tail}")
    expected = [*CLAIMS, EGRESS_CLAIM] if proxy_endpoint(settings.profile(profile)) else list(CLAIMS)
    missing = [name for name in expected if name not in {claim.name for claim in claims}]
    if missing:
        claims += (Claim("probe ran", ok=False, detail=f"no answer for: {', '.join(missing)}"),)
    return ProbeReport(profile, claims)


def _plan(settings: SandboxSettings, profile: str, listener_port: int) -> dict[str, object]:
    chosen = settings.profile(profile)
    endpoint = proxy_endpoint(chosen)
    # The root, the system, /etc and each of the profile's read-only mounts.
    read_only = ["/", "/usr", "/etc", *sorted(chosen.mounts.values())]
    return {
        "host_netns": os.readlink("/proc/self/ns/net"),
        "host_listener": listener_port,
        "outbox_ports": sorted(settings.outbox_ports),
        "nameservers": host_nameservers(),
        "proxy": list(endpoint) if endpoint is not None else None,
        "read_only": [f"{directory.rstrip('/')}/outbox-probe" for directory in read_only],
        "writable": [f"{SCRATCH_DIR}/outbox-probe", "/tmp/outbox-probe"],  # noqa: S108 - inside the sandbox
        "syscalls": [[name, syscall_number(name), list(args), code] for name, args, code in _DENIED_PROBES],
    }


def host_nameservers(resolv_conf: Path = Path("/etc/resolv.conf")) -> list[str]:
    """The host's nameservers: the probe shows that none of them answers from inside."""
    try:
        lines = resolv_conf.read_text().splitlines()
    except OSError:
        return []
    return [words[1] for line in lines if len(words := line.split()) > 1 and words[0] == "nameserver"]


def _failed(profile: str, name: str, detail: str) -> ProbeReport:
    return ProbeReport(profile, (Claim(name, ok=False, detail=detail),))


_verified: set[str] = set()
_failed_probes: dict[str, tuple[float, str]] = {}
_probing = threading.Lock()


def isolation_problem(
    settings: SandboxSettings, profile: str, *, reuse_failure_seconds: float = FAILED_PROBE_REUSE_SECONDS
) -> str | None:
    """Why commands of `profile` may not run: a failed claim of its probe; None when all hold.

    Probed once per profile and settings in this process (the settings decide what a sandbox
    is); a failure is reused for `reuse_failure_seconds`, then probed again. When no sandbox can
    be built at all, that is `sandbox_problem`'s to say (a development server that allows
    unsandboxed runs has nothing to probe), as a profile's missing configuration is
    `SandboxSettings.profile_problem`'s.
    """
    if sandbox_problem(settings, reuse_failure_seconds=reuse_failure_seconds) is not None:
        return None
    if settings.profile_problem(profile) is not None:
        return None  # not configured to run at all: `command_problem` and `run_command` say why
    key = _settings_key(settings, profile)
    with _probing:
        if key in _verified:
            return None
        failed = _failed_probes.get(key)
        if failed is not None and time.monotonic() - failed[0] < reuse_failure_seconds:
            return failed[1]
        problem = probe_profile(settings, profile).problem()
        if problem is None:
            _verified.add(key)
            _failed_probes.pop(key, None)
        else:
            _failed_probes[key] = (time.monotonic(), problem)
        return problem


def _settings_key(settings: SandboxSettings, profile: str) -> str:
    # Secret values are masked in the dump: a rotated secret is not a different sandbox.
    dumped = settings.model_dump_json() + "\0" + profile
    return hashlib.sha256(dumped.encode()).hexdigest()
