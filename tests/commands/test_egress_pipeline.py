"""A kubectl-shaped call through the whole pipeline, with its egress on the record.

kubectl is not installed here, so the tool is what kubectl does on the wire, made with curl:
a per-cluster client configuration (server URL and CA, a server-side secret, like a
kubeconfig), an HTTPS GET through HTTPS_PROXY to the cluster chosen by the `cluster` enum, whose
API server's address is a server-side named destination. The fake cluster API serves TLS on
loopback for `staging.cluster.test`, which the test's DNS server resolves to 127.0.0.1.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from html import unescape as html_unescape
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from pydantic import SecretStr

from outbox.api.app import create_app
from outbox.commands.sandbox import SandboxSettings, sandbox_problem
from outbox.config import Settings
from outbox.execution.service import run_action
from outbox.runtime import Runtime
from outbox.users.models import Role
from outbox.users.service import add_user, set_password
from tests.approvals.support import approval_of
from tests.commands.egress_world import ClusterApi, NameServer, cluster_api
from tests.console.conftest import PASSWORD, signed_in
from tests.support.agents import make_agent
from tests.support.calls import load, submit_call
from tests.support.dispatchers import RecordingDispatcher
from tests.support.processes import free_port

NAMESPACE = r"'^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'"
CLUSTER_TOOLS = f"""
tools:
  - name: k8s.list_pods_api
    description: List the pods of one namespace through the cluster's API server (kubectl get pods, made with curl).
    parameters:
      cluster: {{type: string, enum: [staging, production], description: The cluster.}}
      namespace: {{type: string, pattern: {NAMESPACE}, max_length: 63, description: The exact namespace.}}
    argv: [curl, --silent, --show-error, --fail-with-body, --max-time, "10",
           --config, "/run/secrets/cluster-{{cluster}}", --get,
           --url-query, "fieldSelector=metadata.namespace={{namespace}}"]
    targets:
      - {{object: "k8s:{{cluster}}/namespace/{{namespace}}", act: read}}
    sandbox: network
    egress:
      - {{destination: "{{cluster}}"}}
    secrets:
      - {{name: cluster-staging, file: cluster-staging}}
      - {{name: cluster-production, file: cluster-production}}
      - {{name: cluster-ca, file: cluster-ca}}

  - name: k8s.scale_api
    description: Scale one Deployment through the cluster's API server; the dry run asks the server with dryRun=All.
    parameters:
      cluster: {{type: string, enum: [staging, production], description: The cluster.}}
      namespace: {{type: string, pattern: {NAMESPACE}, max_length: 63, description: The exact namespace.}}
      deployment: {{type: string, pattern: {NAMESPACE}, max_length: 63, description: The exact Deployment.}}
      replicas: {{type: integer, minimum: 0, maximum: 20, description: Replicas.}}
    argv: [curl, --silent, --show-error, --fail-with-body, --max-time, "10",
           --config, "/run/secrets/cluster-{{cluster}}", --get, --url-query, "namespace={{namespace}}",
           --url-query, "deployment={{deployment}}",
           --url-query, "replicas={{replicas}}"]
    dry_run: [curl, --silent, --show-error, --fail-with-body, --max-time, "10", --config,
              "/run/secrets/cluster-{{cluster}}", --get, --url-query, "namespace={{namespace}}",
              --url-query, "deployment={{deployment}}", --url-query, "replicas={{replicas}}", --url-query, dryRun=All]
    targets:
      - {{object: "k8s:{{cluster}}/namespace/{{namespace}}/deployment/{{deployment}}", act: scale}}
    sandbox: network
    egress:
      - {{destination: "{{cluster}}"}}
    secrets:
      - {{name: cluster-staging, file: cluster-staging}}
      - {{name: cluster-production, file: cluster-production}}
      - {{name: cluster-ca, file: cluster-ca}}
"""


def client_config(url: str) -> SecretStr:
    """What a kubeconfig holds for curl: where the API server is and which CA signs it."""
    return SecretStr(f'url = "{url}"\ncacert = "/run/secrets/cluster-ca"\n')


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """The outbox's settings (tests/commands' own `settings` fixture is the sandbox's)."""
    return make_settings()


@pytest.fixture
def api(name_server: NameServer) -> Iterator[ClusterApi]:
    if (problem := sandbox_problem(SandboxSettings())) is not None:
        pytest.skip(f"sandbox unavailable: {problem}")
    name_server.publish("staging.cluster.test", "127.0.0.1")
    with cluster_api(["staging.cluster.test"], {"payments": ["payments-web-0", "payments-worker-0"]}) as server:
        yield server


@pytest.fixture
def cluster_runtime(
    make_runtime: Callable[..., Runtime], policy_dir: Path, name_server: NameServer, api: ClusterApi
) -> Callable[..., Runtime]:
    (policy_dir / "tools" / "cluster_api.yaml").write_text(CLUSTER_TOOLS)

    def build(production_url: str, production: dict[str, Any]) -> Runtime:
        return make_runtime(
            RecordingDispatcher(),
            sandbox_egress_resolver=name_server.address,
            sandbox_destinations={
                "staging": {"host": "staging.cluster.test", "port": api.port, "allow_private": True},
                "production": production,
            },
            sandbox_secrets={
                "cluster-staging": client_config(f"https://staging.cluster.test:{api.port}/api/v1/pods"),
                "cluster-production": client_config(production_url),
                "cluster-ca": SecretStr(api.certificates.ca_pem.decode()),
            },
        )

    return build


