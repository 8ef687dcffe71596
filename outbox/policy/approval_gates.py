"""`policies/approvals.yaml`: quorum, expiry and Slack channel of approval gates.

Policy rules decide *whether* a human must approve (effect `approve`); this file decides *how*:
how many distinct approvers, how long the request stays open, and where it is posted. It lives
in the policy directory, so it is reviewed in git and its content is part of the policy version;
that is why it is loaded here, with the rules (`store.py`), and the approvals domain reads it.

A gate matches an action when every key of its `match` matches at least one of the targets that
required approval: `rule` (the policy line, exactly as written, e.g.
`p, role:http-writer, http:127.0.0.1:*/**, delete, approve`), `object` (a pattern matched like
rule objects), `act`, and `tool`; for an escalation (policy alone allowed the call) any target
counts. When several gates match, the strictest wins: the largest quorum, the shortest expiry;
the channel comes from the first matching gate that names one.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from outbox.policy.engine import PolicyDecision, PolicyLoadError
from outbox.policy.matching import act_match, object_match
from outbox.yamlfiles import YAMLFileError, load_yaml_file

FILE_NAME = "approvals.yaml"
DEFAULT_EXPIRY = timedelta(hours=1)
MIN_EXPIRY = timedelta(minutes=1)
MAX_EXPIRY = timedelta(days=7)
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(value: Any) -> timedelta:
    """`90s`, `30m`, `1h`, `2h30m`, `1d`, or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or text like 30m, 1h, 2h30m")
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    if isinstance(value, str):
        match = _DURATION.match(value.strip())
        if match and any(match.groups()):
            days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
            return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    raise ValueError(f"invalid duration {value!r}: use a number of seconds or text like 30m, 1h, 2h30m")


def _bounded_expiry(value: Any) -> timedelta | None:
    if value is None:
        return None
    duration = parse_duration(value)
    if not MIN_EXPIRY <= duration <= MAX_EXPIRY:
        raise ValueError(f"expires_in must be between {MIN_EXPIRY} and {MAX_EXPIRY}")
    return duration


class GateMatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rule: str | None = None
    object: str | None = None
    act: str | None = None
    tool: str | None = None

    @field_validator("rule")
    @classmethod
    def _normalise_rule(cls, value: str | None) -> str | None:
        return normalise_rule_text(value) if value is not None else None


class Gate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    match: GateMatch
    quorum: int | None = Field(default=None, ge=1, le=10)
    expires_in: timedelta | None = None
    channel: str | None = Field(default=None, min_length=1, max_length=100)

    @field_validator("expires_in", mode="before")
    @classmethod
    def _expiry(cls, value: Any) -> timedelta | None:
        return _bounded_expiry(value)


class GateDefaults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quorum: int = Field(default=1, ge=1, le=10)
    expires_in: timedelta = DEFAULT_EXPIRY
    channel: str | None = Field(default=None, min_length=1, max_length=100)

    @field_validator("expires_in", mode="before")
    @classmethod
    def _expiry(cls, value: Any) -> timedelta:
        bounded = _bounded_expiry(value)
        return bounded if bounded is not None else DEFAULT_EXPIRY


@dataclass(frozen=True, slots=True)
class ResolvedGate:
    """What one approval request gets: the strictest of every matching gate."""

    quorum: int
    expires_in: timedelta
    channel: str | None
    sources: tuple[str, ...]

    def record(self) -> dict[str, Any]:
        return {
            "quorum": self.quorum,
            "expires_in_seconds": int(self.expires_in.total_seconds()),
            "channel": self.channel,
            "sources": list(self.sources),
        }


class ApprovalsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    defaults: GateDefaults = GateDefaults()
    gates: list[Gate] = []

    def resolve(self, tool: str, decision: PolicyDecision) -> ResolvedGate:
        quorum, expires_in, channel = self.defaults.quorum, self.defaults.expires_in, None
        sources: list[str] = []
        # The targets policy sent to a human; for an escalation (policy allowed), all of them.
        demanding = [t for t in decision.targets if t.effect == "approve"] or list(decision.targets)
        for index, gate in enumerate(self.gates):
            if not _gate_matches(gate.match, tool, demanding):
                continue
            sources.append(f"{FILE_NAME}: gates[{index}]")
            if gate.quorum is not None:
                quorum = max(quorum, gate.quorum)
            if gate.expires_in is not None:
                expires_in = min(expires_in, gate.expires_in)
            if channel is None and gate.channel is not None:
                channel = gate.channel
        return ResolvedGate(quorum, expires_in, channel or self.defaults.channel, tuple(sources))


def normalise_rule_text(text: str) -> str:
    return ", ".join(part.strip() for part in text.split(","))


def _gate_matches(match: GateMatch, tool: str, demanding: list[Any]) -> bool:
    if match.tool is not None and match.tool != tool:
        return False
    if match.rule is None and match.object is None and match.act is None:
        return True
    for target in demanding:
        if match.rule is not None and (target.rule is None or normalise_rule_text(target.rule.text) != match.rule):
            continue
        if match.object is not None and not object_match(target.target.object, match.object):
            continue
        if match.act is not None and not act_match(target.target.act, match.act):
            continue
        return True
    return False


def load_approvals_config(directory: Path) -> ApprovalsConfig:
    """Read `approvals.yaml` (absent means defaults); raise PolicyLoadError naming the problem."""
    path = directory / FILE_NAME
    if not path.is_file():
        return ApprovalsConfig()
    try:
        raw = load_yaml_file(path)
    except YAMLFileError as exc:
        raise PolicyLoadError(f"invalid YAML: {exc.problem}", file=FILE_NAME, line=exc.line) from exc
    try:
        return ApprovalsConfig.model_validate(raw or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'file'}: {error['msg']}" for error in exc.errors()
        )
        raise PolicyLoadError(problems, file=FILE_NAME) from exc


_cache: dict[tuple[str, str], ApprovalsConfig] = {}
_cache_lock = threading.Lock()


def approvals_config_for(directory: Path, policy_version: str) -> ApprovalsConfig:
    """The config of one policy version, loaded once (the version hashes the file's content)."""
    key = (str(directory), policy_version)
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    config = load_approvals_config(directory)
    with _cache_lock:
        if len(_cache) > 64:
            _cache.clear()
        _cache[key] = config
    return config
