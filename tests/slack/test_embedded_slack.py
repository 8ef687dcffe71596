"""End to end: `outbox serve` (embedded, real uvicorn) posts to a fake Slack, a signed click
approves, the embedded worker runs the call, and the message ends showing the outcome."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.approvals.support import EXTRA_RULES
from tests.conftest import POLICIES
from tests.slack.fake_slack import BOT_TOKEN, FakeSlack
from tests.slack.payloads import SIGNING_SECRET, block_action, form_body, signed_headers
from tests.support.http_target import TargetServer
from tests.support.processes import free_port, outbox_env, run_cli, start, stop, wait_ready, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path: Path, fake_slack: FakeSlack) -> Iterator[tuple[str, dict[str, str], Path]]:
    shutil.copytree(POLICIES, tmp_path / "policies")
    with (tmp_path / "policies" / "rules.csv").open("a") as rules:
        rules.write(EXTRA_RULES)
    env = outbox_env(
        OUTBOX_SWEEP_INTERVAL_SECONDS="0.3",
        OUTBOX_SLACK_BOT_TOKEN=BOT_TOKEN,
        OUTBOX_SLACK_SIGNING_SECRET=SIGNING_SECRET,
        OUTBOX_SLACK_API_URL=fake_slack.base_url,
        OUTBOX_SLACK_DEFAULT_CHANNEL="#approvals",
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    key = run_cli(["agents", "create", "deployer", "--role", "http-writer"], env, tmp_path).splitlines()[-1]
    process = start(["serve", "--port", str(port)], env, tmp_path, tmp_path / "serve.log")
    wait_ready(url, process, tmp_path / "serve.log")
    env["KEY"] = key
    yield url, env, tmp_path
    stop(process)


def buttons(call: Any) -> list[dict[str, Any]]:
    return next(b for b in call.body["blocks"] if b["type"] == "actions")["elements"]  # type: ignore[no-any-return]


def test_approve_in_slack_run_and_report_the_outcome(
    server: tuple[str, dict[str, str], Path], fake_slack: FakeSlack, target_server: TargetServer
) -> None:
    url, env, _ = server
    agent = {"Authorization": f"Bearer {env['KEY']}"}
    submitted = httpx.post(
        f"{url}/v1/actions",
        json={"tool": "http.request", "args": {"method": "DELETE", "url": f"{target_server.base_url}/items/42"}},
        headers={**agent, "Idempotency-Key": "e2e-delete-42"},
        timeout=10,
    )
    assert submitted.status_code == 202, submitted.text
    action_id = submitted.json()["id"]
    assert submitted.json()["status"] == "awaiting_approval"

    [posted] = fake_slack.wait_for("chat.postMessage")
    approve = buttons(posted)[0]
    body = form_body(block_action(user_id="U0LEAD1", action_id=approve["action_id"], value=approve["value"]))
    clicked = httpx.post(f"{url}/slack/interactions", content=body, headers=signed_headers(body), timeout=10)
    assert clicked.status_code == 200

    def status() -> str:
        return str(httpx.get(f"{url}/v1/actions/{action_id}", headers=agent, timeout=5).json()["status"])

    assert wait_until(lambda: status() == "succeeded", 30), status()
    assert [r.method for r in target_server.received("/items/42")] == ["DELETE"]
    assert wait_until(lambda: len(fake_slack.calls_to("chat.update")) >= 2, 30)
    updates = [json.dumps(u.body["blocks"]) for u in fake_slack.calls_to("chat.update")]
    assert "<@U0LEAD1> approved" in updates[0]
    assert "Outcome: succeeded" in updates[-1]
