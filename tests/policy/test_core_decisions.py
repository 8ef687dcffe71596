"""Decision semantics of the core engine: strictest effect wins, matching is anchored, reloads are atomic."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from outbox.policy.engine import PolicyLoadError, load_policy
from outbox.policy.matching import Subject, act_match, object_match
from outbox.policy.store import PolicyStore
from outbox.runtime import Runtime
from outbox.toolkit.base import Target

MODEL = (Path(__file__).resolve().parents[2] / "policies" / "model.conf").read_text()


def write_policy(directory: Path, rules: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.conf").write_text(MODEL)
    (directory / "rules.csv").write_text(rules)
    return directory


def test_deny_beats_approve_beats_allow_and_no_rule_denies(tmp_path: Path) -> None:
    policy = load_policy(
        write_policy(
            tmp_path,
            "p, role:ops, k8s:prod/namespace/*, delete, approve\n"
            "p, role:ops, k8s:prod/namespace/*, get, allow\n"
            "p, role:ops, k8s:prod/namespace/kube-system, delete, deny\n"
            "p, role:ops, k8s:prod/namespace/kube-system, delete, allow\n",
        )
    )
    ops = Subject("agent:bot", ("role:ops",))

    assert policy.decide(ops, [Target("k8s:prod/namespace/web", "get")]).effect == "allow"
    assert policy.decide(ops, [Target("k8s:prod/namespace/web", "delete")]).effect == "approve"
    assert policy.decide(ops, [Target("k8s:prod/namespace/kube-system", "delete")]).effect == "deny"
    assert policy.decide(ops, [Target("k8s:staging/namespace/web", "get")]).effect == "deny"
    assert policy.decide(Subject("agent:other"), [Target("k8s:prod/namespace/web", "get")]).effect == "deny"


def test_the_strictest_target_decides_the_call(tmp_path: Path) -> None:
    policy = load_policy(
        write_policy(
            tmp_path,
            "p, role:ops, k8s:prod/namespace/*, delete, approve\np, role:ops, k8s:dev/namespace/*, delete, allow\n",
        )
    )
    decision = policy.decide(
        Subject("agent:bot", ("role:ops",)),
        [Target("k8s:dev/namespace/a", "delete"), Target("k8s:prod/namespace/b", "delete")],
    )
    assert decision.effect == "approve"
    assert [t.effect for t in decision.targets] == ["allow", "approve"]
    assert decision.rules() == [{"rule": "p, role:ops, k8s:prod/namespace/*, delete, approve", "source": "rules.csv:1"}]


def test_a_call_with_no_targets_is_denied(tmp_path: Path) -> None:
    policy = load_policy(write_policy(tmp_path, "p, role:ops, *, *, allow\n"))
    assert policy.decide(Subject("agent:bot", ("role:ops",)), []).effect == "deny"


def test_roles_come_from_the_agent_and_from_g_rules(tmp_path: Path) -> None:
    policy = load_policy(write_policy(tmp_path, "g, role:senior, role:junior\np, role:junior, http:h/x, get, allow\n"))
    assert policy.decide(Subject("agent:a", ("role:senior",)), [Target("http:h/x", "get")]).effect == "allow"
    assert policy.decide(Subject("agent:a", ("role:other",)), [Target("http:h/x", "get")]).effect == "deny"


@pytest.mark.parametrize(
    ("pattern", "value", "matches"),
    [
        ("http:h/v1/send_email", "http:h/v1/send_email_all", False),  # exact unless a wildcard is written
        ("http:h/v1/send_email", "http:h/v1/send_email", True),
        ("http:h/v1/*", "http:h/v1/orders", True),
        ("http:h/v1/*", "http:h/v1/orders/7", False),  # * stays within one segment
        ("http:h/v1/**", "http:h/v1/orders/7", True),
        ("http:h/v1/**", "http:h/v1", True),
        ("http:h/v1/**", "http:h/v10/x", False),
        ("k8s:prod/namespace/branch", "k8s:prod/namespace/integration-branch-env", False),
        ("mail:agents.example.com/*@example.org", "mail:agents.example.com/a@example.org", True),
        ("mail:agents.example.com/*@example.org", "mail:agents.example.com/a@example.org.evil.com", False),
        ("http:h/a.b", "http:h/aXb", False),  # regex metacharacters are literal
    ],
)
def test_object_matching_is_anchored(pattern: str, value: str, matches: bool) -> None:
    assert object_match(value, pattern) is matches


def test_act_matching() -> None:
    assert act_match("get", "get|head")
    assert not act_match("delete", "get|head")
    assert act_match("delete", "*")
    assert not act_match("get", "ge")


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ("p, role:a, obj\n", "rules.csv:1: a `p` rule has 4 fields"),
        ("p, role:a, obj, get, maybe\n", "rules.csv:1: decision must be allow, approve or deny"),
        ("# fine\nx, a, b\n", "rules.csv:2: unknown rule type"),
        ("g, only-one\n", "rules.csv:1: a `g` rule has 2 fields"),
    ],
)
def test_broken_rule_files_are_reported_with_file_and_line(tmp_path: Path, rules: str, message: str) -> None:
    with pytest.raises(PolicyLoadError, match=message):
        load_policy(write_policy(tmp_path, rules))


def test_a_failed_reload_keeps_the_running_policy(runtime: Runtime, policy_dir: Path) -> None:
    before = runtime.policy.current
    (policy_dir / "rules.csv").write_text("p, broken\n")
    ok, message = runtime.policy.reload()
    assert not ok
    assert "rules.csv:1" in message
    assert runtime.policy.current is before
    assert runtime.policy.last_failure is not None


def test_decisions_during_reloads_never_see_a_half_loaded_policy(runtime: Runtime, policy_dir: Path) -> None:
    """Flip between two policies while readers decide: every decision is one of the two whole
    policies (its effect always matches the version that made it)."""
    store: PolicyStore = runtime.policy
    allow_text = (policy_dir / "rules.csv").read_text()
    deny_text = allow_text + "p, role:http-reader, http:127.0.0.1:*/**, get, deny\n"
    versions: dict[str, str] = {store.current.version: "allow"}
    (policy_dir / "rules.csv").write_text(deny_text)
    store.reload()
    versions[store.current.version] = "deny"

    stop = threading.Event()
    mismatches: list[tuple[str, str]] = []
    seen: set[str] = set()
    subject = Subject("agent:r", ("role:http-reader",))
    target = [Target("http:127.0.0.1:8080/v1/x", "get")]

    def reader() -> None:
        while not stop.is_set():
            decision = store.current.snapshot.decide(subject, target)
            seen.add(decision.policy_version)
            if versions.get(decision.policy_version) != decision.effect:
                mismatches.append((decision.policy_version, decision.effect))

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for thread in readers:
        thread.start()
    for n in range(30):
        (policy_dir / "rules.csv").write_text(allow_text if n % 2 else deny_text)
        assert store.reload()[0]
    stop.set()
    for thread in readers:
        thread.join()

    assert mismatches == []
    assert seen == set(versions)
