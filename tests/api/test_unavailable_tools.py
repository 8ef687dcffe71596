"""A tool that cannot run on this server is refused before anything is recorded.

Without a usable bubblewrap (or with a secret the tool needs missing), `POST /v1/actions`
answers 503 problem+json naming the missing piece, with Retry-After, and records nothing: no
action, no audit event, no stored answer for the key. Once the operator fixes the server, the
same Idempotency-Key records the call and it runs. A key answered before the server broke is
still answered (a replay runs nothing, so it needs nothing), and a call policy denies is denied
whatever the server lacks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import func, select

from outbox.actions import service
from outbox.actions.models import Action
from outbox.agents.service import authenticate
from outbox.api.app import create_app
from outbox.audit.models import AuditEvent
from outbox.errors import ToolUnavailable
from outbox.execution.service import run_action
from outbox.idempotency.models import IdempotencyRecord
from outbox.runtime import Runtime
from tests.support.agents import bearer, make_agent
from tests.support.dispatchers import RecordingDispatcher
from tests.support.sandbox_dirs import sandbox_readable_dir

LIST_ROOT = {"tool": "fs.list_directory", "args": {"path": "."}}


@pytest.fixture
def repo() -> Iterator[Path]:
    """A directory the sandbox's unprivileged uid can read (pytest's tmp_path is 0700)."""
    with sandbox_readable_dir("outbox-unavailable-") as path:
        yield path


@pytest.fixture
def serve(make_runtime: Callable[..., Runtime], repo: Path) -> Iterator[Callable[..., tuple[TestClient, Runtime]]]:
    """An app on a new runtime over the test's database, with sandbox settings as given."""
    clients: list[TestClient] = []

    def start(**sandbox: object) -> tuple[TestClient, Runtime]:
        runtime = make_runtime(RecordingDispatcher(), sandbox_repo_dir=repo, allow_unsandboxed=False, **sandbox)
        client = TestClient(create_app(runtime=runtime), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client, runtime

    yield start
    for client in clients:
        client.__exit__(None, None, None)


def rows(runtime: Runtime, table: type[Action] | type[AuditEvent] | type[IdempotencyRecord]) -> int:
    with runtime.db.read_session() as session:
        return int(session.exec(select(func.count()).select_from(table)).one())


def test_without_bubblewrap_the_call_is_refused_unrecorded_and_the_same_key_works_once_fixed(
    serve: Callable[..., tuple[TestClient, Runtime]], tmp_path: Path
) -> None:
    broken_client, broken = serve(sandbox_bwrap_path=tmp_path / "no-bwrap")
    key = make_agent(broken.db, "repo-bot", ["repo-reader"])
    events_before = rows(broken, AuditEvent)

    refused = broken_client.post("/v1/actions", json=LIST_ROOT, headers={**bearer(key), "Idempotency-Key": "ls-1"})

    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["retry-after"] == str(ToolUnavailable.RETRY_AFTER_SECONDS)
    problem = refused.json()
    assert problem["type"].endswith("/tool-unavailable")
    assert problem["status"] == 503
    assert problem["tool"] == "fs.list_directory"
    assert problem["reason"].startswith("bubblewrap (bwrap) is not installed or not executable")
    assert "bwrap" in problem["detail"]
    assert "same Idempotency-Key" in problem["hint"]
    assert "operator" in problem["hint"]
    # Nothing recorded: no action, no audit event, no answer stored for the key.
    assert rows(broken, Action) == 0
    assert rows(broken, IdempotencyRecord) == 0
    assert rows(broken, AuditEvent) == events_before
    assert broken.dispatcher.published == []  # type: ignore[attr-defined]

    # The operator fixes the server (bwrap found on PATH): the same key records the call, which runs.
    fixed_client, fixed = serve(sandbox_bwrap_path=None)
    accepted = fixed_client.post("/v1/actions", json=LIST_ROOT, headers={**bearer(key), "Idempotency-Key": "ls-1"})

    assert accepted.status_code == 202, accepted.text
    assert "idempotent-replayed" not in accepted.headers
    action_id = accepted.json()["id"]
    assert accepted.json()["status"] == "queued"
    assert run_action(fixed, action_id) == "succeeded"
    done = fixed_client.get(f"/v1/actions/{action_id}", headers=bearer(key)).json()
    assert done["result"]["artifact"]["unsandboxed"] is False
    assert "README.md" in done["result"]["response"]["stdout"]
    assert rows(fixed, Action) == 1


def test_a_key_answered_before_the_server_broke_is_still_replayed(
    serve: Callable[..., tuple[TestClient, Runtime]], tmp_path: Path
) -> None:
    working_client, working = serve(sandbox_bwrap_path=None)
    key = make_agent(working.db, "repo-bot", ["repo-reader"])
    first = working_client.post("/v1/actions", json=LIST_ROOT, headers={**bearer(key), "Idempotency-Key": "ls-2"})
    assert first.status_code == 202

    broken_client, _broken = serve(sandbox_bwrap_path=tmp_path / "no-bwrap")
    again = broken_client.post("/v1/actions", json=LIST_ROOT, headers={**bearer(key), "Idempotency-Key": "ls-2"})
    other = broken_client.post("/v1/actions", json=LIST_ROOT, headers={**bearer(key), "Idempotency-Key": "ls-3"})

    assert again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert other.status_code == 503
    assert rows(working, Action) == 1


def test_a_missing_secret_is_named(serve: Callable[..., tuple[TestClient, Runtime]]) -> None:
    client, runtime = serve(sandbox_secrets={})
    key = make_agent(runtime.db, "k8s-bot", ["k8s-operator"])
    call = {"tool": "k8s.get_pods", "args": {"cluster": "staging", "namespace": "shop"}}

    refused = client.post("/v1/actions", json=call, headers={**bearer(key), "Idempotency-Key": "pods-1"})

    assert refused.status_code == 503
    assert refused.json()["tool"] == "k8s.get_pods"
    assert "secret 'kubeconfig' is not configured on this server" in refused.json()["reason"]
    assert rows(runtime, Action) == 0


def test_the_service_refuses_with_a_typed_error_every_face_maps(
    serve: Callable[..., tuple[TestClient, Runtime]], tmp_path: Path
) -> None:
    _client, runtime = serve(sandbox_bwrap_path=tmp_path / "no-bwrap")
    key = make_agent(runtime.db, "repo-bot", ["repo-reader"])
    with runtime.db.single_reads() as connection:
        agent = authenticate(connection, key)
    assert agent is not None

    with pytest.raises(ToolUnavailable) as refused:
        service.submit(runtime, agent, service.parse_envelope(LIST_ROOT), "ls-4", {"method": "POST"})

    assert refused.value.extra["tool"] == "fs.list_directory"
    assert "bwrap" in refused.value.extra["reason"]
    assert refused.value.retry_after == ToolUnavailable.RETRY_AFTER_SECONDS
    assert rows(runtime, Action) == 0


def test_a_call_policy_denies_is_denied_whatever_the_server_lacks(
    serve: Callable[..., tuple[TestClient, Runtime]],
) -> None:
    client, runtime = serve(sandbox_secrets={})
    key = make_agent(runtime.db, "reader", ["http-reader"])  # no k8s rule at all
    call = {"tool": "k8s.get_pods", "args": {"cluster": "staging", "namespace": "shop"}}

    denied = client.post("/v1/actions", json=call, headers={**bearer(key), "Idempotency-Key": "pods-2"})

    assert denied.status_code == 403
    assert denied.json()["type"].endswith("/denied-by-policy")
    assert "kubeconfig" not in denied.text  # an agent not allowed the tool learns nothing of the server
    assert rows(runtime, Action) == 1
