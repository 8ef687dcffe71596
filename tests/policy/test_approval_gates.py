"""`policies/approvals.yaml`: which gate applies to which call, and broken files are named."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from outbox.policy.approval_gates import ApprovalsConfig, load_approvals_config, parse_duration
from outbox.policy.engine import PolicyLoadError, load_policy
from outbox.policy.matching import Subject
from outbox.toolkit.base import Target


def decision_for(policy_dir: Path, obj: str, act: str = "delete"):  # type: ignore[no-untyped-def]
    snapshot = load_policy(policy_dir)
    return snapshot.decide(Subject("agent:x", ("role:http-writer",)), [Target(obj, act)])


def write(policy_dir: Path, text: str) -> ApprovalsConfig:
    (policy_dir / "approvals.yaml").write_text(text)
    return load_approvals_config(policy_dir)


def test_durations() -> None:
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("2h30m") == timedelta(hours=2, minutes=30)
    assert parse_duration("1d") == timedelta(days=1)
    assert parse_duration(600) == timedelta(minutes=10)
    with pytest.raises(ValueError):
        parse_duration("soon")
    with pytest.raises(ValueError):
        parse_duration(True)


def test_a_gate_matches_by_rule_text_and_the_strictest_terms_win(policy_dir: Path) -> None:
    config = write(
        policy_dir,
        """
defaults: {quorum: 1, expires_in: 1h, channel: "#general-approvals"}
gates:
  - match: {rule: "p,role:http-writer,  http:127.0.0.1:*/**, delete,approve"}
    quorum: 2
    expires_in: 45m
  - match: {object: "http:127.0.0.1:*/prod/**"}
    quorum: 3
    expires_in: 2h
    channel: "#prod"
  - match: {tool: other.tool}
    quorum: 5
""",
    )

    plain = config.resolve("http.request", decision_for(policy_dir, "http:127.0.0.1:80/items/1"))
    prod = config.resolve("http.request", decision_for(policy_dir, "http:127.0.0.1:80/prod/db"))

    assert (plain.quorum, plain.expires_in, plain.channel) == (2, timedelta(minutes=45), "#general-approvals")
    assert plain.sources == ("approvals.yaml: gates[0]",)
    assert (prod.quorum, prod.expires_in, prod.channel) == (3, timedelta(minutes=45), "#prod")


def test_without_the_file_one_approver_within_an_hour(policy_dir: Path) -> None:
    (policy_dir / "approvals.yaml").unlink()
    gate = load_approvals_config(policy_dir).resolve("http.request", decision_for(policy_dir, "http:127.0.0.1:1/x"))

    assert (gate.quorum, gate.expires_in, gate.channel) == (1, timedelta(hours=1), None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("defaults: [", "invalid YAML"),
        ("gates: []\ngates:\n  - match: {}\n", "approvals.yaml:2: invalid YAML: duplicate key 'gates'"),
        ("defaults:\n  quorum: 2\n  quorum: 1\n", "approvals.yaml:3: invalid YAML: duplicate key 'quorum'"),
        ("gates:\n  - match: {}\n    quorum: 0\n", "quorum"),
        ("gates:\n  - match: {rule: x}\n    expires_in: 10s\n", "between"),
        ("gates:\n  - match: {colour: red}\n", "colour"),
    ],
)
def test_a_broken_file_is_refused_with_its_name(policy_dir: Path, text: str, message: str) -> None:
    with pytest.raises(PolicyLoadError) as caught:
        write(policy_dir, text)

    assert "approvals.yaml" in str(caught.value)
    assert message in str(caught.value)
