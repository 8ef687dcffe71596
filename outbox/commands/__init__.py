"""Infrastructure commands as typed tools, run in a bubblewrap sandbox.

Definitions come from `policies/tools/*.yaml` (`load_command_tools`); each becomes a
`CommandTool` bound to the server's `SandboxSettings`. `check_isolation` reports what isolation
works on the machine, for `outbox sandbox check`.
"""

from outbox.commands.definitions import CommandToolDefinition
from outbox.commands.isolation import IsolationCheck, IsolationReport, check_isolation
from outbox.commands.loader import (
    CommandToolSet,
    DefinitionProblem,
    ToolDefinitionError,
    load_command_tools,
)
from outbox.commands.profiles import SandboxProfile, builtin_profiles
from outbox.commands.sandbox import (
    SandboxConfigurationError,
    SandboxError,
    SandboxResult,
    SandboxSettings,
    SandboxUnavailable,
    SecretBinding,
    run_command,
)
from outbox.commands.tool import CommandTool

__all__ = [
    "CommandTool",
    "CommandToolDefinition",
    "CommandToolSet",
    "DefinitionProblem",
    "IsolationCheck",
    "IsolationReport",
    "SandboxConfigurationError",
    "SandboxError",
    "SandboxProfile",
    "SandboxResult",
    "SandboxSettings",
    "SandboxUnavailable",
    "SecretBinding",
    "ToolDefinitionError",
    "builtin_profiles",
    "check_isolation",
    "load_command_tools",
    "run_command",
]
