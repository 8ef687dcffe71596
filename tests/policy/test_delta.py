"""The shadow policy's shortcut: a call no changed rule can touch is decided alike by both
versions, and the shortcut is off whenever anything but `p` rules differs."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pytest

from outbox.policy.delta import compare, delta_between
from outbox.policy.engine import PolicySnapshot, load_policy
from outbox.policy.matching import Subject
from outbox.toolkit.base import Target

POLICIES = Path(__file__).resolve().parents[2] / "policies"

SUBJECTS = [
    Subject("agent:reader", ("role:http-reader",)),
    Subject("agent:writer", ("role:http-writer",)),
    Subject("agent:ops", ("role:k8s-operator",)),
    Subject("agent:mailer", ("role:mailer",)),
    Subject("agent:nobody", ()),
]
TARGETS = [
    Target(obj, act)
    for obj, act in itertools.product(
        [
            "http:127.0.0.1:8765/v1/orders",
            "http:127.0.0.1:8765/admin/users",
            "http:127.0.0.1:9000/hooks/done",
            "k8s:staging/namespace/shop",
            "k8s:production/namespace/shop",
            "k8s:staging/namespace/shop/deployment/web",
            "k8s:production/namespace/kube-system",
        ],
        ["get", "post", "delete", "read", "scale"],
    )
]


def _copy(tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(POLICIES, target)
    return target


def _edit(directory: Path, relative: str, old: str, new: str) -> None:
    path = directory / relative
    text = path.read_text()
    assert old in text, f"{old!r} is not in {relative}"
    path.write_text(text.replace(old, new, 1))


def _decided(snapshot: PolicySnapshot, subject: Subject, target: Target) -> tuple[str, tuple[str, ...]]:
    decision = snapshot.decide(subject, [target])
    return decision.effect, tuple(rule["rule"] for rule in decision.rules())


@pytest.fixture
def live(tmp_path: Path) -> PolicySnapshot:
    return load_policy(_copy(tmp_path, "live"))


def test_identical_versions_decide_every_call_alike_without_a_second_decision(
    live: PolicySnapshot, tmp_path: Path
) -> None:
    delta = compare(live, load_policy(_copy(tmp_path, "shadow")))

    assert delta.incomparable is None
    assert not any(delta.may_differ(s, [t]) for s in SUBJECTS for t in TARGETS)


def test_a_call_no_changed_rule_matches_is_decided_alike_and_one_it_matches_is_decided_again(
    live: PolicySnapshot, tmp_path: Path
) -> None:
    shadow_dir = _copy(tmp_path, "shadow")
    _edit(
        shadow_dir,
        "rules.csv",
        "p, role:k8s-operator, k8s:staging/namespace/*/deployment/*, scale, allow",
        "p, role:k8s-operator, k8s:staging/namespace/*/deployment/*, scale, approve",
    )
    _edit(shadow_dir, "rules.csv", "p, role:http-writer, http:127.0.0.1:*/**, delete, approve", "")
    shadow = load_policy(shadow_dir)
    delta = compare(live, shadow)
    assert delta.incomparable is None

    differing = 0
    for subject, target in itertools.product(SUBJECTS, TARGETS):
        if delta.may_differ(subject, [target]):
            differing += 1
        else:
            # The shortcut's promise, checked against a full decision on both sides.
            assert _decided(live, subject, target) == _decided(shadow, subject, target), (subject, target)
    ops, writer = SUBJECTS[2], SUBJECTS[1]
    assert delta.may_differ(ops, [Target("k8s:staging/namespace/shop/deployment/web", "scale")])
    assert delta.may_differ(writer, [Target("http:127.0.0.1:8765/v1/orders", "delete")])
    assert not delta.may_differ(writer, [Target("http:127.0.0.1:8765/v1/orders", "get")])
    assert 0 < differing < len(SUBJECTS) * len(TARGETS) // 4


@pytest.mark.parametrize(
    ("relative", "old", "new", "why"),
    [
        ("rules.csv", "g, role:http-writer, role:http-reader", "g, role:http-writer, role:k8s-operator", "role links"),
        ("approvals.yaml", "quorum", "quorum", "configuration"),
        ("http.yaml", "\n", "\n# a comment is a change\n", "configuration"),
        ("tools/k8s.yaml", "timeout_seconds: 30", "timeout_seconds: 31", "configuration"),
    ],
)
def test_anything_but_p_rules_that_differs_turns_the_shortcut_off(
    live: PolicySnapshot, tmp_path: Path, relative: str, old: str, new: str, why: str
) -> None:
    shadow_dir = _copy(tmp_path, "shadow")
    if old == new:
        (shadow_dir / relative).write_text((shadow_dir / relative).read_text() + "\n# edited\n")
    else:
        _edit(shadow_dir, relative, old, new)

    delta = compare(live, load_policy(shadow_dir))

    assert delta.incomparable is not None and why in delta.incomparable
    assert all(delta.may_differ(s, [TARGETS[0]]) for s in SUBJECTS)


def test_common_rules_in_another_order_turn_the_shortcut_off(live: PolicySnapshot, tmp_path: Path) -> None:
    shadow_dir = _copy(tmp_path, "shadow")
    first = "p, role:http-reader, http:127.0.0.1:*/**, get|head, allow\n"
    _edit(shadow_dir, "rules.csv", first, "")
    (shadow_dir / "rules.csv").write_text((shadow_dir / "rules.csv").read_text() + first)

    delta = compare(live, load_policy(shadow_dir))

    assert delta.incomparable is not None and "order" in delta.incomparable


def test_a_policy_test_file_that_differs_keeps_the_shortcut(live: PolicySnapshot, tmp_path: Path) -> None:
    shadow_dir = _copy(tmp_path, "shadow")
    (shadow_dir / "tests" / "http.yaml").write_text((shadow_dir / "tests" / "http.yaml").read_text() + "\n# more\n")

    assert compare(live, load_policy(shadow_dir)).incomparable is None


def test_a_directory_edited_since_it_was_loaded_turns_the_shortcut_off(live: PolicySnapshot, tmp_path: Path) -> None:
    shadow_dir = _copy(tmp_path, "shadow")
    shadow = load_policy(shadow_dir)
    _edit(shadow_dir, "tools/k8s.yaml", "timeout_seconds: 30", "timeout_seconds: 31")

    delta = delta_between(live, shadow)

    assert delta.incomparable is not None and "changed on disk" in delta.incomparable
    assert delta_between(live, shadow) is delta
