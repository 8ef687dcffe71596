"""Run an argv in a bubblewrap sandbox and record exactly what happened.

Fail closed: when bubblewrap is missing or the kernel refuses namespaces, nothing runs unless
the deployment explicitly allows unsandboxed execution (a development convenience), and then
every result says so. There is never a shell: the argv is executed as given.

When the outbox runs as root, commands run as an unprivileged host uid (`host_uid`), not just
as an unprivileged uid inside the namespace: the kernel exempts root from RLIMIT_NPROC, so a
sandbox owned by host root would not contain a fork bomb.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import structlog
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictStr,
    model_validator,
)

from outbox.canonical import shown_text, storable_text
from outbox.commands.bwrap import (
    GROUP,
    PASSWD,
    SANDBOX_UID,
    DataFile,
    bwrap_argv,
    limit_args,
    system_binds,
)
from outbox.commands.capture import CapturedRun, run_captured
from outbox.commands.cgroups import (
    CGROUP_FS,
    PROC_SELF_CGROUP,
    ResourceControl,
    action_cgroup,
    detect_resource_control,
    in_action_cgroup,
)
from outbox.commands.egress import (
    AllowedDestination,
    DnsResolver,
    EgressLog,
    EgressPolicy,
    EgressProxy,
    NamedDestination,
    bridged_command,
    parse_nameserver,
    proxy_env,
)
from outbox.commands.egress.bridge import PROXY_SOCKET_NAME
from outbox.commands.profiles import SECRETS_DIR, SandboxProfile, builtin_profiles
from outbox.commands.seccomp import SeccompUnavailable, seccomp_problem, seccomp_program, socket_families

log = structlog.get_logger(__name__)

# Environment variables a secret may not take over: they steer how every program starts.
_PROTECTED_ENV = frozenset({"PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "TZ"})
_PROBE_TIMEOUT_SECONDS = 10.0
_NON_SPACE = re.compile(r"\S")


class SandboxError(Exception):
    """The command could not be run as configured; nothing was executed."""


class SandboxUnavailable(SandboxError):
    """Bubblewrap is missing, cannot create namespaces, or could not set up this sandbox."""


class SandboxConfigurationError(SandboxError):
    """A profile, mount or secret the command needs is not configured."""


class SecretBinding(BaseModel):
    """How one server-side secret reaches a command: as a read-only file, an env var, or both.

    `file` puts the value at /run/secrets/<file> (mode 0400); `path_env` names an environment
    variable that points at that file (KUBECONFIG, for example); `env` puts the value itself in
    an environment variable. Agents never see either: not in arguments, argv, results or logs.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[StrictStr, Field(pattern=r"^[a-z][a-z0-9_.-]{0,63}$")]
    file: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")] | None = None
    path_env: Annotated[StrictStr, Field(pattern=r"^[A-Z][A-Z0-9_]{0,63}$")] | None = None
    env: Annotated[StrictStr, Field(pattern=r"^[A-Z][A-Z0-9_]{0,63}$")] | None = None

    @model_validator(mode="after")
    def _check_delivery(self) -> SecretBinding:
        if self.file is None and self.env is None:
            raise ValueError("a secret needs `file`, `env`, or both")
        if self.path_env is not None and self.file is None:
            raise ValueError("`path_env` points at the secret's file, so `file` is required")
        for variable in (self.env, self.path_env):
            if variable is not None and (variable in _PROTECTED_ENV or variable.startswith("LD_")):
                raise ValueError(f"a secret may not set {variable}")
        return self


