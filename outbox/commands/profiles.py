"""Sandbox profiles: what a command may see and consume while it runs.

A tool definition names a profile; the profile, not the agent and not the tool author's argv,
decides whether the network is reachable at all (only ever through the egress proxy, to the
destinations the tool definition declares: `outbox.commands.egress`), which host directories
are visible (read-only), which environment variables exist and how much CPU, memory, files and
processes the command may use.
Profiles live in code (reviewed like code) and can be replaced through `SandboxSettings.profiles`.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator

MIB = 1024 * 1024
GIB = 1024 * MIB

# Where the sandbox puts things; tool definitions may rely on these paths.
SCRATCH_DIR = "/scratch"
SECRETS_DIR = "/run/secrets"

# Mount points a profile may not use for configured directories: they hold the system, or
# the sandbox's own scratch, temporary and secret areas.
_RESERVED_MOUNT_ROOTS = ("/usr", "/bin", "/sbin", "/lib", "/etc", "/proc", "/dev", "/tmp", "/run")  # noqa: S108
_MOUNT_PATH = re.compile(r"^(/[a-z][a-z0-9_-]*)+$")
_MOUNT_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
_ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")

# The environment every profile starts from. HOME points at scratch because CLIs (kubectl,
# terraform, git) write caches under it; nothing of the host's environment is inherited.
BASE_ENV: dict[str, str] = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "HOME": SCRATCH_DIR,
    "TMPDIR": "/tmp",  # noqa: S108 - inside the sandbox: a private tmpfs
    "TZ": "UTC",
}

PositiveInt = Annotated[StrictInt, Field(ge=1)]


class SandboxProfile(BaseModel):
    """Isolation and limits for one class of commands."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[StrictStr, Field(pattern=r"^[a-z][a-z0-9_-]*$")]
    description: StrictStr
    # Every profile has a network namespace of its own, with only `lo`. With egress, the command
    # reaches the tool's declared destinations through the outbox's proxy (HTTPS_PROXY and
    # ALL_PROXY point at it) and nothing else; without, it has no network at all.
    egress: StrictBool = False
    # Per-process CPU seconds (RLIMIT_CPU); the wall-clock timeout comes from the tool.
    cpu_seconds: PositiveInt = 10
    # Per-process address space (RLIMIT_AS). Go binaries (kubectl, terraform) reserve about
    # 1 GiB of address space at start-up and die below it, hence the larger network profiles.
    memory_bytes: PositiveInt = 512 * MIB
    open_files: PositiveInt = 256
    file_size_bytes: PositiveInt = 64 * MIB
    # Tasks (processes and threads) of the sandbox's uid inside its own user namespace.
    processes: PositiveInt = 64
    tmpfs_bytes: PositiveInt = 64 * MIB
    env: dict[StrictStr, StrictStr] = Field(default_factory=lambda: dict(BASE_ENV))
    # Configured host directories (by name, see `SandboxSettings.mounts`) bound read-only at
    # the given path inside the sandbox. The profile says where; the deployment says what.
    mounts: dict[StrictStr, StrictStr] = Field(default_factory=dict)

    @field_validator("env")
    @classmethod
    def _check_env(cls, env: dict[str, str]) -> dict[str, str]:
        for name, value in env.items():
            if not _ENV_NAME.fullmatch(name):
                raise ValueError(f"environment variable name {name!r} must match {_ENV_NAME.pattern}")
            if name.startswith("LD_"):
                raise ValueError(f"{name} would let the profile inject code into every program")
            if "\0" in value:
                raise ValueError(f"environment variable {name} contains a NUL byte")
        return env

    @field_validator("mounts")
    @classmethod
    def _check_mounts(cls, mounts: dict[str, str]) -> dict[str, str]:
        for name, path in mounts.items():
            if not _MOUNT_NAME.fullmatch(name):
                raise ValueError(f"mount name {name!r} must match {_MOUNT_NAME.pattern}")
            if not _MOUNT_PATH.fullmatch(path):
                raise ValueError(f"mount path {path!r} must be absolute and plain ({_MOUNT_PATH.pattern})")
            reserved = (*_RESERVED_MOUNT_ROOTS, SCRATCH_DIR)
            if any(path == root or path.startswith(root + "/") for root in reserved):
                raise ValueError(f"mount path {path!r} is reserved for the system or the sandbox")
        if len(set(mounts.values())) != len(mounts):
            raise ValueError("two mounts share one path")
        return mounts


def builtin_profiles() -> dict[str, SandboxProfile]:
    """The profiles shipped with the outbox; a deployment may replace them in settings."""
    network_env = dict(BASE_ENV)
    terraform_env = {
        **BASE_ENV,
        # Terraform's documented switches for non-interactive use; no update checks home.
        "TF_IN_AUTOMATION": "1",
        "TF_INPUT": "0",
        "CHECKPOINT_DISABLE": "1",
    }
    profiles = [
        SandboxProfile(
            name="default",
            description="No network, no host directories; 10 s CPU, 512 MiB, 64 tasks.",
        ),
        SandboxProfile(
            name="network",
            description="Egress through the proxy to the tool's destinations (kubectl); 4 GiB address space.",
            egress=True,
            cpu_seconds=120,
            memory_bytes=4 * GIB,
            open_files=1024,
            processes=256,
            env=network_env,
        ),
        SandboxProfile(
            name="readonly-repo",
            description="No network; the configured `repo` directory read-only at /repo.",
            mounts={"repo": "/repo"},
        ),
        SandboxProfile(
            name="terraform",
            description="Egress through the proxy; the configured `terraform` directory read-only at /terraform.",
            egress=True,
            cpu_seconds=900,
            memory_bytes=16 * GIB,
            open_files=4096,
            processes=1024,
            file_size_bytes=1 * GIB,
            tmpfs_bytes=512 * MIB,
            env=terraform_env,
            mounts={"terraform": "/terraform"},
        ),
    ]
    return {profile.name: profile for profile in profiles}
