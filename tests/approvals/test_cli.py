"""`outbox approvals list|show|approve|deny`: the embedded default works without Slack, and an
approval through the CLI stands while Slack is down; the message catches up when Slack is back."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner, Result

from outbox.cli.main import app
from outbox.config import get_settings
from outbox.deliveries.service import KIND_SLACK_MESSAGE, deliver_due
from outbox.execution.sweeper import sweep_once
from outbox.runtime import Runtime
from tests.approvals.support import action_of, approval_of, deliveries, deployer, make_due, submit_call
from tests.slack.fake_slack import FakeSlack
from tests.support.http_target import TargetServer

runner = CliRunner()
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d")


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    monkeypatch.setenv("OUTBOX_LOG_JSON", "false")
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def use_runtime(env: pytest.MonkeyPatch, runtime: Runtime) -> None:
    settings = runtime.settings
    env.setenv("OUTBOX_DATABASE_URL", settings.database_url)
    env.setenv("OUTBOX_POLICY_DIR", str(settings.policy_dir))
    if settings.slack_bot_token is not None:
        env.setenv("OUTBOX_SLACK_BOT_TOKEN", settings.slack_bot_token.get_secret_value())
        env.setenv("OUTBOX_SLACK_API_URL", settings.slack_api_url)
        env.setenv("OUTBOX_SLACK_TIMEOUT_SECONDS", "2")
    get_settings.cache_clear()


def outbox(*args: str) -> Result:
    return runner.invoke(app, list(args))


def printed(result: Result) -> str:
    """What the command printed, without log lines other tests' logging setup may add."""
    return "\n".join(line for line in result.stdout.splitlines() if not LOG_LINE.match(line))


def test_list_show_approve_through_the_cli(
    gate_runtime: Runtime, cli_env: pytest.MonkeyPatch, target_server: TargetServer
) -> None:
    use_runtime(cli_env, gate_runtime)
    action_id = submit_call(
        gate_runtime,
        deployer(gate_runtime),
        method="DELETE",
        url=f"{target_server.base_url}/items/9",
        on_behalf_of="user:Bob",
    )
    approval_id = approval_of(gate_runtime, action_id).id

    listed = outbox("approvals", "list")
    shown = outbox("approvals", "show", approval_id)
    as_json = outbox("approvals", "show", action_id, "--json")

    assert listed.exit_code == 0, listed.output
    assert approval_id in listed.output and "agent:deployer for user:bob" in listed.output
    assert shown.exit_code == 0, shown.output
    assert f"delete http:127.0.0.1:{target_server.port}/items/9" in shown.output
    assert "p, role:http-writer, http:127.0.0.1:*/**, delete, approve" in shown.output
    assert "clean up a test resource" in shown.output
    assert json.loads(printed(as_json))["digest"] == approval_of(gate_runtime, action_id).digest

    approved = outbox("approvals", "approve", approval_id, "--as", "user:lead@example.com")

    assert approved.exit_code == 0, approved.output
    assert "approved (1 of 1)" in approved.output
    assert action_of(gate_runtime, action_id).status == "queued"
    # The CLI has no broker: the running server's sweeper publishes the queued action at once.
    assert sweep_once(gate_runtime).republished == [action_id]
    assert printed(outbox("approvals", "list")).count("\n") == 0  # only the header: nothing pending


def test_deny_through_the_cli_gives_the_agent_the_reason(
    gate_runtime: Runtime, cli_env: pytest.MonkeyPatch, target_server: TargetServer
) -> None:
    use_runtime(cli_env, gate_runtime)
    action_id = submit_call(gate_runtime, deployer(gate_runtime), method="DELETE", url=f"{target_server.base_url}/x")

    denied = outbox(
        "approvals", "deny", action_id, "--as", "user:lead@example.com", "--reason", "use the archive", "--may-resubmit"
    )

    assert denied.exit_code == 0, denied.output
    action = action_of(gate_runtime, action_id)
    assert action.status == "rejected"
    assert action.problem is not None
    assert action.problem["reason"] == "use the archive"
    assert action.problem["may_resubmit"] is True


def test_refusals_exit_non_zero_and_change_nothing(
    gate_runtime: Runtime, cli_env: pytest.MonkeyPatch, target_server: TargetServer
) -> None:
    use_runtime(cli_env, gate_runtime)
    action_id = submit_call(
        gate_runtime,
        deployer(gate_runtime),
        method="DELETE",
        url=f"{target_server.base_url}/x",
        on_behalf_of="oncall@example.com",
    )

    self_approval = outbox("approvals", "approve", action_id, "--as", "user:oncall@example.com")
    stranger = outbox("approvals", "approve", action_id, "--as", "user:intern@example.com")
    agent = outbox("approvals", "approve", action_id, "--as", "agent:deployer")
    missing = outbox("approvals", "show", "apr_doesnotexist")

    assert self_approval.exit_code == 1 and "self_approval" in self_approval.stderr
    assert stranger.exit_code == 1 and "not_authorized" in stranger.stderr
    assert agent.exit_code == 1 and "invalid_identity" in agent.stderr
    assert missing.exit_code == 1
    assert action_of(gate_runtime, action_id).status == "awaiting_approval"
    assert approval_of(gate_runtime, action_id).decisions == []


@pytest.mark.parametrize("outage", ["ratelimited", "connection_refused"])
def test_slack_down_while_approving_through_the_cli(
    outage: str,
    slack_runtime: Runtime,
    fake_slack: FakeSlack,
    cli_env: pytest.MonkeyPatch,
    target_server: TargetServer,
) -> None:
    use_runtime(cli_env, slack_runtime)
    action_id = submit_call(slack_runtime, deployer(slack_runtime), method="DELETE", url=f"{target_server.base_url}/x")
    deliver_due(slack_runtime)
    assert len(fake_slack.calls_to("chat.postMessage")) == 1
    if outage == "ratelimited":
        fake_slack.rate_limit(times=100, retry_after=30)
    else:
        fake_slack.go_down()

    approved = outbox("approvals", "approve", action_id, "--as", "user:lead@example.com")

    assert approved.exit_code == 0, approved.output
    assert "the decision stands" in approved.stderr
    assert action_of(slack_runtime, action_id).status == "queued"
    [pending] = [d for d in deliveries(slack_runtime, KIND_SLACK_MESSAGE) if d.state == "pending"]
    assert pending.attempts == 1
    if outage == "ratelimited":
        # Slack's Retry-After is honoured: the update is not due for 30 seconds.
        assert 25 < (pending.not_before - pending.updated_at).total_seconds() <= 30
        assert deliver_due(slack_runtime).delivered == []
    assert fake_slack.calls_to("chat.update") == []

    if outage == "ratelimited":
        fake_slack.clear_failures()
    else:
        fake_slack.come_back()
    make_due(slack_runtime)
    sweep_once(slack_runtime)

    [update] = fake_slack.calls_to("chat.update")
    assert update.body["ts"] == approval_of(slack_runtime, action_id).slack["ts"]  # type: ignore[index]
    assert "Approved" in json.dumps(update.body["blocks"])
    assert "user:lead@example.com" in json.dumps(update.body["blocks"])
