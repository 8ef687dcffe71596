"""Decisions arriving at the same moment: no transition is lost or applied twice."""

from __future__ import annotations

import threading
from collections import Counter

from outbox.approvals.authority import ApprovalRefused
from outbox.approvals.service import DecisionResult, decide
from outbox.runtime import Runtime
from tests.approvals.support import action_of, approval_of, deployer, event_types, submit_call
from tests.support.http_target import TargetServer


def race(runtime: Runtime, action_id: str, identities: list[str]) -> list[DecisionResult | ApprovalRefused]:
    results: list[DecisionResult | ApprovalRefused] = []
    lock = threading.Lock()
    start = threading.Barrier(len(identities))

    def approve(identity: str) -> None:
        start.wait()
        try:
            outcome: DecisionResult | ApprovalRefused = decide(runtime, action_id, identity, "approve", via="api")
        except ApprovalRefused as refusal:
            outcome = refusal
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=approve, args=(identity,)) for identity in identities]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_two_approvers_at_once_queue_the_action_exactly_once(
    gate_runtime: Runtime, target_server: TargetServer
) -> None:
    action_id = submit_call(
        gate_runtime, deployer(gate_runtime), method="DELETE", url=f"{target_server.base_url}/prod/x"
    )

    results = race(gate_runtime, action_id, ["user:lead@example.com", "user:sre@example.com"])

    outcomes = Counter(r.outcome for r in results if isinstance(r, DecisionResult))
    assert outcomes == Counter({"approved": 1, "recorded": 1})
    assert action_of(gate_runtime, action_id).status == "queued"
    assert gate_runtime.dispatcher.published == [action_id]  # type: ignore[attr-defined]
    assert event_types(gate_runtime, action_id).count("action.queued") == 1


def test_the_same_approver_many_times_at_once_counts_once(gate_runtime: Runtime, target_server: TargetServer) -> None:
    action_id = submit_call(
        gate_runtime, deployer(gate_runtime), method="DELETE", url=f"{target_server.base_url}/prod/x"
    )

    results = race(gate_runtime, action_id, ["user:lead@example.com"] * 8)

    assert len(results) == 8
    recorded = [r for r in results if isinstance(r, DecisionResult) and r.outcome == "recorded"]
    assert len(recorded) == 1
    assert all(isinstance(r, ApprovalRefused) or r.outcome in ("recorded", "duplicate") for r in results)
    assert len(approval_of(gate_runtime, action_id).decisions) == 1
    assert action_of(gate_runtime, action_id).status == "awaiting_approval"
