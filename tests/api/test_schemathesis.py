"""The OpenAPI document is a contract the server keeps: schemathesis against a real server.

`outbox serve` runs under real uvicorn, on SQLite and on PostgreSQL; `schemathesis run` generates
requests from GET /openapi.json (valid and invalid ones) with an agent key and with the admin
token, and the run fails on any 5xx, an undocumented status, a wrong content type, a body or
header the document does not describe, a missing required header that is not refused, or a 405
whose Allow header is not the documented methods.

One 5xx is an answer, not a failure: the document gives POST /v1/actions a schema per tool, so
schemathesis submits valid calls to the command tools too, and those cannot run on a test server
(no kubeconfig, no Terraform root): the submission answers the documented 503 `tool-unavailable`
and records nothing (`ALLOWED_UNAVAILABLE`).

Nothing leaves 127.0.0.0/8: schemathesis is pointed at the loopback server with no proxy and no
redirects; the fuzzing agent's only role (`http-reader`) allows GET/HEAD on 127.0.0.1 and nothing
else, so any other call a generated body makes is denied by policy before it runs (checked after
the run from the database); mail goes nowhere (no role sends it, and the sink is off); the DNS
checks the embedded server runs at start ask a loopback port where nothing answers, never the
system resolver; Slack and mail feedback have secrets set, so their endpoints answer 401.

Bounded for a 2-core CI machine: a fixed seed (override with OUTBOX_SCHEMATHESIS_SEED), at most
OUTBOX_SCHEMATHESIS_EXAMPLES examples per operation (default 10), one schemathesis worker, and a
hard timeout per run. Each run takes well under a minute.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import POLICIES
from tests.support.processes import free_port, outbox_env, run_cli, start, stop, wait_ready

pytestmark = pytest.mark.slow

ADMIN_TOKEN = "admin-token-for-schemathesis-0123456789"
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
        "missing_required_header",
        "unsupported_method",
        "allow_header_conformance",
    ]
)
SEED = os.environ.get("OUTBOX_SCHEMATHESIS_SEED", "20261204")
EXAMPLES = os.environ.get("OUTBOX_SCHEMATHESIS_EXAMPLES", "10")
RUN_TIMEOUT_SECONDS = 240
# schemathesis.toml: the one operation whose documented 503 (a tool that cannot run here) is not
# a server error.
ALLOWED_UNAVAILABLE = """
[[operations]]
include-path = "/v1/actions"
include-method = "POST"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "503"]
"""
ALLOWED_UNAVAILABLE_LOG = re.compile(r"method=POST path=/v1/actions .*status=503\b")
SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


@dataclass
class FuzzedServer:
    url: str
    database_url: str
    agent_key: str
    workdir: Path
    env: dict[str, str]


def _without_proxies(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.lower() not in PROXY_VARIABLES}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzedServer]:
    workdir = tmp_path_factory.mktemp(f"schemathesis-{request.param}")
    shutil.copytree(POLICIES, workdir / "policies")
    if request.param == "postgresql":
        database_url: str = request.getfixturevalue("postgres_server")
    else:
        database_url = f"sqlite:///{workdir / 'outbox.db'}"
    port = free_port()
    env = _without_proxies(
        outbox_env(
            OUTBOX_DATABASE_URL=database_url,
            OUTBOX_ADMIN_TOKEN=ADMIN_TOKEN,
            # A loopback port where nothing answers: the start-up DNS checks never reach a real resolver.
            OUTBOX_DNS_RESOLVER=f"127.0.0.1:{free_port()}",
            OUTBOX_DNS_TIMEOUT_SECONDS="1",
            OUTBOX_MAIL_EMBEDDED_SINK="false",
            OUTBOX_MAIL_EVENTS_TOKEN="mail-events-token-for-schemathesis-0123",
            OUTBOX_SLACK_SIGNING_SECRET="slack-signing-secret-for-schemathesis",
            # Generated `Prefer: wait=N` headers must not hold the run for a minute each.
            OUTBOX_MAX_WAIT_SECONDS="1",
            # The access log (info) is read after each run: no request may have answered 5xx.
            OUTBOX_LOG_LEVEL="INFO",
        )
    )
    agent_key = run_cli(["agents", "create", "fuzzer", "--role", "http-reader"], env, workdir)
    log = workdir / "serve.log"
    process = start(["serve", "--host", "127.0.0.1", "--port", str(port)], env, workdir, log)
    try:
        wait_ready(f"http://127.0.0.1:{port}", process, log)
        yield FuzzedServer(f"http://127.0.0.1:{port}", database_url, agent_key, workdir, env)
    finally:
        stop(process)


def schemathesis(server: FuzzedServer, token: str, *filters: str) -> subprocess.CompletedProcess[str]:
    config = server.workdir / "schemathesis.toml"
    config.write_text(ALLOWED_UNAVAILABLE)
    command = [
        SCHEMATHESIS,
        "--config-file",
        str(config),
        "run",
        f"{server.url}/openapi.json",
        "--url",
        server.url,
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        CHECKS,
        "--max-examples",
        EXAMPLES,
        "--seed",
        SEED,
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--max-redirects",
        "0",
        "--no-color",
        *filters,
    ]
    env = _without_proxies(dict(os.environ))
    return subprocess.run(
        command,
        env=env,
        cwd=server.workdir,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        check=False,
    )


def assert_clean(result: subprocess.CompletedProcess[str]) -> None:
    report = result.stdout[-12000:] + result.stderr[-4000:]
    assert result.returncode == 0, report
    assert " passed" in result.stdout, report
    assert "failure" not in result.stdout.rsplit("SUMMARY", 1)[-1], report


def assert_nothing_ran_beyond_loopback(server: FuzzedServer) -> None:
    """Every call the fuzzing agent made that policy let through targets the loopback host."""
    engine = create_engine(server.database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT id, targets FROM actions WHERE decision_effect != 'deny'")
            ).fetchall()
    finally:
        engine.dispose()
    for action_id, targets in rows:
        objects = [t["object"] for t in (targets if isinstance(targets, list) else json.loads(targets))]
        assert all(o.startswith("http:127.0.0.1:") for o in objects), (action_id, objects)


def assert_no_server_errors_logged(server: FuzzedServer) -> None:
    log = (server.workdir / "serve.log").read_text()
    assert "http.request" in log  # the access log is there to be read
    errors = [
        line
        for line in log.splitlines()
        if re.search(r"status=5\d\d\b", line) and not ALLOWED_UNAVAILABLE_LOG.search(line)
    ]
    assert errors == [], errors[:5]


def test_agent_operations_keep_the_documented_contract(server: FuzzedServer) -> None:
    result = schemathesis(
        server, server.agent_key, "--include-path-regex", "^/v1/(actions|tools|policy)|^/(healthz|readyz)$"
    )
    assert_clean(result)
    assert_nothing_ran_beyond_loopback(server)
    assert_no_server_errors_logged(server)


def test_admin_and_unauthenticated_operations_keep_the_documented_contract(server: FuzzedServer) -> None:
    result = schemathesis(server, ADMIN_TOKEN, "--exclude-path-regex", "^/v1/(actions|tools)")
    assert_clean(result)
    assert_no_server_errors_logged(server)
