"""One answer to "may this person approve it" (outbox/approvals/authority.py), used by the runtime
and by the policy tests alike, on identities in canonical form only."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from outbox.approvals.authority import RefusalCode, authority_refusal, distinct_people, person_of
from outbox.policy.engine import PolicySnapshot, load_policy
from outbox.policy.matching import Subject
from outbox.policytools.cases import run_cases
from outbox.policytools.targets import load_catalog
from outbox.toolkit.base import Target
from tests.conftest import POLICIES

# On top of the shipped rules: identities written in mixed case, and a person with two identities.
EXTRA_RULES = """
g, USER:Reviewer@Example.COM, role:approver-http
g, slack:w0rev1, User:REVIEWER@example.com
g, slack:U0TWIN, user:twin-a@example.com
g, slack:U0TWIN, user:twin-b@example.com
g, user:items-only@example.com, role:items-approver
p, role:items-approver, http:127.0.0.1:*/items/**, approve, allow
p, USER:Solo@Example.COM, http:127.0.0.1:*/solo/**, approve, allow
"""
ITEM = [Target("http:127.0.0.1:1/items/1", "delete")]


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    directory = tmp_path / "policies"
    shutil.copytree(POLICIES, directory)
    shutil.rmtree(directory / "tests")
    (directory / "tests").mkdir()
    with (directory / "rules.csv").open("a", encoding="utf-8") as rules:
        rules.write(EXTRA_RULES)
    return directory


@pytest.fixture
def snapshot(policy: Path) -> PolicySnapshot:
    return load_policy(policy)


def code(
    snapshot: PolicySnapshot, identity: str, on_behalf_of: str | None = None, targets: list[Target] = ITEM
) -> RefusalCode | None:
    refusal = authority_refusal(snapshot, identity, on_behalf_of=on_behalf_of, targets=targets, verdict="approve")
    return None if refusal is None else refusal.code


def test_rule_subjects_written_in_mixed_case_mean_the_canonical_person(snapshot: PolicySnapshot) -> None:
    for spelling in ["user:reviewer@example.com", "Reviewer@Example.com", "slack:W0REV1", "slack:w0rev1"]:
        assert code(snapshot, spelling) is None, spelling
    # The index and casbin's own scan agree on the canonical subject.
    approve = [Target("http:127.0.0.1:1/x", "approve")]
    subject = Subject("user:reviewer@example.com")
    assert snapshot.decide(subject, approve).effect == "allow"
    assert snapshot.decide_by_scan(subject, approve).effect == "allow"
    # A `p` rule for a mixed-case identity decides for the canonical person in the index and
    # in casbin's scan alike, and explanations quote the rule as it is written.
    solo = [Target("http:127.0.0.1:1/solo/1", "approve")]
    for decide in (snapshot.decide, snapshot.decide_by_scan):
        decision = decide(Subject("user:solo@example.com"), solo)
        assert decision.effect == "allow"
        assert [r["rule"] for r in decision.rules()] == [
            "p, USER:Solo@Example.COM, http:127.0.0.1:*/solo/**, approve, allow"
        ]
    [rule] = snapshot.decide(
        Subject("user:items-only@example.com"), [Target("http:127.0.0.1:1/items/1", "approve")]
    ).rules()
    assert rule["rule"] == "p, role:items-approver, http:127.0.0.1:*/items/**, approve, allow"


def test_a_person_is_every_identity_linked_to_them_in_either_direction(snapshot: PolicySnapshot) -> None:
    assert person_of(snapshot, "user:reviewer@example.com") == {"user:reviewer@example.com", "slack:W0REV1"}
    assert person_of(snapshot, "slack:W0REV1") == {"user:reviewer@example.com", "slack:W0REV1"}
    # One Slack user linked to two addresses makes them one person: counted once, never
    # approving a call made for either.
    twin = {"slack:U0TWIN", "user:twin-a@example.com", "user:twin-b@example.com"}
    assert person_of(snapshot, "user:twin-a@example.com") == twin
    assert distinct_people(snapshot, ["user:twin-a@example.com", "user:twin-b@example.com"]) == [
        "user:twin-a@example.com"
    ]


@pytest.mark.parametrize(
    ("on_behalf_of", "approver"),
    [
        ("user:reviewer@example.com", "slack:W0REV1"),
        ("slack:W0REV1", "user:reviewer@example.com"),
        ("slack:W0REV1", "REVIEWER@example.com"),
        ("Reviewer <reviewer@example.com>", "slack:w0rev1"),  # an old stored value
        ("mailto:reviewer@example.com", "reviewer@example.com"),  # an old stored value
    ],
)
def test_the_person_acted_for_is_refused_under_any_linked_identity(
    snapshot: PolicySnapshot, on_behalf_of: str, approver: str
) -> None:
    assert code(snapshot, approver, on_behalf_of) is RefusalCode.SELF_APPROVAL
    assert code(snapshot, "user:oncall@example.com", on_behalf_of) is None


def test_denying_is_not_approving(snapshot: PolicySnapshot) -> None:
    refusal = authority_refusal(
        snapshot, "reviewer@example.com", on_behalf_of="user:reviewer@example.com", targets=ITEM, verdict="deny"
    )
    assert refusal is None


def test_a_call_without_targets_has_nobody_to_vouch_for_it(snapshot: PolicySnapshot) -> None:
    assert code(snapshot, "user:oncall@example.com", targets=[]) is RefusalCode.NOT_AUTHORIZED


def test_policy_test_cases_ask_the_same_question_the_runtime_asks(policy: Path) -> None:
    # A call with one allowed and one approve target binds both: an approver for only one of
    # them is refused at runtime, and so in the policy tests.
    (policy / "tests" / "cases.yaml").write_text(
        "cases:\n"
        "  - agent: w\n"
        "    roles: [http-writer]\n"
        "    targets:\n"
        "      - {object: 'http:127.0.0.1:1/items/1', act: delete}\n"
        "      - {object: 'http:127.0.0.1:1/users/1', act: post}\n"
        "    expect: approve\n"
        "    approvers: [USER:Reviewer@Example.com, slack:w0rev1]\n"
        "    not_approvers: [user:items-only@example.com, agent:w, role:approver-http, 'Lead <lead@example.com>']\n"
    )
    snapshot = load_policy(policy)
    targets = [Target("http:127.0.0.1:1/items/1", "delete"), Target("http:127.0.0.1:1/users/1", "post")]
    assert code(snapshot, "user:items-only@example.com", targets=targets) is RefusalCode.NOT_AUTHORIZED

    (result,) = run_cases(policy, snapshot, load_catalog(policy))

    assert result.passed, result.messages


def test_a_policy_case_about_a_human_subject_means_the_canonical_person(policy: Path) -> None:
    (policy / "tests" / "cases.yaml").write_text(
        "cases:\n"
        "  - {subject: 'USER:Reviewer@Example.COM', object: 'http:127.0.0.1:1/x', act: approve, expect: allow}\n"
        "  - {subject: 'slack:w0rev1', object: 'http:127.0.0.1:1/x', act: approve, expect: allow}\n"
    )

    results = run_cases(policy, load_policy(policy), load_catalog(policy))

    assert [r.passed for r in results] == [True, True], [r.messages for r in results]
