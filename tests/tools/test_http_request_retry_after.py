"""`http.request` and a 429: the action waits as long as the backend's Retry-After asks.

A real loopback server answers 429 with the Retry-After each test sets. Both RFC 9110 forms
(delta-seconds and an HTTP-date) defer the action to that moment, capped at an hour; a value
that is garbage or lies in the past is no instruction, so the 429 is an ordinary retryable
failure with the outbox's own backoff.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from outbox.actions.models import Action
from outbox.execution.service import run_action
from outbox.runtime import Runtime
from tests.support.agents import make_agent
from tests.support.calls import load, submit_call


class TooManyRequests:
    """A loopback server that answers every request 429 with `retry_after` (if set)."""

    def __init__(self) -> None:
        self.retry_after: str | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                return None

            def do_GET(self) -> None:
                self.send_response(429)
                if server.retry_after is not None:
                    self.send_header("Retry-After", server.retry_after)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def backend() -> Iterator[TooManyRequests]:
    server = TooManyRequests()
    yield server
    server.stop()


def run_against(runtime: Runtime, backend: TooManyRequests, retry_after: str | None) -> tuple[Action, datetime]:
    """Submit one GET to the backend, run it, and return the action and when it was run."""
    backend.retry_after = retry_after
    key = make_agent(runtime.db, "retry-after-test", ["http-writer"])
    action_id = submit_call(
        runtime, key, "http.request", {"method": "GET", "url": f"http://127.0.0.1:{backend.port}/x"}
    )
    started = datetime.now(UTC)
    run_action(runtime, action_id)
    return load(runtime, action_id), started


def deferred_for(action: Action, started: datetime) -> timedelta:
    assert action.status == "deferred", action.status
    assert action.not_before is not None
    return action.not_before.replace(tzinfo=UTC) - started


@pytest.mark.parametrize("seconds", [1, 120, 3599])
def test_delta_seconds_defer_the_action_that_long(runtime: Runtime, backend: TooManyRequests, seconds: int) -> None:
    action, started = run_against(runtime, backend, str(seconds))
    assert abs(deferred_for(action, started) - timedelta(seconds=seconds)) < timedelta(seconds=5)


@pytest.mark.parametrize("minutes", [2, 30])
def test_an_http_date_defers_the_action_until_that_moment(
    runtime: Runtime, backend: TooManyRequests, minutes: int
) -> None:
    when = (datetime.now(UTC) + timedelta(minutes=minutes)).replace(microsecond=0)
    action, started = run_against(runtime, backend, format_datetime(when, usegmt=True))
    assert action.not_before is not None
    assert abs(action.not_before.replace(tzinfo=UTC) - when) < timedelta(seconds=5)
    assert deferred_for(action, started) > timedelta(minutes=minutes - 1)


@pytest.mark.parametrize("value", ["86400", "99999999999", "Fri, 01 Jan 2100 00:00:00 GMT"])
def test_a_wait_longer_than_an_hour_is_capped_at_an_hour(
    runtime: Runtime, backend: TooManyRequests, value: str
) -> None:
    action, started = run_against(runtime, backend, value)
    assert abs(deferred_for(action, started) - timedelta(hours=1)) < timedelta(seconds=5)


@pytest.mark.parametrize(
    "value", [None, "soon", "-5", "1.5", "Thu, 01 Jan 1970 00:00:00 GMT", "Fri, 32 Foo 2026 16:00:00 GMT"]
)
def test_without_a_usable_retry_after_a_429_is_a_retryable_failure(
    runtime: Runtime, backend: TooManyRequests, value: str | None
) -> None:
    action, _ = run_against(runtime, backend, value)
    assert action.status == "queued"  # retried with the outbox's backoff, not deferred by the peer
