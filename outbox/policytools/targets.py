"""What tools can touch, as policy sees it, for static analysis (`policy check`, `policy diff`).

The contract, optional for a tool (`DescribesTargets` in `outbox/toolkit/base.py`):

    def target_patterns(self) -> list[Target]

returns every shape of `(object, act)` its `targets()` can produce. Objects are written in the
rule pattern language (`*` within one `/` segment, a final `/**` for any suffix) plus `{param}`
placeholders, each standing for one agent-filled value that contains no `/` (a value that may
contain `/` is written as a final `/**`). Acts are concrete. Examples:
`http:{authority}/**` get, `mail:agents.mail.example.com/{recipient}` send,
`k8s:{cluster}/namespace/{name}` delete. A tool without the method is loaded and counted, but
rules cannot be checked against its objects.

A tool may also declare `destructive_acts: frozenset[str]` (`DeclaresDestructiveActs`), acts
`policy check` treats as destructive in addition to the usual ones (delete, apply, send, …).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from outbox.config import Settings
from outbox.db import Database
from outbox.toolkit.base import DeclaresDestructiveActs, DescribesTargets, Target, Tool
from outbox.toolkit.registry import ToolProvider, ToolServices, load_tools
from outbox.tools.providers import BUILTIN_PROVIDERS

# Acts that change or destroy something that cannot simply be read back; a wildcard `allow` on
# one of them is a risky grant.
DESTRUCTIVE_ACTS = frozenset(
    {"delete", "apply", "send", "destroy", "drop", "drain", "exec", "purge", "truncate", "terminate", "kill"}
)


@dataclass(frozen=True)
class ToolCatalog:
    """The tools of one policy directory and the target shapes they declare."""

    tools: Mapping[str, Tool]
    patterns: Mapping[str, tuple[Target, ...]]
    undescribed: tuple[str, ...]
    load_error: str | None = None
    destructive: frozenset[str] = field(default=DESTRUCTIVE_ACTS)

    @property
    def complete(self) -> bool:
        """Every tool declared its targets, so an object no pattern produces is truly unknown."""
        return self.load_error is None and not self.undescribed

    def all_patterns(self) -> list[tuple[str, Target]]:
        return [(name, target) for name, targets in self.patterns.items() for target in targets]

    def schemes(self) -> set[str]:
        return {scheme_of(t.object) for _name, t in self.all_patterns()}


def scheme_of(obj: str) -> str:
    """`http` for `http:host/path`; the whole text when there is no `:`."""
    return obj.split(":", 1)[0] if ":" in obj else obj


def analysis_services(policy_dir: Path) -> ToolServices:
    """Tool services for loading tools without running them: settings from the environment,
    an in-memory database that is never touched (tools only use it when they execute)."""
    settings = Settings(database_url="sqlite:///:memory:", policy_dir=policy_dir, policy_watch=False)
    return ToolServices(settings=settings, db=Database(settings))


def load_catalog(policy_dir: Path, providers: Sequence[ToolProvider] = BUILTIN_PROVIDERS) -> ToolCatalog:
    """Load the directory's tools through the registry; a failure is reported, not raised."""
    services = analysis_services(policy_dir)
    try:
        tools = load_tools(policy_dir, services, providers)
    except Exception as exc:  # a provider's own validation error, with its file and field
        return ToolCatalog(tools={}, patterns={}, undescribed=(), load_error=f"{type(exc).__name__}: {exc}")
    finally:
        services.db.dispose()
    return catalog_of(tools)


def catalog_of(tools: Mapping[str, Tool]) -> ToolCatalog:
    patterns: dict[str, tuple[Target, ...]] = {}
    undescribed: list[str] = []
    destructive = set(DESTRUCTIVE_ACTS)
    for name, tool in tools.items():
        if isinstance(tool, DeclaresDestructiveActs):
            destructive.update(tool.destructive_acts)
        if isinstance(tool, DescribesTargets):
            patterns[name] = tuple(tool.target_patterns())
        else:
            undescribed.append(name)
    return ToolCatalog(
        tools=tools, patterns=patterns, undescribed=tuple(undescribed), destructive=frozenset(destructive)
    )
