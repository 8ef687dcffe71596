"""A client generated from the server's OpenAPI document drives the server.

`outbox serve` runs under real uvicorn (SQLite, embedded workers); its /openapi.json is written to
a file and `openapi-python-client generate` builds a package from it, which must come out without
a warning (the generator warns about every part of a document it cannot turn into code). The
generated package is imported as any client would use it, and with it, on loopback only: an
agent submits an allowed `http.request` (to a local target server) with an Idempotency-Key and
its bearer key, reads the action back, replays the key, has a call denied and gets a typed
problem, and an admin follows an action's link to its approval.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import POLICIES
from tests.support.http_target import TargetServer
from tests.support.processes import free_port, outbox_env, run_cli, start, stop, wait_ready

pytestmark = pytest.mark.slow

ADMIN_TOKEN = "admin-token-for-the-generated-client-0123456789"
PACKAGE = "outbox_generated_client"
GENERATOR_TIMEOUT_SECONDS = 180


@dataclass
class Server:
    url: str
    reader_key: str
    writer_key: str


@dataclass
class Generated:
    """The generated package and the generator's own output."""

    output: str
    root: Path

    def module(self, name: str) -> Any:
        return importlib.import_module(f"{PACKAGE}.{name}")

    def client(self, base_url: str, token: str) -> Any:
        return self.module("client").AuthenticatedClient(
            base_url=base_url, token=token, raise_on_unexpected_status=True
        )


@pytest.fixture
def connect(generated: Generated, server: Server) -> Iterator[Callable[[str], Any]]:
    """Opens a generated client with a bearer token; every one is closed after the test."""
    with contextlib.ExitStack() as opened:

        def open_client(token: str) -> Any:
            return opened.enter_context(generated.client(server.url, token))

        yield open_client


@pytest.fixture(scope="module")
def target() -> Iterator[TargetServer]:
    server = TargetServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("generated-client-server")
    shutil.copytree(POLICIES, workdir / "policies")
    env = outbox_env(
        OUTBOX_DATABASE_URL=f"sqlite:///{workdir / 'outbox.db'}",
        OUTBOX_ADMIN_TOKEN=ADMIN_TOKEN,
        # Nothing of mail leaves the process: no sink, and DNS asked of a loopback port where nothing answers.
        OUTBOX_MAIL_EMBEDDED_SINK="false",
        OUTBOX_DNS_RESOLVER=f"127.0.0.1:{free_port()}",
        OUTBOX_DNS_TIMEOUT_SECONDS="1",
    )
    reader = run_cli(["agents", "create", "generated-reader", "--role", "http-reader"], env, workdir)
    writer = run_cli(["agents", "create", "generated-writer", "--role", "http-writer"], env, workdir)
    port = free_port()
    log = workdir / "serve.log"
    process = start(["serve", "--host", "127.0.0.1", "--port", str(port)], env, workdir, log)
    try:
        wait_ready(f"http://127.0.0.1:{port}", process, log)
        yield Server(f"http://127.0.0.1:{port}", reader, writer)
    finally:
        stop(process)


def generate(document: dict[str, Any], root: Path) -> subprocess.CompletedProcess[str]:
    """`openapi-python-client generate` on the document, into `root/PACKAGE`."""
    path = root / "openapi.json"
    path.write_text(json.dumps(document))
    # The generator formats its output with ruff, which is installed beside this interpreter.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [sys.executable, "-m", "openapi_python_client", "generate"]
    command += ["--path", str(path), "--output-path", str(root / PACKAGE), "--meta", "none"]
    return subprocess.run(
        command, env=env, cwd=root, capture_output=True, text=True, timeout=GENERATOR_TIMEOUT_SECONDS, check=False
    )


def complaints(output: str) -> list[str]:
    """The generator's lines about parts of the document it could not use."""
    words = ("warning", "error", "skipping", "unable", "could not", "unsupported", "cannot")
    return [line for line in output.splitlines() if any(word in line.lower() for word in words)]


@pytest.fixture(scope="module")
def document(server: Server) -> dict[str, Any]:
    answer = httpx.get(f"{server.url}/openapi.json")
    assert answer.status_code == 200
    served: dict[str, Any] = answer.json()
    return served


@pytest.fixture(scope="module")
def generated(document: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Generated]:
    root = tmp_path_factory.mktemp("generated-client")
    result = generate(document, root)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    sys.path.insert(0, str(root))
    try:
        yield Generated(output, root)
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def http_get_call(generated: Generated, url: str, method: str = "GET") -> Any:
    models = generated.module("models")
    return models.HttpRequestCall(
        tool="http.request",
        args=models.HttpRequestArgs(method=models.HttpRequestArgsMethod(method), url=url),
        reason="Generated-client test",
    )


def submit(generated: Generated, client: Any, body: Any, key: str, prefer: str | None = None) -> Any:
    submit_action = generated.module("api.actions.submit_action")
    if prefer is None:
        return submit_action.sync_detailed(client=client, body=body, idempotency_key=key)
    return submit_action.sync_detailed(client=client, body=body, idempotency_key=key, prefer=prefer)


