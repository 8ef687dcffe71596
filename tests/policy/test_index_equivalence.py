"""The rule index decides exactly as casbin's scan of every rule does: same effect, same rule."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from outbox.policy.engine import load_policy
from outbox.policy.matching import Subject
from outbox.toolkit.base import Target

MODEL = (Path(__file__).resolve().parents[2] / "policies" / "model.conf").read_text()
AGENTS = [f"agent:a{i}" for i in range(4)]
ROLES = [f"role:r{i}" for i in range(6)]
SEGMENTS = ["a", "b", "ab", "ba", "x", "*", "a*", "*b", "*a*", "**", ""]
VALUES = ["a", "b", "ab", "ba", "abb", "x", "", "aab"]
ACTS = ["get", "post", "delete", "send"]


def _pattern(rng: random.Random) -> str:
    scheme = rng.choice(["s:", "t:", "s:h", "s:*"])
    segments = [rng.choice(SEGMENTS) for _ in range(rng.randint(0, 3))]
    body = scheme + "/".join(segments) if segments else scheme.rstrip("/")
    return body + ("/**" if rng.random() < 0.3 else "")


def _act(rng: random.Random) -> str:
    if rng.random() < 0.15:
        return "*"
    return "|".join(rng.sample(ACTS, rng.randint(1, 3)))


def _policy(rng: random.Random, directory: Path) -> None:
    lines = []
    for _ in range(rng.randint(1, 40)):
        subject = rng.choice(AGENTS + ROLES + ["user:u"])
        effect = rng.choice(["allow", "approve", "deny"])
        lines.append(f"p, {subject}, {_pattern(rng)}, {_act(rng)}, {effect}")
    for _ in range(rng.randint(0, 8)):
        lines.append(f"g, {rng.choice(AGENTS + ROLES)}, {rng.choice(ROLES)}")
    rng.shuffle(lines)
    # Duplicates: casbin keeps the first; the index must report the same one.
    lines += rng.sample(lines, min(3, len(lines)))
    directory.mkdir()
    (directory / "model.conf").write_text(MODEL)
    (directory / "rules.csv").write_text("\n".join(lines) + "\n")


def _object(rng: random.Random) -> str:
    scheme = rng.choice(["s:", "t:", "s:h", "s:hh"])
    return scheme + "/".join(rng.choice(VALUES) for _ in range(rng.randint(0, 4)))


@pytest.mark.parametrize("seed", range(60))
def test_index_agrees_with_casbin_scan_on_random_policies(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    _policy(rng, tmp_path / "p")
    snapshot = load_policy(tmp_path / "p")
    assert snapshot.indexed
    for _ in range(40):
        subject = Subject(rng.choice([*AGENTS, "user:u"]), tuple(rng.sample(ROLES, rng.randint(0, 2))))
        targets = [Target(_object(rng), rng.choice(ACTS)) for _ in range(rng.randint(1, 3))]
        indexed = snapshot.decide(subject, targets)
        scanned = snapshot.decide_by_scan(subject, targets)
        assert indexed.effect == scanned.effect, (subject, targets)
        for mine, theirs in zip(indexed.targets, scanned.targets, strict=True):
            assert (mine.effect, mine.rule) == (theirs.effect, theirs.rule), (subject, mine.target)


def test_deep_role_chains_stop_where_casbin_stops(tmp_path: Path) -> None:
    """casbin's role manager follows at most 10 levels; beyond that a role is not inherited."""
    directory = tmp_path / "p"
    directory.mkdir()
    (directory / "model.conf").write_text(MODEL)
    chain = [f"g, role:l{i}, role:l{i + 1}" for i in range(14)]
    rules = [f"p, role:l{i}, s:o{i}, get, allow" for i in range(15)]
    (directory / "rules.csv").write_text("\n".join(chain + rules) + "\n")
    snapshot = load_policy(directory)
    subject = Subject("agent:x", ("role:l0",))
    for i in range(15):
        target = [Target(f"s:o{i}", "get")]
        assert snapshot.decide(subject, target).effect == snapshot.decide_by_scan(subject, target).effect, i
    assert snapshot.decide(subject, [Target("s:o9", "get")]).effect == "allow"
    assert snapshot.decide(subject, [Target("s:o10", "get")]).effect == "deny"


def test_a_non_standard_model_is_evaluated_by_casbin(tmp_path: Path) -> None:
    directory = tmp_path / "p"
    directory.mkdir()
    (directory / "model.conf").write_text(MODEL.replace("objectMatch(r.obj, p.obj)", "r.obj == p.obj"))
    (directory / "rules.csv").write_text("p, agent:a, s:*, get, allow\np, agent:a, s:x, get, allow\n")
    snapshot = load_policy(directory)
    assert not snapshot.indexed
    assert snapshot.decide(Subject("agent:a"), [Target("s:y", "get")]).effect == "deny"
    assert snapshot.decide(Subject("agent:a"), [Target("s:x", "get")]).effect == "allow"
