"""Who may decide on a call that needs a human: the one answer the runtime, the CLI, the admin
API, Slack and the policy tests (`outbox policy test`) all use.

Approving is itself a policy decision: the human identity must be allowed act `approve` on every
target of the call, with the roles `g` rules give it. Identities are compared only in their
canonical form (`outbox.identities`): the approver's is parsed strictly; the person acted for is
read from the stored `on_behalf_of`, leniently for values recorded before identities were parsed,
so that every person an old spelling could name counts. A person is every human identity linked
to another by `g` rules (`g, slack:U0123ABC, user:oncall@example.com`), in either direction: the
person acted for never approves under any of their identities, and one person counts once toward
a quorum.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from outbox.agents.principals import names_an_agent
from outbox.approvals.digest import bound_targets
from outbox.approvals.schemas import Verdict
from outbox.identities import InvalidIdentity, parse_principal, principals_in
from outbox.policy.effective import APPROVE_ACT
from outbox.policy.engine import PolicySnapshot, canonical_values
from outbox.policy.matching import Subject
from outbox.toolkit.base import Target

_HUMAN_PREFIXES = ("user:", "slack:")


class RefusalCode(enum.StrEnum):
    NOT_FOUND = "not_found"
    INVALID_IDENTITY = "invalid_identity"
    SELF_APPROVAL = "self_approval"
    NOT_AUTHORIZED = "not_authorized"
    NOT_PENDING = "not_pending"
    EXPIRED = "expired"
    DIGEST_MISMATCH = "digest_mismatch"
    MISSING_REASON = "missing_reason"


class ApprovalRefused(Exception):
    """A decision that was not accepted; nothing about the request changed (except expiry)."""

    def __init__(self, code: RefusalCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def identity_problem(identity: str) -> str | None:
    """Why `identity` cannot be an approver, or None."""
    if names_an_agent(identity):
        return "agents cannot approve or deny: approvers are humans (`user:…`, `slack:…`)"
    try:
        parse_principal(identity)
    except InvalidIdentity as exc:
        return f"not a human identity: {exc.message}"
    return None


def approver_identity(identity: str) -> str:
    """The canonical form of an approver identity, or ApprovalRefused(INVALID_IDENTITY)."""
    problem = identity_problem(identity)
    if problem is not None:
        raise ApprovalRefused(RefusalCode.INVALID_IDENTITY, problem)
    return parse_principal(identity).canonical


# Human-to-human `g` links per policy version (the version is a hash of the policy's files, so
# one version always has the same rules). Computed once per version: parsing is not free.
_LINKS: dict[str, Mapping[str, frozenset[str]]] = {}


def _human_links(snapshot: PolicySnapshot) -> Mapping[str, frozenset[str]]:
    cached = _LINKS.get(snapshot.version)
    if cached is not None:
        return cached
    neighbours: defaultdict[str, set[str]] = defaultdict(set)
    for rule in snapshot.rules:
        if rule.ptype != "g":
            continue
        member, role = canonical_values(rule)
        if member.startswith(_HUMAN_PREFIXES) and role.startswith(_HUMAN_PREFIXES):
            neighbours[member].add(role)
            neighbours[role].add(member)
    links = {name: frozenset(linked) for name, linked in neighbours.items()}
    if len(_LINKS) > 32:
        _LINKS.clear()
    _LINKS[snapshot.version] = links
    return links


def person_of(snapshot: PolicySnapshot, identity: str) -> frozenset[str]:
    """Every human identity that is the same person as `identity` (a canonical identity).

    The identities human-to-human `g` links connect, in either direction, and any human identity
    its roles reach. Two decisions whose persons overlap are by the same human.
    """
    links = _human_links(snapshot)
    person = {identity}
    frontier = [identity]
    while frontier:
        for linked in links.get(frontier.pop(), ()):
            if linked not in person:
                person.add(linked)
                frontier.append(linked)
    person.update(name for name in snapshot.role_graph.closure(identity) if name.startswith(_HUMAN_PREFIXES))
    return frozenset(person)


def acted_for(snapshot: PolicySnapshot, on_behalf_of: str | None) -> frozenset[str]:
    """Every identity of the person (or, for an old unparsed value, persons) a call is made for."""
    if not on_behalf_of:
        return frozenset()
    people: set[str] = set()
    for principal in principals_in(on_behalf_of):
        people |= person_of(snapshot, principal.canonical)
    return frozenset(people)


def distinct_people(snapshot: PolicySnapshot, identities: Sequence[str]) -> list[str]:
    """One identity per person, in order."""
    counted: list[str] = []
    seen: set[str] = set()
    for identity in identities:
        person = person_of(snapshot, identity)
        if person & seen:
            continue
        seen |= person
        counted.append(identity)
    return counted


def authority_refusal(
    snapshot: PolicySnapshot,
    identity: str,
    *,
    on_behalf_of: str | None,
    targets: Sequence[Any],
    verdict: Verdict,
) -> ApprovalRefused | None:
    """Why `identity` may not decide on this call under `snapshot`, or None if it may.

    `targets` are the call's bound targets (Target objects or `{object, act}` records): the
    approver needs act `approve` on every one of them.
    """
    problem = identity_problem(identity)
    if problem is not None:
        return ApprovalRefused(RefusalCode.INVALID_IDENTITY, problem)
    canonical = parse_principal(identity).canonical
    if verdict == "approve" and person_of(snapshot, canonical) & acted_for(snapshot, on_behalf_of):
        shown = ", ".join(sorted(p.canonical for p in principals_in(on_behalf_of or "")))
        return ApprovalRefused(
            RefusalCode.SELF_APPROVAL,
            f"{canonical} is the person this call is made for ({shown}) and cannot approve it",
        )
    pairs = bound_targets(targets)
    if not pairs:
        # A call that touches nothing is a tool bug: nobody can vouch for it.
        return ApprovalRefused(RefusalCode.NOT_AUTHORIZED, "the call has no targets to approve")
    decision = snapshot.decide(Subject(canonical), [Target(pair["object"], APPROVE_ACT) for pair in pairs])
    lacking = [t.target.object for t in decision.targets if t.effect != "allow"]
    if lacking:
        shown = ", ".join(lacking[:5]) + (f" and {len(lacking) - 5} more" if len(lacking) > 5 else "")
        return ApprovalRefused(
            RefusalCode.NOT_AUTHORIZED,
            f"{canonical} may not approve or deny calls on {shown} (policy {snapshot.version}: "
            "no `approve` rule allows it for this identity or its roles)",
        )
    return None