def test_the_generator_takes_the_whole_document_without_a_warning(generated: Generated) -> None:
    assert "Generating" in generated.output
    assert complaints(generated.output) == [], generated.output
    package = generated.root / PACKAGE
    for module in ("api/actions/submit_action.py", "api/actions/read_action.py", "api/approvals/show_request.py"):
        assert (package / module).is_file(), module
    for model in ("http_request_call.py", "http_request_args.py", "action_out.py", "problem.py", "action_links.py"):
        assert (package / "models" / model).is_file(), model


def test_the_generator_would_say_so_of_a_part_it_cannot_use(document: dict[str, Any], tmp_path: Path) -> None:
    # The check above can fail: the same document with one dangling reference is reported.
    broken = copy.deepcopy(document)
    broken["components"]["schemas"]["ActionOut"]["properties"]["links"] = {"$ref": "#/components/schemas/Missing"}
    result = generate(broken, tmp_path)
    assert complaints(result.stdout + result.stderr), result.stdout + result.stderr


def test_an_allowed_call_runs_and_reads_back_typed(
    generated: Generated, server: Server, connect: Callable[[str], Any], target: TargetServer
) -> None:
    models = generated.module("models")
    client = connect(server.reader_key)
    body = http_get_call(generated, f"{target.base_url}/v1/orders/generated")

    answer = submit(generated, client, body, "generated-allowed-1", prefer="wait=20")

    assert answer.status_code == 200, answer.content
    action = answer.parsed
    assert isinstance(action, models.ActionOut)
    assert action.status == models.ActionStatus.SUCCEEDED
    assert action.tool == "http.request"
    assert action.decision.effect == models.ActionDecisionOutEffect.ALLOW
    assert answer.headers["Location"] == action.links.self_ == f"/v1/actions/{action.id}"
    assert answer.headers["Preference-Applied"] == "wait=20"
    assert len(target.received("/v1/orders/generated")) == 1

    read_action = generated.module("api.actions.read_action")
    read = read_action.sync(client=client, action_id=action.id)
    assert isinstance(read, models.ActionOut)
    assert read.id == action.id
    assert read.status == models.ActionStatus.SUCCEEDED
    assert read.result.response["status"] == 200
    assert read.finished_at is not None and read.finished_at.tzinfo is not None


def test_a_replayed_key_answers_the_action_as_it_is_and_runs_nothing(
    generated: Generated, server: Server, connect: Callable[[str], Any], target: TargetServer
) -> None:
    models = generated.module("models")
    client = connect(server.reader_key)
    body = http_get_call(generated, f"{target.base_url}/v1/orders/replayed")
    first = submit(generated, client, body, "generated-replayed", prefer="wait=20")
    assert first.status_code == 200, first.content

    again = submit(generated, client, body, "generated-replayed")

    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert isinstance(again.parsed, models.ActionOut)
    assert again.parsed.id == first.parsed.id
    assert len(target.received("/v1/orders/replayed")) == 1


def test_a_denial_is_a_typed_problem_naming_the_rule(
    generated: Generated, server: Server, connect: Callable[[str], Any]
) -> None:
    models = generated.module("models")
    client = connect(server.reader_key)
    body = http_get_call(generated, "http://127.0.0.1:9/admin/users")

    answer = submit(generated, client, body, "generated-denied")

    assert answer.status_code == 403
    problem = answer.parsed
    assert isinstance(problem, models.Problem)
    assert problem.type_.endswith("/denied-by-policy")
    assert problem.status == 403
    assert problem.hint
    assert problem.action_status == "denied"
    assert problem.decision.effect == models.ActionDecisionOutEffect.DENY
    assert any("admin" in rule["rule"] for rule in (r.to_dict() for r in problem.decision.rules))
    read = generated.module("api.actions.read_action").sync(client=client, action_id=problem.action_id)
    assert read.status == models.ActionStatus.DENIED


def test_invalid_arguments_are_a_typed_problem_listing_each_field(
    generated: Generated, server: Server, connect: Callable[[str], Any]
) -> None:
    models = generated.module("models")
    client = connect(server.reader_key)
    body = http_get_call(generated, "ftp://127.0.0.1/file")

    answer = submit(generated, client, body, "generated-invalid")

    assert answer.status_code == 422
    assert isinstance(answer.parsed, models.Problem)
    assert [error.field for error in answer.parsed.errors] == ["args.url"]


def test_an_action_needing_a_human_links_to_its_approval(
    generated: Generated, server: Server, connect: Callable[[str], Any]
) -> None:
    models = generated.module("models")
    agent = connect(server.writer_key)
    body = http_get_call(generated, "http://127.0.0.1:9/v1/orders/7", method="DELETE")

    answer = submit(generated, agent, body, "generated-approval")

    assert answer.status_code == 202
    action = answer.parsed
    assert action.status == models.ActionStatus.AWAITING_APPROVAL
    assert action.links.approval == f"/v1/admin/approvals/{action.id}"
    admin = connect(ADMIN_TOKEN)
    approval = generated.module("api.approvals.show_request").sync(client=admin, ref=action.id)
    assert isinstance(approval, models.ApprovalOut)
    assert approval.action_id == action.id
    assert approval.status == "pending"
    followed = admin.get_httpx_client().get(action.links.approval)
    assert followed.status_code == 200
    assert models.ApprovalOut.from_dict(followed.json()).id == approval.id