class SandboxSettings(BaseModel):
    """Server-side configuration of command execution."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Development only: run without namespaces (rlimits and timeout still apply) when
    # bubblewrap cannot work here. Recorded on every result as `unsandboxed`.
    allow_unsandboxed: bool = False
    # None: look `bwrap` up on PATH.
    bwrap_path: Path | None = None
    # prlimit (util-linux) applies the resource limits; it must be under /usr to be visible
    # inside the sandbox.
    prlimit_path: Path = Path("/usr/bin/prlimit")
    # Where per-run scratch directories are created (None: the system temp directory). The
    # host uid below must be able to reach it.
    scratch_root: Path | None = None
    # The host uid/gid commands run as when the outbox itself runs as root.
    host_uid: int = Field(default=65534, ge=1)
    host_gid: int = Field(default=65534, ge=1)
    # Secret name -> value, from the server's configuration; tool definitions refer to names.
    secrets: dict[str, SecretStr] = Field(default_factory=dict)
    # A directory of secret files, one per secret, named after it (a Kubernetes Secret or
    # Docker secrets volume). Read at each run, so a rotated secret is used without a restart.
    # `secrets` wins when a name is in both.
    secrets_dir: Path | None = None
    # Mount name -> host directory, bound read-only where a profile says (e.g. "repo"). Nothing
    # is mounted that the operator did not name.
    mounts: dict[str, Path] = Field(default_factory=dict)
    profiles: dict[str, SandboxProfile] = Field(default_factory=builtin_profiles)
    # The outbox's own state (data directory, database, secrets; `outbox.state_files`): no mount
    # may be, contain or lie inside one of these, however it is spelled.
    protected_paths: tuple[Path, ...] = ()
    # Destination name -> where it is (host, port, allow_private): what a tool definition's
    # `egress: [{destination: "{cluster}"}]` resolves to. Nothing is reachable by default.
    destinations: dict[str, NamedDestination] = Field(default_factory=dict)
    # The nameserver the egress proxy asks ("ip", "ip:port", "[ipv6]:port"); None: the servers
    # of this host's /etc/resolv.conf, asked by the proxy's own DNS client.
    egress_resolver: str | None = None
    # A sandboxed client must finish its CONNECT/SOCKS5 request within this (slow-header attacks).
    egress_header_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    egress_connect_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    # Connections listed on one run's result; the rest are counted (`egress_truncated`).
    egress_record_cap: int = Field(default=100, ge=1, le=10000)
    # socat bridges the proxy's socket to 127.0.0.1:3128 inside; under /usr, so visible there.
    socat_path: Path = Path("/usr/bin/socat")
    # The outbox's own listening ports (API, SMTP sink, database, broker): the isolation probe
    # (`outbox.commands.probes`) shows that no sandbox reaches them.
    outbox_ports: tuple[Annotated[int, Field(ge=1, le=65535)], ...] = ()
    # Where this process's cgroup is looked up (`outbox.commands.cgroups`): a delegated cgroup v2
    # subtree bounds each action's memory and tasks; anything else leaves the per-process rlimits.
    cgroup_fs: Path = CGROUP_FS
    proc_self_cgroup: Path = PROC_SELF_CGROUP

    @model_validator(mode="after")
    def _check_state_is_not_mounted(self) -> SandboxSettings:
        problems = [
            problem
            for name, source in sorted(self.mounts.items())
            if (problem := state_mount_problem(name, source, self.protected_paths)) is not None
        ]
        if self.egress_resolver is not None:
            try:
                parse_nameserver(self.egress_resolver)
            except ValueError as error:
                problems.append(str(error))
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def resource_control(self) -> ResourceControl:
        return detect_resource_control(self.cgroup_fs, self.proc_self_cgroup)

    def profile(self, name: str) -> SandboxProfile:
        try:
            return self.profiles[name]
        except KeyError:
            known = ", ".join(sorted(self.profiles))
            raise SandboxConfigurationError(f"unknown sandbox profile {name!r} (known: {known})") from None

    def resolved_bwrap(self) -> Path | None:
        if self.bwrap_path is not None:
            return self.bwrap_path if os.access(self.bwrap_path, os.X_OK) else None
        found = shutil.which("bwrap")
        return Path(found) if found else None

    def destination(self, name: str) -> NamedDestination:
        """The server-side destination `name` (a tool's `egress: [{destination: ...}]`)."""
        try:
            return self.destinations[name]
        except KeyError:
            known = ", ".join(sorted(self.destinations)) or "none"
            raise SandboxConfigurationError(
                f"destination {name!r} is not configured on this server (configured: {known});"
                " set it in OUTBOX_SANDBOX_DESTINATIONS"
            ) from None

    def run_as(self) -> tuple[int, int] | None:
        """The host identity to drop to, or None when the outbox is already unprivileged."""
        return (self.host_uid, self.host_gid) if os.geteuid() == 0 else None

    def profile_problem(self, name: str) -> str | None:
        """Why commands of this profile cannot run on this server as configured, or None."""
        profile = self.profile(name)
        for mount in profile.mounts:
            if mount not in self.mounts:
                return _unnamed_mount(profile.name, mount)
        if profile.egress and not os.access(self.socat_path, os.X_OK):
            return (
                f"sandbox profile {profile.name!r} reaches the network through the egress proxy, and socat"
                f" ({self.socat_path}), which bridges the proxy into the sandbox, is not executable: install socat"
            )
        return None


@dataclass(frozen=True, slots=True)
class SandboxResult:
    """What one run did, exactly: the argv as executed and the bytes it wrote (capped)."""

    argv: tuple[str, ...]
    profile: str
    exit_code: int
    stdout_bytes: bytes
    stderr_bytes: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    timed_out: bool
    duration_seconds: float
    isolation: tuple[str, ...]
    unsandboxed: bool
    # True when a secret's value appeared in the output and was replaced by a marker.
    secrets_redacted: bool = False
    # Every connection through (or refused by) the egress proxy; None: the profile has no egress.
    egress: EgressLog | None = None

    @property
    def stdout(self) -> str:
        return shown_text(self.stdout_bytes)

    @property
    def stderr(self) -> str:
        return shown_text(self.stderr_bytes)

    def response(self) -> dict[str, Any]:
        """JSON-ready output. When a stream is not text a JSON column keeps exactly (not UTF-8, or
        with NUL), its exact bytes go along in base64."""
        response: dict[str, Any] = {
            "exit_code": self.exit_code,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "stdout_truncated": self.stdout_truncated,
            "stderr_truncated": self.stderr_truncated,
            "duration_seconds": self.duration_seconds,
            "timed_out": self.timed_out,
        }
        for name, data in (("stdout", self.stdout_bytes), ("stderr", self.stderr_bytes)):
            if storable_text(data) is None:
                response[f"{name}_base64"] = base64.b64encode(data).decode("ascii")
        if self.secrets_redacted:
            response["secrets_redacted"] = True
        if self.egress is not None:
            response["egress"] = [record.as_dict() for record in self.egress.records]
            response["egress_truncated"] = self.egress.truncated
        return response

    def artifact(self) -> dict[str, Any]:
        """What was executed and how it was isolated."""
        return {
            "argv": list(self.argv),
            "profile": self.profile,
            "isolation": list(self.isolation),
            "unsandboxed": self.unsandboxed,
        }


def run_command(
    argv: Sequence[str],
    *,
    settings: SandboxSettings,
    profile: str,
    timeout_seconds: float,
    output_cap_bytes: int,
    secrets: Sequence[SecretBinding] = (),
    egress: Sequence[AllowedDestination] = (),
) -> SandboxResult:
    """Run `argv` (no shell) under the profile, or raise `SandboxError` without running it.

    A profile with egress reaches exactly the `egress` destinations, through a proxy of its own
    for this run; an empty list means every connection is refused (and recorded).
    """
    if not argv or not argv[0]:
        raise SandboxConfigurationError("empty argv")
    chosen = settings.profile(profile)
    if egress and not chosen.egress:
        raise SandboxConfigurationError(
            f"sandbox profile {chosen.name!r} has no egress; it cannot reach {egress[0].host}"
        )
    values = _secret_values(settings, secrets)
    mounts = _mount_sources(settings, chosen)
    if chosen.egress and (problem := settings.profile_problem(chosen.name)) is not None:
        raise SandboxUnavailable(problem)
    problem = sandbox_problem(settings)
    if problem is not None and not settings.allow_unsandboxed:
        raise SandboxUnavailable(f"{problem}; refusing to run commands unsandboxed")
    if problem is not None:
        log.warning("sandbox.running_unsandboxed", reason=problem, argv=list(argv))
    run = _run_unsandboxed if problem is not None else _run_sandboxed
    with _scratch_directory(settings) as scratch:
        plan = _RunPlan(
            argv=tuple(argv),
            settings=settings,
            profile=chosen,
            scratch=scratch,
            mounts=mounts,
            secrets=secrets,
            secret_values=values,
            timeout_seconds=timeout_seconds,
            output_cap_bytes=output_cap_bytes,
            egress=tuple(egress),
        )
        result = run(plan)
    log.info(
        "sandbox.command_finished",
        argv=[_logged(arg) for arg in result.argv],
        profile=result.profile,
        exit_code=result.exit_code,
        timed_out=result.timed_out,
        duration_seconds=result.duration_seconds,
        stdout_bytes=len(result.stdout_bytes),
        stderr_bytes=len(result.stderr_bytes),
        unsandboxed=result.unsandboxed,
    )
    return result


# An argument longer than this is logged by its start and length (the isolation probe passes its
# whole script as one argument); the action keeps the argv in full.
_LOGGED_ARG_CHARS = 200


def _logged(arg: str) -> str:
    if len(arg) <= _LOGGED_ARG_CHARS:
        return arg
    return f"{arg[:_LOGGED_ARG_CHARS]}… ({len(arg)} characters)"


# Probing runs a trivial sandbox; a success is remembered for the life of the process (the
# kernel does not take namespaces away), a failure is probed again next time, except by callers
# that ask often and may be a little late (`command_problem`, asked at every submission): they
# reuse a failure this recent, so a broken sandbox costs one bwrap spawn per interval, not per
# call, and a repaired one is seen within it.
_working_sandboxes: set[tuple[Path, tuple[int, int] | None]] = set()
_failed_sandboxes: dict[tuple[Path, tuple[int, int] | None], tuple[float, str]] = {}
FAILED_PROBE_REUSE_SECONDS = 30.0


def sandbox_problem(settings: SandboxSettings, *, reuse_failure_seconds: float = 0.0) -> str | None:
    """Why commands cannot be sandboxed on this machine, or None when they can."""
    bwrap = settings.resolved_bwrap()
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed or not executable"
    if (problem := seccomp_problem()) is not None:
        return problem
    key = (bwrap, settings.run_as())
    if key in _working_sandboxes:
        return None
    failed = _failed_sandboxes.get(key)
    if failed is not None and time.monotonic() - failed[0] < reuse_failure_seconds:
        return failed[1]
    problem = probe_bwrap(bwrap, settings.run_as(), ["--unshare-all", "--unshare-user", "--disable-userns"])
    if problem is None:
        _working_sandboxes.add(key)
        _failed_sandboxes.pop(key, None)
        return None
    problem = f"bubblewrap cannot create namespaces here: {problem}"
    _failed_sandboxes[key] = (time.monotonic(), problem)
    return problem


def command_problem(settings: SandboxSettings, profile: str, secrets: Sequence[SecretBinding] = ()) -> str | None:
    """Why a command of `profile` needing `secrets` cannot run on this server now; None when it can.

    What `run_command` would refuse before running anything, found without running anything:
    the profile's mounts (and socat, for egress) as configured, secrets present (the secrets directory by
    a file lookup, as each run reads it), prlimit, and a usable bubblewrap unless development
    allows unsandboxed runs. Every missing piece is named, so that one look tells the operator
    all there is to fix. Cheap enough for every submission: file lookups, and the bwrap probe
    remembered (a failure for `FAILED_PROBE_REUSE_SECONDS`).
    """
    try:
        chosen = settings.profile(profile)
    except SandboxConfigurationError as error:
        return str(error)
    problems: list[str] = []
    if (problem := settings.profile_problem(profile)) is not None:
        problems.append(problem)
    problems += [
        f"mount {name!r} ({source}) is not a directory"
        for name in chosen.mounts
        if (source := settings.mounts.get(name)) is not None and not source.is_dir()
    ]
    missing = [binding.name for binding in secrets if not _secret_present(settings, binding.name)]
    if missing:
        problems.append(_missing_secrets(missing, settings))
    if not os.access(settings.prlimit_path, os.X_OK):
        problems.append(f"prlimit ({settings.prlimit_path}), which applies the resource limits, is not executable")
    if not settings.allow_unsandboxed:
        problem = sandbox_problem(settings, reuse_failure_seconds=FAILED_PROBE_REUSE_SECONDS)
        if problem is not None:
            problems.append(f"{problem}; commands are not run unsandboxed (development only: OUTBOX_ALLOW_UNSANDBOXED)")
    return "; ".join(problems) or None


def _secret_present(settings: SandboxSettings, name: str) -> bool:
    """As `_secret_values` finds it, without reading it."""
    if name in settings.secrets:
        return True
    return settings.secrets_dir is not None and (settings.secrets_dir / name).is_file()


def _missing_secrets(names: Sequence[str], settings: SandboxSettings) -> str:
    listed = ", ".join(repr(name) for name in names)
    where = "OUTBOX_SANDBOX_SECRETS (JSON name to value)"
    if settings.secrets_dir is not None:
        where += f" or a file named after it in {settings.secrets_dir}"
    else:
        where += " or OUTBOX_SANDBOX_SECRETS_DIR (one file per secret)"
    subject = f"secret {listed} is" if len(names) == 1 else f"secrets {listed} are"
    return f"{subject} not configured on this server: set {where}"


def probe_bwrap(bwrap: Path, run_as: tuple[int, int] | None, flags: Sequence[str]) -> str | None:
    """Run `true` under bwrap with `flags`; None on success, else bwrap's complaint."""
    argv = [str(bwrap), *flags, *system_binds(), "--proc", "/proc", "--dev", "/dev", "--", "true"]
    with tempfile.TemporaryDirectory(prefix="outbox-probe-") as cwd:
        try:
            run = run_captured(
                argv,
                env={"PATH": "/usr/bin:/bin"},
                cwd=Path(cwd),
                timeout_seconds=_PROBE_TIMEOUT_SECONDS,
                keep_bytes=4096,
                run_as=run_as,
            )
        except OSError as error:
            return str(error)
    if run.exit_code == 0:
        return None
    detail = run.stderr.data.decode("utf-8", errors="replace").strip()
    return detail or f"exit code {run.exit_code}"


@dataclass(frozen=True, slots=True)
class _RunPlan:
    """Everything one run needs, resolved and checked before anything is spawned."""

    argv: tuple[str, ...]
    settings: SandboxSettings
    profile: SandboxProfile
    scratch: Path
    mounts: Mapping[str, Path]
    secrets: Sequence[SecretBinding]
    secret_values: Mapping[str, bytes]
    timeout_seconds: float
    output_cap_bytes: int
    egress: tuple[AllowedDestination, ...] = ()

    @property
    def keep_bytes(self) -> int:
        # A secret's length past the cap, so that redaction sees a value straddling the cap.
        return self.output_cap_bytes + max((len(value) for value in self.secret_values.values()), default=0)

    def limited_command(self) -> list[str]:
        command = list(self.argv)
        if self.profile.egress:
            # The bridge runs under the same limits as the command, inside the same sandbox.
            command = bridged_command(self.settings.socat_path, command)
        return [str(self.settings.prlimit_path), *limit_args(self.profile), "--", *command]


def _run_sandboxed(plan: _RunPlan) -> SandboxResult:
    bwrap = plan.settings.resolved_bwrap()
    if bwrap is None:  # removed since the probe
        raise SandboxUnavailable("bubblewrap (bwrap) is not installed or not executable")
    env = dict(plan.profile.env)
    with ExitStack() as stack:
        data_files = _data_files(stack, plan, env)
        proxy, egress_dir = _start_egress_proxy(stack, plan)
        if proxy is not None:
            env |= proxy_env()
        status_read, status_write = os.pipe()
        stack.callback(os.close, status_read)
        seccomp_fd = _memory_file(stack, "seccomp", _seccomp_filter(plan.profile))
        full_argv = bwrap_argv(
            bwrap=bwrap,
            profile=plan.profile,
            scratch=plan.scratch,
            mounts=plan.mounts,
            data_files=data_files,
            status_fd=status_write,
            seccomp_fd=seccomp_fd,
            command=plan.limited_command(),
            egress_socket_dir=egress_dir,
        )
        full_argv, run_as = _limited_by_cgroup(stack, plan, full_argv)
        try:
            run = run_captured(
                full_argv,
                env=env,
                cwd=plan.scratch,
                timeout_seconds=plan.timeout_seconds,
                keep_bytes=plan.keep_bytes,
                pass_fds=[status_write, seccomp_fd, *(data.fd for data in data_files)],
                run_as=run_as,
            )
        except OSError as error:
            raise SandboxUnavailable(f"could not start bubblewrap: {error}") from error
        finally:
            # Our copy of the write end must go for the read below to see end-of-file.
            os.close(status_write)
        status = _read_status(status_read)
    # bwrap reports the command's exit code only when the command ran: no report (and no
    # timeout) means bwrap gave up while building the sandbox, e.g. on an unreadable mount.
    if "exit-code" not in status and not run.timed_out:
        detail = run.stderr.data.decode("utf-8", errors="replace").strip()
        raise SandboxUnavailable(f"bubblewrap could not set up the sandbox: {detail or run.exit_code}")
    # The proxy stopped with the stack: every connection is finished and counted.
    egress = proxy.log() if proxy is not None else None
    return _result(plan, run, _applied_isolation(status, plan), unsandboxed=False, egress=egress)


def _limited_by_cgroup(stack: ExitStack, plan: _RunPlan, argv: list[str]) -> tuple[list[str], tuple[int, int] | None]:
    """`argv` inside a cgroup of its own where one is delegated to the outbox; else as it is."""
    delegated = plan.settings.resource_control().delegated
    if delegated is None:
        return argv, plan.settings.run_as()
    try:
        cgroup = stack.enter_context(
            action_cgroup(delegated, memory_bytes=plan.profile.memory_bytes, tasks=plan.profile.processes)
        )
    except OSError as error:
        raise SandboxUnavailable(f"could not create the action's cgroup under {delegated}: {error}") from error
    return in_action_cgroup(cgroup, argv, plan.settings.run_as())


def _data_files(stack: ExitStack, plan: _RunPlan, env: dict[str, str]) -> list[DataFile]:
    """/etc/passwd, /etc/group and the secrets' files; secrets' variables go into `env`."""
    data_files = [
        DataFile(_memory_file(stack, "passwd", PASSWD.encode()), "/etc/passwd"),
        DataFile(_memory_file(stack, "group", GROUP.encode()), "/etc/group"),
    ]
    for binding in plan.secrets:
        value = plan.secret_values[binding.name]
        if binding.file is not None:
            path = f"{SECRETS_DIR}/{binding.file}"
            data_files.append(DataFile(_memory_file(stack, "secret", value), path, mode="0400"))
            if binding.path_env is not None:
                env[binding.path_env] = path
        if binding.env is not None:
            # Passed through bwrap's own environment (which it hands to the command) rather
            # than --setenv, so the value never appears on a command line.
            env[binding.env] = value.decode()
    return data_files


def _start_egress_proxy(stack: ExitStack, plan: _RunPlan) -> tuple[EgressProxy | None, Path | None]:
    """This run's proxy, listening in a fresh directory the sandbox gets read-only; stopped (and
    the directory removed) when the stack unwinds. None for a profile without egress."""
    if not plan.profile.egress:
        return None, None
    settings = plan.settings
    directory = Path(tempfile.mkdtemp(prefix="outbox-egress-"))
    stack.callback(shutil.rmtree, directory, ignore_errors=True)
    if (run_as := settings.run_as()) is not None:
        os.chown(directory, *run_as)
    policy = EgressPolicy(
        allowed=plan.egress,
        resolver=DnsResolver(settings.egress_resolver, settings.egress_connect_timeout_seconds),
        header_timeout_seconds=settings.egress_header_timeout_seconds,
        connect_timeout_seconds=settings.egress_connect_timeout_seconds,
        record_cap=settings.egress_record_cap,
        reserved_ports=frozenset(settings.outbox_ports),
    )
    proxy = stack.enter_context(EgressProxy(policy, directory / PROXY_SOCKET_NAME, owner=run_as))
    return proxy, directory


def _seccomp_filter(profile: SandboxProfile) -> bytes:
    """The profile's compiled filter; no filter, no run (fail closed)."""
    try:
        return seccomp_program(socket_families(network=profile.egress))
    except SeccompUnavailable as error:
        raise SandboxUnavailable(str(error)) from None


def _run_unsandboxed(plan: _RunPlan) -> SandboxResult:
    """Development fallback: same limits, timeout and capture; no namespaces, so no mounts."""
    env = {**plan.profile.env, "HOME": str(plan.scratch), "TMPDIR": str(plan.scratch)}
    run_as = plan.settings.run_as()
    secret_dir = plan.scratch / ".secrets"
    if plan.secrets:
        secret_dir.mkdir(mode=0o700)
        if run_as is not None:
            os.chown(secret_dir, *run_as)
    for binding in plan.secrets:
        value = plan.secret_values[binding.name]
        if binding.file is not None:
            path = secret_dir / binding.file
            path.write_bytes(value)
            path.chmod(0o400)
            if run_as is not None:
                os.chown(path, *run_as)
            if binding.path_env is not None:
                env[binding.path_env] = str(path)
        if binding.env is not None:
            env[binding.env] = value.decode()
    try:
        run = run_captured(
            plan.limited_command(),
            env=env,
            cwd=plan.scratch,
            timeout_seconds=plan.timeout_seconds,
            keep_bytes=plan.keep_bytes,
            run_as=run_as,
        )
    except OSError as error:
        raise SandboxUnavailable(f"could not start the command: {error}") from error
    return _result(plan, run, ("none",), unsandboxed=True)


def _result(
    plan: _RunPlan, run: CapturedRun, isolation: tuple[str, ...], *, unsandboxed: bool, egress: EgressLog | None = None
) -> SandboxResult:
    cap = plan.output_cap_bytes
    stdout, stdout_redacted = _redact(run.stdout.data, plan.secret_values)
    stderr, stderr_redacted = _redact(run.stderr.data, plan.secret_values)
    return SandboxResult(
        argv=plan.argv,
        profile=plan.profile.name,
        exit_code=run.exit_code,
        stdout_bytes=stdout[:cap],
        stderr_bytes=stderr[:cap],
        stdout_truncated=run.stdout.total_bytes > cap or len(stdout) > cap,
        stderr_truncated=run.stderr.total_bytes > cap or len(stderr) > cap,
        timed_out=run.timed_out,
        duration_seconds=run.duration_seconds,
        isolation=isolation,
        unsandboxed=unsandboxed,
        secrets_redacted=stdout_redacted or stderr_redacted,
        egress=egress,
    )


def _redact(data: bytes, secrets: Mapping[str, bytes]) -> tuple[bytes, bool]:
    """Replace secret values a command printed; a backstop, the command should not print them.

    Output is captured a secret's length past the cap, so a value straddling the cap is still
    recognised and no prefix of it survives truncation.
    """
    redacted = False
    for name, value in sorted(secrets.items(), key=lambda item: -len(item[1])):
        if len(value) >= 4 and value in data:
            data = data.replace(value, f"[REDACTED:{name}]".encode())
            redacted = True
    return data, redacted


def _applied_isolation(status: Mapping[str, Any], plan: _RunPlan) -> tuple[str, ...]:
    """Namespaces as the kernel reports them, compared with the outbox's own, plus the rest."""
    applied = ["user-namespace", f"uid:{SANDBOX_UID}"]
    names = {
        "mnt": "mount",
        "pid": "pid",
        "net": "network",
        "ipc": "ipc",
        "uts": "uts",
        "cgroup": "cgroup",
    }
    for kind, label in names.items():
        inode = status.get(f"{kind}-namespace")
        if isinstance(inode, int) and inode != os.stat(f"/proc/self/ns/{kind}").st_ino:
            applied.append(f"{label}-namespace")
    applied.append("egress:proxy" if plan.profile.egress else "network:none")
    applied += [
        "cap-drop:ALL",
        "no-nested-userns",
        "die-with-parent",
        "new-session",
        "read-only-root",
        "seccomp",
        "tmpfs:/tmp",
        "scratch:/scratch",
        "scrubbed-env",
        "rlimits",
    ]
    if plan.settings.resource_control().delegated is not None:
        applied.append("cgroup:memory.max,pids.max")
    if (run_as := plan.settings.run_as()) is not None:
        applied.append(f"host-uid:{run_as[0]}")
    return tuple(applied)


def _secret_values(settings: SandboxSettings, secrets: Sequence[SecretBinding]) -> dict[str, bytes]:
    values: dict[str, bytes] = {}
    for binding in secrets:
        configured = settings.secrets.get(binding.name)
        if configured is not None:
            value = configured.get_secret_value().encode()
        elif settings.secrets_dir is not None and (settings.secrets_dir / binding.name).is_file():
            value = (settings.secrets_dir / binding.name).read_bytes()
        else:
            raise SandboxConfigurationError(f"secret {binding.name!r} is not configured on this server")
        if binding.env is not None and not _usable_as_env(value):
            raise SandboxConfigurationError(f"secret {binding.name!r} is not UTF-8 text without NUL; use `file`")
        values[binding.name] = value
    return values


def _usable_as_env(value: bytes) -> bool:
    return storable_text(value) is not None


def state_mount_problem(name: str, source: Path, protected: Sequence[Path]) -> str | None:
    """Why mounting `source` would show the outbox's own state, or None.

    Both sides are compared as real paths (symlinks and `..` resolved, relative paths against
    the working directory), so `.`, `./x/..`, a trailing slash or a symlink to the data
    directory are all seen for what they are.
    """
    real = Path(os.path.realpath(source))
    for state in protected:
        state_real = Path(os.path.realpath(state))
        if real == state_real:
            relation = "is"
        elif state_real.is_relative_to(real):
            relation = "contains"
        elif real.is_relative_to(state_real):
            relation = "is inside"
        else:
            continue
        shown = str(source) if str(source) == str(real) else f"{source} -> {real}"
        return (
            f"mount {name!r} ({shown}) {relation} the outbox's own state {state_real}: a sandboxed command"
            " could read the database, keys or secrets; name a directory that holds none of the"
            " outbox's data (or move the data directory, OUTBOX_DATA_DIR, out of it)"
        )
    return None


def _unnamed_mount(profile: str, mount: str) -> str:
    variable = "OUTBOX_SANDBOX_REPO_DIR" if mount == "repo" else "OUTBOX_SANDBOX_MOUNTS"
    return (
        f"sandbox profile {profile!r} needs the host directory {mount!r}, which the operator has not named"
        f" (set {variable}); nothing is mounted by default"
    )


def _mount_sources(settings: SandboxSettings, profile: SandboxProfile) -> dict[str, Path]:
    sources: dict[str, Path] = {}
    for name in profile.mounts:
        source = settings.mounts.get(name)
        if source is None:
            raise SandboxConfigurationError(_unnamed_mount(profile.name, name))
        if not source.is_dir():
            raise SandboxConfigurationError(f"mount {name!r} ({source}) is not a directory")
        # Checked again at each run: a symlink on the way may have been swapped since start.
        problem = state_mount_problem(name, source, settings.protected_paths)
        if problem is not None:
            raise SandboxConfigurationError(problem)
        sources[name] = source.resolve()
    return sources


@contextmanager
def _scratch_directory(settings: SandboxSettings) -> Iterator[Path]:
    """A fresh directory owned by the sandbox's host uid, removed afterwards whatever it holds."""
    scratch = Path(tempfile.mkdtemp(prefix="outbox-scratch-", dir=settings.scratch_root))
    try:
        if (run_as := settings.run_as()) is not None:
            os.chown(scratch, *run_as)
        yield scratch
    finally:
        # The command may have left directories without write or search permission.
        for directory, _, _ in os.walk(scratch):
            os.chmod(directory, 0o700)
        shutil.rmtree(scratch)


def _memory_file(stack: ExitStack, name: str, content: bytes) -> int:
    """A memfd holding `content`, positioned at its start; closed when the stack unwinds."""
    fd = os.memfd_create(f"outbox-{name}", os.MFD_CLOEXEC)
    stack.callback(os.close, fd)
    os.write(fd, content)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _read_status(fd: int) -> dict[str, Any]:
    """Merge bwrap's --json-status-fd documents ({"child-pid": …}, then {"exit-code": …})."""
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    merged: dict[str, Any] = {}
    decoder = json.JSONDecoder()
    text = b"".join(chunks).decode("utf-8", errors="replace")
    position = 0
    while (match := _NON_SPACE.search(text, position)) is not None:
        document, position = decoder.raw_decode(text, match.start())
        if isinstance(document, dict):
            merged.update(document)
    return merged


__all__ = [
    "SandboxConfigurationError",
    "SandboxError",
    "SandboxResult",
    "SandboxSettings",
    "SandboxUnavailable",
    "SecretBinding",
    "command_problem",
    "run_command",
    "sandbox_problem",
    "state_mount_problem",
]
