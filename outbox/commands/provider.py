"""Command tools as the policy directory declares them, bound to this server's sandbox settings."""

from __future__ import annotations

from pathlib import Path

from outbox.commands.loader import load_command_tools
from outbox.commands.sandbox import SandboxSettings
from outbox.commands.tool import CommandTool
from outbox.config import Settings
from outbox.tools.registry import ToolServices


def sandbox_settings(settings: Settings) -> SandboxSettings:
    return SandboxSettings(
        allow_unsandboxed=settings.allow_unsandboxed,
        bwrap_path=settings.sandbox_bwrap_path,
        prlimit_path=settings.sandbox_prlimit_path,
        scratch_root=settings.sandbox_scratch_root,
        host_uid=settings.sandbox_host_uid,
        host_gid=settings.sandbox_host_gid,
        secrets=settings.sandbox_secrets,
        secrets_dir=settings.sandbox_secrets_dir,
        mounts={name: path.resolve() for name, path in settings.sandbox_mounts.items()},
    )


def provide_command_tools(policy_dir: Path, services: ToolServices) -> list[CommandTool]:
    sandbox = sandbox_settings(services.settings)
    return load_command_tools(policy_dir / "tools", profiles=sandbox.profiles.keys()).build_tools(sandbox)
