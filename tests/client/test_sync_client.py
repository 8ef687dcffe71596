"""`OutboxClient` against a real outbox (uvicorn on loopback, embedded workers, SQLite)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from outbox.actions.service import seconds_until
from outbox.client import (
    ActionNotFound,
    Denied,
    InvalidCall,
    KeyReused,
    NotCancellable,
    OutboxClient,
    Rejected,
    ToolUnavailable,
    Unauthorized,
)
from tests.client.conftest import OutboxServer
from tests.support.http_target import TargetServer
from tests.support.send_window import MAIL_SETTINGS, closed_window_message, opening_day, write_closed_window_mail

pytestmark = pytest.mark.slow


def get(url: str) -> dict[str, str]:
    return {"method": "GET", "url": url}


def test_an_allowed_call_with_wait_returns_the_succeeded_action_and_its_result(
    outbox_server: OutboxServer, target_server: TargetServer
) -> None:
    key = outbox_server.agent("reader", "http-reader")
    with OutboxClient(outbox_server.url, key) as outbox:
        action = outbox.submit(
            "http.request",
            get(f"{target_server.base_url}/v1/orders"),
            on_behalf_of="ada@example.com",
            reason="list the orders",
            wait=20,
        )

    assert action.status == "succeeded"
    assert action.succeeded and action.is_terminal and action.is_settled
    assert action.tool == "http.request"
    assert action.on_behalf_of == "user:ada@example.com"
    assert action.reason == "list the orders"
    assert action.decision.effect == "allow"
    assert action.decision.rules[0]["rule"] == "p, role:http-reader, http:127.0.0.1:*/**, get|head, allow"
    assert action.decision.policy_version == outbox_server.runtime.policy.current.version
    assert action.response is not None and action.response["status"] == 200
    assert action.links["self"] == f"/v1/actions/{action.id}"
    assert action.replayed is False
    assert len(target_server.received("/v1/orders")) == 1


def test_without_wait_the_answer_comes_at_once_and_wait_follows_it_to_the_outcome(
    outbox_server: OutboxServer, target_server: TargetServer
) -> None:
    key = outbox_server.agent("reader", "http-reader")
    with OutboxClient(outbox_server.url, key) as outbox:
        submitted = outbox.submit("http.request", get(f"{target_server.base_url}/later"))
        assert submitted.status in {"queued", "running", "succeeded"}
        finished = outbox.wait(submitted.id, timeout=30)
        again = outbox.get(submitted.id)

    assert finished.status == "succeeded"
    assert again.id == finished.id and again.status == "succeeded"
    assert len(target_server.received("/later")) == 1


def test_a_denied_call_raises_denied_with_the_rule_and_the_hint(outbox_server: OutboxServer) -> None:
    key = outbox_server.agent("reader", "http-reader")
    with OutboxClient(outbox_server.url, key) as outbox:
        with pytest.raises(Denied) as denied:
            outbox.submit("http.request", get("http://127.0.0.1:9/admin/users"))
        recorded = outbox.get(denied.value.action_id or "")
        with pytest.raises(Denied):
            outbox.wait(recorded.id, timeout=5)

    error = denied.value
    assert error.status == 403
    assert error.problem.slug == "denied-by-policy"
    assert error.problem.type == "https://agent-outbox.dev/problems/denied-by-policy"
    assert [r["rule"] for r in error.rules] == [
        "p, role:http-reader, http:127.0.0.1:*/admin/**, get|head|post|put|patch|delete, deny"
    ]
    assert error.hint is not None and "Do not retry it unchanged" in error.hint
    assert "Hint: " in str(error) and error.problem.detail in str(error)
    assert error.problem.raw["decision"]["effect"] == "deny"
    # The denial is recorded: reading it is not an error, waiting for its outcome is.
    assert recorded.status == "denied"
    assert recorded.problem is not None and recorded.problem["type"] == error.problem.type


def test_invalid_arguments_raise_invalid_call_naming_the_fields(outbox_server: OutboxServer) -> None:
    key = outbox_server.agent("reader", "http-reader")
    with OutboxClient(outbox_server.url, key) as outbox:
        with pytest.raises(InvalidCall) as bad_args:
            outbox.submit("http.request", {"method": "GET"})
        with pytest.raises(InvalidCall) as bad_tool:
            outbox.submit("no.such.tool", {})
        with pytest.raises(InvalidCall) as bad_person:
            outbox.submit("http.request", get("http://127.0.0.1:9/x"), on_behalf_of="Ada <ada@example.com>")

    assert bad_args.value.status == 422
    assert bad_args.value.fields == ["args.url"]
    assert bad_args.value.errors[0]["message"]
    assert bad_tool.value.fields == ["tool"]
    assert bad_tool.value.hint is not None and "http.request" in bad_tool.value.hint
    assert bad_person.value.fields == ["on_behalf_of"]
    assert outbox_server.action_count() == 0


def test_an_unknown_or_missing_key_raises_unauthorized(outbox_server: OutboxServer) -> None:
    with OutboxClient(outbox_server.url, "not-a-key") as outbox, pytest.raises(Unauthorized) as unauthorized:
        outbox.submit("http.request", get("http://127.0.0.1:9/x"))
    assert unauthorized.value.status == 401
    assert unauthorized.value.problem.detail

    with pytest.raises(ValueError, match="OUTBOX_API_KEY"):
        OutboxClient(outbox_server.url, "")


def test_a_caller_supplied_key_replays_the_recorded_action_and_refuses_another_call(
    outbox_server: OutboxServer, target_server: TargetServer
) -> None:
    key = outbox_server.agent("reader", "http-reader")
    call = get(f"{target_server.base_url}/once")
    with OutboxClient(outbox_server.url, key) as outbox:
        first = outbox.submit("http.request", call, wait=20, idempotency_key="order-42")
        second = outbox.submit("http.request", call, wait=20, idempotency_key="order-42")
        with pytest.raises(KeyReused) as reused:
            outbox.submit("http.request", get(f"{target_server.base_url}/other"), idempotency_key="order-42")

    assert second.id == first.id
    assert (first.replayed, second.replayed) == (False, True)
    assert second.status == "succeeded"
    assert reused.value.status == 422
    assert reused.value.idempotency_key == "order-42"
    assert len(target_server.received("/once")) == 1
    assert target_server.received("/other") == []


def test_a_human_rejection_raises_rejected_with_the_approvers_reason(outbox_server: OutboxServer) -> None:
    key = outbox_server.agent("writer", "http-writer")
    call = {"method": "DELETE", "url": "http://127.0.0.1:9/v1/orders/7"}
    with OutboxClient(outbox_server.url, key) as outbox:
        pending = outbox.submit("http.request", call, idempotency_key="delete-7")
        assert pending.status == "awaiting_approval"
        assert pending.decision.effect == "approve"
        assert outbox.wait(pending.id, timeout=0).status == "awaiting_approval"  # not settled: a human decides

        outbox_server.deny(pending.id, "order 7 is still open", may_resubmit=True)
        with pytest.raises(Rejected) as waited:
            outbox.wait(pending.id, timeout=10)
        # The same call again (a retry after a crash, say): the same outcome, never a new action.
        with pytest.raises(Rejected) as retried:
            outbox.submit("http.request", call, wait=5, idempotency_key="delete-7")

    for error in (waited.value, retried.value):
        assert error.problem.slug == "rejected-by-approver"
        assert error.reason == "order 7 is still open"
        assert error.approver == "user:oncall@example.com"
        assert error.may_resubmit is True
        assert error.action_id == pending.id
    assert outbox_server.action_count() == 1


def test_cancel_get_and_the_listing_across_pages(outbox_server: OutboxServer) -> None:
    key = outbox_server.agent("writer", "http-writer")
    with OutboxClient(outbox_server.url, key) as outbox:
        pending = [
            outbox.submit("http.request", {"method": "DELETE", "url": f"http://127.0.0.1:9/v1/items/{n}"})
            for n in range(3)
        ]
        cancelled = outbox.cancel(pending[0].id)
        cancelled_again = outbox.cancel(pending[0].id)
        listed = list(outbox.actions(page_size=2))
        awaiting = list(outbox.actions(status="awaiting_approval", tool="http.request", page_size=1))
        with pytest.raises(ActionNotFound):
            outbox.get("act_does_not_exist")

    assert cancelled.status == "cancelled"
    assert cancelled_again.id == cancelled.id and cancelled_again.status == "cancelled"
    assert [a.id for a in listed] == [a.id for a in reversed(pending)]
    assert [a.id for a in awaiting] == [pending[2].id, pending[1].id]


def test_cancelling_a_finished_action_raises_not_cancellable(
    outbox_server: OutboxServer, target_server: TargetServer
) -> None:
    key = outbox_server.agent("reader", "http-reader")
    with OutboxClient(outbox_server.url, key) as outbox:
        done = outbox.submit("http.request", get(f"{target_server.base_url}/done"), wait=20)
        with pytest.raises(NotCancellable) as refused:
            outbox.cancel(done.id)
    assert refused.value.status == 409
    assert refused.value.action_id == done.id


def test_a_models_tool_call_is_submitted_under_the_name_the_model_used(
    outbox_server: OutboxServer, target_server: TargetServer
) -> None:
    key = outbox_server.agent("reader", "http-reader")
    url = f"{target_server.base_url}/from-a-model"
    openai_call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "http__request", "arguments": f'{{"method": "GET", "url": "{url}"}}'},
    }
    anthropic_block = {"type": "tool_use", "id": "toolu_1", "name": "http__request", "input": get(url)}
    with OutboxClient(outbox_server.url, key) as outbox:
        from_openai = outbox.submit_tool_call(openai_call, wait=20)
        from_anthropic = outbox.submit_tool_call(anthropic_block, wait=20)

    assert from_openai.tool == from_anthropic.tool == "http.request"
    assert from_openai.status == from_anthropic.status == "succeeded"
    assert len(target_server.received("/from-a-model")) == 2


def test_a_deferred_call_is_settled_at_once_with_not_before_and_retry_after(
    start_outbox: Callable[..., OutboxServer], policy_dir: Path, tmp_path: Path
) -> None:
    write_closed_window_mail(policy_dir, tmp_path)
    outbox_server = start_outbox(**MAIL_SETTINGS)
    key = outbox_server.agent("mailer", "mailer")
    with OutboxClient(outbox_server.url, key) as outbox:
        deferred = outbox.submit("email.send", closed_window_message(), wait=60)
        followed = outbox.wait(deferred.id, timeout=60)

    assert deferred.status == "deferred" and deferred.is_settled and not deferred.is_terminal
    assert deferred.not_before == opening_day()
    later = seconds_until(opening_day())
    assert deferred.retry_after is not None and later <= deferred.retry_after <= later + 5
    assert followed.status == "deferred" and followed.not_before == opening_day()


def test_a_tool_that_cannot_run_here_raises_tool_unavailable_at_once_and_records_nothing(
    outbox_server: OutboxServer,
) -> None:
    # No Terraform directory or credentials are configured on the test server.
    key = outbox_server.agent("terraform", "terraform-operator")
    with OutboxClient(outbox_server.url, key) as outbox:
        listed = {t.name: t for t in outbox.tool_definitions()}
        with pytest.raises(ToolUnavailable) as unavailable:
            outbox.submit("terraform.plan", {"stack": "network"}, idempotency_key="plan-network")

    assert listed["terraform.plan"].available is False
    assert listed["terraform.plan"].unavailable_reason
    error = unavailable.value
    assert error.status == 503 and error.problem.slug == "tool-unavailable"
    assert error.reason == listed["terraform.plan"].unavailable_reason
    # The server asks for a minute (an operator must act): more than the client sleeps on, so it
    # raises at once with the wait and the key to come back with.
    assert error.retry_after == 60
    assert error.idempotency_key == "plan-network"
    assert outbox_server.action_count() == 0
