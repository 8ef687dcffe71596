"""Command tools as the policy directory declares them, bound to this server's sandbox settings."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from outbox.commands.egress import NamedDestination
from outbox.commands.loader import load_command_tools
from outbox.commands.sandbox import SandboxConfigurationError, SandboxSettings
from outbox.commands.tool import CommandTool
from outbox.config import Settings
from outbox.state_files import state_paths
from outbox.toolkit.registry import ToolServices

# OUTBOX_SANDBOX_DESTINATIONS: JSON there, checked here (config cannot know the commands domain).
_DESTINATIONS = TypeAdapter(dict[str, NamedDestination])


def sandbox_settings(settings: Settings) -> SandboxSettings:
    """The sandbox as configured; SandboxConfigurationError (at start) when it would show state."""
    mounts = dict(settings.sandbox_mounts)
    if settings.sandbox_repo_dir is not None:
        mounts.setdefault("repo", settings.sandbox_repo_dir)
    # Absolute against today's working directory; symlinks are resolved (and checked) at each run.
    mounts = {name: Path(os.path.abspath(path)) for name, path in mounts.items()}
    try:
        return SandboxSettings(
            allow_unsandboxed=settings.allow_unsandboxed,
            bwrap_path=settings.sandbox_bwrap_path,
            prlimit_path=settings.sandbox_prlimit_path,
            scratch_root=settings.sandbox_scratch_root,
            host_uid=settings.sandbox_host_uid,
            host_gid=settings.sandbox_host_gid,
            secrets=settings.sandbox_secrets,
            secrets_dir=settings.sandbox_secrets_dir,
            mounts=mounts,
            protected_paths=tuple(state_paths(settings)),
            destinations=_DESTINATIONS.validate_python(settings.sandbox_destinations),
            egress_resolver=settings.sandbox_egress_resolver,
            outbox_ports=tuple(_own_ports(settings)),
        )
    except ValidationError as error:
        problems = "; ".join(_problem(detail) for detail in error.errors())
        raise SandboxConfigurationError(f"sandbox settings refused: {problems}") from None


def _own_ports(settings: Settings) -> list[int]:
    """The ports the outbox listens on or keeps its state behind."""
    ports = [settings.api_port, settings.mail_sink_port]
    for url in (settings.database_url, settings.broker_url):
        if url is None:
            continue
        try:
            port = urlsplit(url).port
        except ValueError:
            continue
        if port is not None:
            ports.append(port)
    defaults = {"postgresql": 5432, "redis": 6379}
    for url in (settings.database_url, settings.broker_url or ""):
        for scheme, port in defaults.items():
            if url.startswith(scheme):
                ports.append(port)
    return sorted(set(ports))


def _problem(detail: ErrorDetails) -> str:
    where = ".".join(str(part) for part in detail["loc"])
    message = str(detail["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def provide_command_tools(policy_dir: Path, services: ToolServices) -> list[CommandTool]:
    sandbox = sandbox_settings(services.settings)
    return load_command_tools(policy_dir / "tools", profiles=sandbox.profiles).build_tools(sandbox)