def test_a_kubectl_shaped_call_reaches_the_chosen_cluster_through_the_proxy(
    cluster_runtime: Callable[..., Runtime], api: ClusterApi
) -> None:
    runtime = cluster_runtime("https://production.cluster.test:6443/api/v1/pods", {"host": "192.0.2.7", "port": 6443})
    key = make_agent(runtime.db, "k8s-bot", ["k8s-operator"])

    action_id = submit_call(runtime, key, "k8s.list_pods_api", {"cluster": "staging", "namespace": "payments"})
    assert run_action(runtime, action_id) == "succeeded"

    action = load(runtime, action_id)
    assert action.response is not None
    pods = json.loads(action.response["stdout"])
    assert [item["metadata"]["name"] for item in pods["items"]] == ["payments-web-0", "payments-worker-0"]
    assert api.requests == ["/api/v1/pods?fieldSelector=metadata.namespace%3dpayments"]  # as curl encodes it
    (record,) = action.response["egress"]
    assert (record["outcome"], record["host"], record["port"]) == ("connected", "staging.cluster.test", api.port)
    assert record["address"] == "127.0.0.1"
    assert record["bytes_received"] > len(action.response["stdout"])  # TLS, so more than the body
    assert action.response["egress_truncated"] is False


def test_a_connection_the_dry_run_attempts_outside_the_destination_is_refused_and_shown_to_the_approver(
    cluster_runtime: Callable[..., Runtime], api: ClusterApi
) -> None:
    # The production client configuration points at the cloud metadata service, not at the
    # production API server the operator configured: the proxy refuses, and the approver sees it.
    production = {"host": "production.cluster.test", "port": 6443}
    runtime = cluster_runtime("https://169.254.169.254/latest/meta-data/", production)
    key = make_agent(runtime.db, "scaler", ["k8s-operator"])
    args = {"cluster": "production", "namespace": "payments", "deployment": "web", "replicas": 3}

    action_id = submit_call(runtime, key, "k8s.scale_api", args)

    action = load(runtime, action_id)
    assert action.status == "awaiting_approval"
    assert action.preview is not None
    assert action.preview["egress"] == ["production.cluster.test:6443 (destination production)"]
    dry_run = action.preview["dry_run"]
    assert dry_run["exit_code"] != 0
    (record,) = dry_run["egress"]
    assert (record["outcome"], record["host"], record["port"]) == ("refused", "169.254.169.254", 443)
    assert record["reason"] == "169.254.169.254:443 is not among this tool's allowed destinations"
    assert api.requests == []
    # The approver sees the refused connection on the console's approval page.
    add_user(runtime.db, "lead@example.com", role=Role.OPERATOR, actor="test")
    set_password(runtime.db, "lead@example.com", PASSWORD, actor="test")
    with TestClient(create_app(runtime=runtime), base_url="https://testserver", follow_redirects=False) as client:
        page = signed_in(client, "lead@example.com").get(f"/console/approvals/{approval_of(runtime, action_id).id}")
    assert page.status_code == 200
    table = html_unescape(page.text.split('<table id="dry-run-connections">', 1)[1].split("</table>", 1)[0])
    assert "<code>169.254.169.254:443</code>" in table
    assert "refused: 169.254.169.254:443 is not among this tool's allowed destinations" in table


@pytest.fixture
def outbox_api(cluster_runtime: Callable[..., Runtime]) -> Iterator[tuple[Runtime, int]]:
    """The real outbox API under uvicorn on loopback, and a production destination pointing at it."""
    port = free_port()
    runtime = cluster_runtime(f"https://127.0.0.1:{port}/v1/actions", {"host": "127.0.0.1", "port": port})
    server = uvicorn.Server(
        uvicorn.Config(create_app(runtime=runtime), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    yield runtime, port
    server.should_exit = True
    thread.join(timeout=15)


def test_the_outbox_s_own_api_is_unreachable_even_when_named_as_a_destination(
    outbox_api: tuple[Runtime, int],
) -> None:
    runtime, port = outbox_api
    key = make_agent(runtime.db, "k8s-bot", ["k8s-operator"])

    action_id = submit_call(runtime, key, "k8s.list_pods_api", {"cluster": "production", "namespace": "payments"})
    assert run_action(runtime, action_id) == "failed"
    with httpx.Client() as client:  # the API is up: refused by the proxy, not for want of a server
        assert client.get(f"http://127.0.0.1:{port}/healthz").status_code == 200

    action = load(runtime, action_id)
    assert action.response is not None
    (record,) = action.response["egress"]
    assert (record["outcome"], record["host"], record["port"]) == ("refused", "127.0.0.1", port)
    # Loopback needs allow_private on the destination, which an operator sets only for a cluster.
    assert "is or resolves to 127.0.0.1, a loopback address" in record["reason"]
