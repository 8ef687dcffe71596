"""Hostile request bodies and targets are refused as problems before anything is recorded.

Each class (non-JSON numbers, numbers no double holds, integers beyond ±(2^53 - 1), huge integer
literals, lone surrogates, NUL, duplicate keys) is tried in several places of the body, on SQLite
and PostgreSQL. A refused body records nothing and leaves its Idempotency-Key free for the
corrected request. The admin endpoints, whose bodies FastAPI parses, get the same answers.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import func
from sqlmodel import select

from outbox.actions.models import Action
from outbox.actions.service import parse_envelope
from outbox.audit.models import AuditEvent
from outbox.errors import ValidationFailed
from outbox.idempotency.models import IdempotencyRecord
from outbox.runtime import Runtime
from tests.support.agents import bearer
from tests.support.dispatchers import RecordingDispatcher

ADMIN_TOKEN = "admin-token-for-hostile-bodies-0123456789"
URL = "http://127.0.0.1:9/v1/orders"


def call(args_json: str, *, envelope_extra: str = "") -> bytes:
    """A POST body for http.request whose `args` JSON is spliced in verbatim."""
    return ('{"tool": "http.request", "args": ' + args_json + envelope_extra + "}").encode()


def args_with(value: str) -> str:
    return '{"method": "POST", "url": "' + URL + '", "json": {"n": ' + value + "}}"


# (body, expected status, a fragment the problem must contain, where it must point)
NOT_JSON_NUMBERS = [
    pytest.param(call(args_with("NaN")), 400, "NaN is not a JSON value", "args.json.n", id="nan"),
    pytest.param(call(args_with("Infinity")), 400, "Infinity is not a JSON value", "args.json.n", id="infinity"),
    pytest.param(call(args_with("-Infinity")), 400, "-Infinity is not a JSON value", "args.json.n", id="-infinity"),
    pytest.param(call(args_with("[1, 2, NaN]")), 400, "NaN", "args.json.n[2]", id="nan-in-list"),
    pytest.param(b'{"tool": "http.request", "args": {}, "reason": NaN}', 400, "NaN", "reason", id="nan-in-envelope"),
]
UNREPRESENTABLE_NUMBERS = [
    pytest.param(call(args_with("1e400")), 422, "too large for a 64-bit float", "args.json.n", id="1e400"),
    pytest.param(call(args_with("-1e400")), 422, "too large for a 64-bit float", "args.json.n", id="-1e400"),
    pytest.param(call(args_with("1" + "0" * 400 + ".5")), 422, "too large", "args.json.n", id="long-float"),
    pytest.param(call(args_with("1.5e300")), 422, "outside ±(2^53 - 1)", "args.json.n", id="1.5e300"),
    pytest.param(call(args_with("-9007199254740992.0")), 422, "outside ±(2^53 - 1)", "args.json.n", id="-2^53.0"),
    pytest.param(call(args_with("9007199254740992")), 422, "outside ±(2^53 - 1)", "args.json.n", id="2^53"),
    pytest.param(call(args_with("-9007199254740992")), 422, "outside ±(2^53 - 1)", "args.json.n", id="-2^53"),
    pytest.param(call(args_with("1" * 5000)), 422, "5000 digits", "args.json.n", id="5000-digits"),
    pytest.param(call(args_with("-" + "9" * 4301)), 422, "4301 digits", "args.json.n", id="-4301-digits"),
    pytest.param(
        b'{"tool": "http.request", "args": {}, "x": ' + b"7" * 100_000 + b"}", 422, "100000 digits", "x", id="envelope"
    ),
]
LONE_SURROGATES = [
    pytest.param(call(args_with('"\\ud800"')), 422, "lone surrogate (U+D800)", "args.json.n", id="high"),
    pytest.param(call(args_with('"\\udfff"')), 422, "lone surrogate (U+DFFF)", "args.json.n", id="low"),
    pytest.param(call(args_with('"ok \\ud83d"')), 422, "U+D83D", "args.json.n", id="split-pair-first-half"),
    pytest.param(call(args_with('"\\ude00 ok"')), 422, "U+DE00", "args.json.n", id="split-pair-second-half"),
    pytest.param(call(args_with('"\\ude00\\ud83d"')), 422, "lone surrogate", "args.json.n", id="pair-reversed"),
    pytest.param(
        call('{"method": "GET", "url": "' + URL + '", "headers": {"X-\\ud800": "v"}}'),
        422,
        "in the key: a lone surrogate",
        "args.headers.X-\\ud800",
        id="in-a-key",
    ),
    pytest.param(
        b'{"tool": "http.request", "args": {}, "on_behalf_of": "lead\\udbff@example.com"}',
        422,
        "U+DBFF",
        "on_behalf_of",
        id="in-on-behalf-of",
    ),
]
OTHER_UNHOLDABLE = [
    pytest.param(call(args_with('"a\\u0000b"')), 422, "NUL characters", "args.json.n", id="nul-in-value"),
    pytest.param(call('{"url\\u0000": 1}'), 422, "NUL characters", "args.url\\u0000", id="nul-in-key"),
    pytest.param(
        b'{"tool": "http.request", "tool": "shell.exec", "args": {}}', 422, "duplicate key(s) 'tool'", "body", id="dup"
    ),
    pytest.param(call('{"url": "a", "url": "b"}'), 422, "duplicate key(s) 'url'", "args", id="dup-in-args"),
    pytest.param(call(args_with("[" * 40 + "]" * 40)), 422, "nesting deeper than 32", "args.json.n", id="deep"),
]


@pytest.fixture
def runtime(make_runtime: Callable[..., Runtime]) -> Runtime:
    """The runtime of tests/api, with an admin token for the admin endpoints."""
    return make_runtime(RecordingDispatcher(), admin_token=SecretStr(ADMIN_TOKEN))


@pytest.fixture
def admin_client(client: TestClient) -> TestClient:
    return client


def recorded(runtime: Runtime) -> tuple[int, int, int]:
    """Actions, audit events and idempotency records: what a refused request must not add."""
    with runtime.db.session() as session:
        return (
            session.exec(select(func.count()).select_from(Action)).one(),
            session.exec(select(func.count()).select_from(AuditEvent)).one(),
            session.exec(select(func.count()).select_from(IdempotencyRecord)).one(),
        )


def assert_refused(response, status: int, fragment: str, field: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status
    named = problem["detail"] + " ".join(f"{e['field']}: {e['message']}" for e in problem.get("errors", []))
    assert fragment in named
    assert field in named
    assert "Idempotency-Key" not in problem.get("hint", "")


@pytest.mark.parametrize(
    ("raw", "status", "fragment", "field"),
    [*NOT_JSON_NUMBERS, *UNREPRESENTABLE_NUMBERS, *LONE_SURROGATES, *OTHER_UNHOLDABLE],
)
def test_a_refused_body_records_nothing_and_frees_its_idempotency_key(
    client: TestClient, runtime: Runtime, reader_key: str, raw: bytes, status: int, fragment: str, field: str
) -> None:
    before = recorded(runtime)
    headers = {**bearer(reader_key), "Idempotency-Key": "reused-after-refusal", "Content-Type": "application/json"}

    assert_refused(client.post("/v1/actions", content=raw, headers=headers), status, fragment, field)
    assert recorded(runtime) == before

    fixed = client.post(
        "/v1/actions", json={"tool": "http.request", "args": {"method": "GET", "url": URL}}, headers=headers
    )
    assert fixed.status_code == 202, fixed.text
    assert recorded(runtime)[0] == before[0] + 1


def test_a_body_sent_without_content_type_follows_the_same_rules(
    client: TestClient, runtime: Runtime, reader_key: str
) -> None:
    headers = {**bearer(reader_key), "Idempotency-Key": "no-content-type"}
    for raw, status in ((call(args_with("NaN")), 400), (call(args_with("1e999")), 422)):
        response = client.post("/v1/actions", content=raw, headers=headers)
        assert "content-type" not in response.request.headers
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/problem+json"
    assert recorded(runtime)[0] == 0


def test_values_at_the_edges_of_the_rules_are_accepted_and_kept_exactly(
    client: TestClient, runtime: Runtime, reader_key: str
) -> None:
    edges = {
        "max": 9007199254740991,
        "min": -9007199254740991,
        "big_float": 9007199254740990.0,
        "tiny": 5e-324,
        "pair": "😀 \U0010ffff",
        "escaped_pair": "😀",
    }
    raw = call(
        args_with(
            '{"max": 9007199254740991, "min": -9007199254740991, "big_float": 9007199254740990.0, '
            '"tiny": 5e-324, "pair": "😀 \\udbff\\udfff", "escaped_pair": "\\ud83d\\ude00"}'
        )
    )
    response = client.post(
        "/v1/actions",
        content=raw,
        headers={**bearer(reader_key), "Idempotency-Key": "edges", "Content-Type": "application/json"},
    )
    assert response.status_code == 403, response.text  # POST is not granted to a reader: recorded, denied
    with runtime.db.session() as session:
        action = session.get(Action, response.json()["action_id"])
    assert action is not None
    assert action.args["json"]["n"] == edges


def test_the_same_rules_hold_for_envelopes_built_in_python(runtime: Runtime) -> None:
    for args, fragment in (
        ({"n": float("nan")}, "not a finite number"),
        ({"n": float("inf")}, "not a finite number"),
        ({"n": 1e300}, "±(2^53 - 1)"),
        ({"n": 2**53}, "±(2^53 - 1)"),
        ({"n": -(10**5000)}, "±(2^53 - 1)"),
        ({"n": "\udc00"}, "lone surrogate"),
        ({"\ud800": 1}, "lone surrogate"),
        ({"n": b"bytes"}, "not a JSON value"),
    ):
        with pytest.raises(ValidationFailed) as refused:
            parse_envelope({"tool": "http.request", "args": args})
        assert fragment in refused.value.errors[0]["message"]


ADMIN_BODIES = [
    pytest.param("/v1/admin/mail/pause", b'{"all": true, "reason": "\\ud800"}', 422, "U+D800", "reason", id="pause"),
    pytest.param("/v1/admin/mail/pause", b'{"all": true, "as": NaN}', 400, "NaN", "as", id="pause-nan"),
    pytest.param("/v1/admin/mail/resume", b'{"all": true, "all": false}', 422, "duplicate", "body", id="resume-dup"),
    pytest.param(
        "/v1/admin/mail/suppressions",
        b'{"recipient": "a@example.com", "n": ' + b"9" * 5000 + b"}",
        422,
        "5000 digits",
        "n",
        id="suppression-huge-int",
    ),
    pytest.param(
        "/v1/admin/approvals/apr_x/approve", b'{"as": "user:a\\u0000@example.com"}', 422, "NUL", "as", id="approve"
    ),
    pytest.param(
        "/v1/admin/approvals/apr_x/deny",
        b'{"as": "user:a@example.com", "reason": 1e400}',
        422,
        "64-bit",
        "reason",
        id="deny",
    ),
    pytest.param("/v1/mail/events", b'{"events": [{"n": -Infinity}]}', 400, "Infinity", "events[0].n", id="events"),
]


@pytest.mark.parametrize(("path", "raw", "status", "fragment", "field"), ADMIN_BODIES)
def test_admin_and_feedback_bodies_follow_the_same_rules(
    admin_client: TestClient, runtime: Runtime, path: str, raw: bytes, status: int, fragment: str, field: str
) -> None:
    before = recorded(runtime)
    response = admin_client.post(
        path, content=raw, headers={**bearer(ADMIN_TOKEN), "Content-Type": "application/json; charset=utf-8"}
    )
    assert_refused(response, status, fragment, field)
    assert recorded(runtime) == before


@pytest.mark.parametrize(
    "target",
    [
        "/v1/actions?tool=%00",
        "/v1/actions?tool=a%00b",
        "/v1/actions?cursor=%00",
        "/v1/actions/act_%00",
        "/v1/actions?status=queued&tool=x&tool=%00",
        "/v1/admin/approvals/%00",
        "/v1/admin/mail/suppressions?recipient=a%00@example.com",
    ],
)
def test_a_nul_in_the_request_target_is_400_not_a_database_error(
    admin_client: TestClient, reader_key: str, target: str
) -> None:
    key = ADMIN_TOKEN if "/admin/" in target else reader_key
    response = admin_client.get(target, headers=bearer(key))
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "NUL" in response.json()["detail"]


def test_an_oversized_admin_body_is_413_before_it_is_parsed(admin_client: TestClient) -> None:
    huge = b'{"all": true, "reason": "' + b"x" * 2_000_000 + b'"}'
    response = admin_client.post(
        "/v1/admin/mail/pause", content=huge, headers={**bearer(ADMIN_TOKEN), "Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
