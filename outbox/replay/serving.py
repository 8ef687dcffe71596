"""What `outbox replay serve` sets up before it listens: the recording, the match rule, the
session log and the token; and the lines it prints once at start."""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from outbox.agents.principals import principal
from outbox.policy.matching import Subject
from outbox.policy.store import ActivePolicy
from outbox.policytools.replay import CandidateError, load_candidate
from outbox.recordings.reader import RecordedAction, read_export
from outbox.replay.matching import IgnoreFieldError, MatchRule
from outbox.replay.session import SessionLog, default_session_path
from outbox.replay.twin import Twin
from outbox.urls import is_loopback_name


class TwinRefused(ValueError):
    """The twin cannot start as asked: the message says why."""


@dataclass(frozen=True, slots=True)
class TwinOptions:
    export: Path
    host: str
    port: int
    match: str | None
    ignore: Sequence[str]
    agent: str | None
    session: Path | None
    token: str | None
    data_dir: Path
    policy: Path | None = None


@dataclass(frozen=True, slots=True)
class PreparedTwin:
    twin: Twin
    token: str
    label: str
    banner: list[str]


def match_rule(mode: str | None, ignore: Sequence[str]) -> MatchRule:
    if mode == "exact" and ignore:
        raise TwinRefused("--match exact ignores no field: drop --ignore, or use --match ignore")
    if mode == "ignore" and not ignore:
        raise TwinRefused("--match ignore needs at least one --ignore FIELD (e.g. --ignore args.send_at)")
    try:
        return MatchRule.of(ignore)
    except IgnoreFieldError as exc:
        raise TwinRefused(str(exc)) from None


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return is_loopback_name(host)


def _catalogue(directory: Path) -> ActivePolicy:
    """The tools of a policy directory, loaded as `outbox policy replay` loads a candidate:
    definitions only, nothing that runs."""
    try:
        candidate = load_candidate(directory)
    except CandidateError as exc:
        raise TwinRefused(f"--policy {directory}: {exc}") from None
    return ActivePolicy(candidate.snapshot, candidate.tools, candidate.approvals)


def _subject(actions: Sequence[RecordedAction], agent: str | None) -> Subject:
    """Who the tool listing is for: the recorded agent with its recorded roles (every recorded
    role when the twin answers for all agents)."""
    roles = sorted({role for action in actions for role in action.roles})
    return Subject(principal(agent or "replay"), tuple(roles))


def prepare_twin(options: TwinOptions) -> PreparedTwin:
    """Read the export (RecordingError if it cannot be read), open the session log."""
    recording = read_export(options.export)
    rule = match_rule(options.match, options.ignore)
    actions = recording.select(agent=options.agent)
    session = options.session or default_session_path(options.data_dir)
    header = {
        "export": str(options.export.resolve()),
        "match": rule.describe(),
        "agent": options.agent,
        "recorded_calls": len(actions),
        "export_complete": recording.complete,
    }
    catalogue = _catalogue(options.policy) if options.policy is not None else None
    twin = Twin(actions, rule, SessionLog(session, header), catalogue, _subject(actions, options.agent))
    token = options.token or secrets.token_urlsafe(32)
    url = f"http://{options.host}:{options.port}"
    banner = [
        f"replay twin of {options.export} at {url} (MCP at {url}/mcp): nothing is executed",
        f"recorded calls: {len(actions)}" + (f" (agent {options.agent} only)" if options.agent else ""),
        f"match: {rule.mode}" + (f" (ignoring {', '.join(rule.describe()['ignore'])})" if rule.ignore else ""),
        f"session log: {session}",
        f"tools: {'those of ' + str(options.policy) if options.policy else 'the recorded ones (any arguments)'}",
    ]
    if options.token is None:
        banner.append(f"token (shown once; send `Authorization: Bearer <token>`): {token}")
    if not recording.complete:
        banner.append("warning: the export is cut short (no end record, or its counts disagree)")
    if not is_loopback(options.host):
        banner.append(f"warning: listening on {options.host}, not loopback: the recording is served to the network")
    return PreparedTwin(twin, token, options.agent or "replay", banner)
