"""MCP submissions are decided by the shadow policy too (docs/shadow-policy.md): the same
recording as over HTTP, never enforced, never shown to the agent."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from sqlmodel import select

from outbox.audit.models import AuditEvent
from tests.actions.test_shadow import SHADOW_DENY, shadow_of
from tests.mcp.conftest import RunningOutbox
from tests.mcp.test_calls import call
from tests.support.calls import load
from tests.support.http_target import TargetServer


def test_an_mcp_call_the_shadow_would_deny_runs_and_records_the_disagreement_the_agent_never_sees(
    make_outbox: Callable[..., RunningOutbox], policy_dir: Path, tmp_path: Path, target_server: TargetServer
) -> None:
    outbox = make_outbox(shadow_policy_dir=shadow_of(policy_dir, tmp_path / "shadow"))
    key = outbox.agent("reader", "http-reader")

    result = call(outbox, key, "http__request", {"method": "GET", "url": f"{target_server.base_url}/reports/q3"})

    assert result.is_error is False
    action = result.structured_content
    assert action is not None
    assert action["status"] == "succeeded"  # the live policy allows it; the shadow's deny is not enforced
    assert len(target_server.received("/reports/q3")) == 1
    assert "shadow" not in action
    assert "shadow" not in json.dumps(result.model_dump(mode="json"))
    shadow = load(outbox.runtime, action["id"]).shadow
    assert shadow is not None
    assert (shadow["changes"], shadow["outcome"]["rules"]) == (["allow-to-deny"], [SHADOW_DENY])
    with outbox.runtime.db.session() as session:
        received = session.exec(
            select(AuditEvent).where(AuditEvent.action_id == action["id"], AuditEvent.event_type == "action.received")
        ).one()
    assert json.loads(received.data_json)["shadow"] == shadow
