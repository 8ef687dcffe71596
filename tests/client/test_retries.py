"""The client's own retries: one Idempotency-Key per logical call, sent on every attempt, and the
call executed once, whatever went wrong on the way (a real proxy on loopback in front of the real
outbox fails on purpose, then forwards)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from outbox.client import (
    OutboxClient,
    OutboxError,
    OutboxUnavailable,
    RetryPolicy,
    ToolUnavailable,
    TransportFailed,
    Unauthorized,
)
from tests.client.conftest import OutboxServer
from tests.client.proxy import FaultyProxy
from tests.support.http_target import TargetServer
from tests.support.processes import free_port

pytestmark = pytest.mark.slow

# Retries come quickly in these tests; the waits a server asks for are still honoured.
QUICK = RetryPolicy(attempts=4, backoff=0.05, max_backoff=0.2)


def call(target: TargetServer, path: str) -> dict[str, str]:
    return {"method": "POST", "url": f"{target.base_url}{path}"}


def assert_one_key_and_one_execution(
    proxy: FaultyProxy, outbox_server: OutboxServer, target: TargetServer, path: str, attempts: int
) -> None:
    posts = proxy.posts()
    assert len(posts) == attempts, [p.fault for p in posts]
    keys = {p.idempotency_key for p in posts}
    assert len(keys) == 1 and None not in keys, keys
    assert outbox_server.action_count() == 1
    assert len(target.received(path)) == 1


@pytest.mark.parametrize("fault", ["503", "429"])
def test_503_and_429_are_retried_after_retry_after_with_the_same_key(
    fault: str, proxy: FaultyProxy, outbox_server: OutboxServer, target_server: TargetServer
) -> None:
    key = outbox_server.agent("writer", "http-writer")
    proxy.script(fault)
    with OutboxClient(proxy.url, key, retry=QUICK) as outbox:
        action = outbox.submit("http.request", call(target_server, "/charge"), wait=20)

    assert action.status == "succeeded"
    assert_one_key_and_one_execution(proxy, outbox_server, target_server, "/charge", attempts=2)
    refused, forwarded = proxy.posts()
    assert refused.answered is not None
    # The second attempt came no sooner than the Retry-After (1 s) asked.
    assert forwarded.arrived - refused.answered >= 1.0


def test_a_retry_after_given_as_an_http_date_is_honoured(
    proxy: FaultyProxy, outbox_server: OutboxServer, target_server: TargetServer
) -> None:
    key = outbox_server.agent("writer", "http-writer")
    proxy.retry_after = format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)
    proxy.script("503")
    with OutboxClient(proxy.url, key, retry=QUICK) as outbox:
        action = outbox.submit("http.request", call(target_server, "/dated"), wait=20)

    assert action.status == "succeeded"
    assert_one_key_and_one_execution(proxy, outbox_server, target_server, "/dated", attempts=2)
    refused, forwarded = proxy.posts()
    assert refused.answered is not None and refused.retry_after_seconds is not None
    # Within the date's one-second resolution, less the time the answer took to arrive.
    assert forwarded.arrived - refused.answered >= refused.retry_after_seconds - 0.1


def test_an_answer_lost_after_the_outbox_recorded_the_call_is_replayed_not_run_again(
    proxy: FaultyProxy, outbox_server: OutboxServer, target_server: TargetServer
) -> None:
    key = outbox_server.agent("writer", "http-writer")
    proxy.script("forward-then-drop")
    with OutboxClient(proxy.url, key, retry=QUICK) as outbox:
        action = outbox.submit("http.request", call(target_server, "/lost-answer"), wait=20)

    assert action.status == "succeeded"
    assert action.replayed is True
    assert_one_key_and_one_execution(proxy, outbox_server, target_server, "/lost-answer", attempts=2)


def test_a_read_timeout_is_retried_with_the_same_key(
    proxy: FaultyProxy, outbox_server: OutboxServer, target_server: TargetServer
) -> None:
    key = outbox_server.agent("writer", "http-writer")
    proxy.script("forward-then-stall")
    with OutboxClient(proxy.url, key, retry=QUICK, timeout=0.5) as outbox:
        action = outbox.submit("http.request", call(target_server, "/slow-answer"))
        finished = outbox.wait(action.id, timeout=20)

    assert action.replayed is True
    assert finished.status == "succeeded"
    assert_one_key_and_one_execution(proxy, outbox_server, target_server, "/slow-answer", attempts=2)


def test_a_dropped_connection_and_a_key_in_progress_are_retried(
    proxy: FaultyProxy, outbox_server: OutboxServer, target_server: TargetServer
) -> None:
    key = outbox_server.agent("writer", "http-writer")
    proxy.script("drop", "409")
    with OutboxClient(proxy.url, key, retry=QUICK) as outbox:
        action = outbox.submit("http.request", call(target_server, "/bumpy"), wait=20)

    assert action.status == "succeeded"
    assert action.replayed is False  # neither failed attempt reached the outbox
    assert_one_key_and_one_execution(proxy, outbox_server, target_server, "/bumpy", attempts=3)


def test_when_retries_run_out_the_typed_error_carries_the_problem_and_the_key(
    proxy: FaultyProxy, outbox_server: OutboxServer, target_server: TargetServer
) -> None:
    key = outbox_server.agent("writer", "http-writer")
    proxy.retry_after = "0"
    proxy.script("503", "503")
    with OutboxClient(proxy.url, key, retry=RetryPolicy(attempts=2)) as outbox:
        with pytest.raises(ToolUnavailable) as unavailable:
            outbox.submit("http.request", call(target_server, "/never"))
        # The same call later, with the key the error carries: recorded once, as if nothing failed.
        action = outbox.submit(
            "http.request", call(target_server, "/never"), wait=20, idempotency_key=unavailable.value.idempotency_key
        )

    error = unavailable.value
    assert error.status == 503
    assert error.reason == "bubblewrap is not installed"
    assert error.retry_after == 0
    assert error.problem.slug == "tool-unavailable"
    assert action.status == "succeeded" and action.replayed is False
    assert_one_key_and_one_execution(proxy, outbox_server, target_server, "/never", attempts=3)


def test_a_retry_after_longer_than_the_cap_is_raised_at_once_not_slept_on(
    proxy: FaultyProxy, outbox_server: OutboxServer, target_server: TargetServer
) -> None:
    key = outbox_server.agent("writer", "http-writer")
    proxy.retry_after = "3600"
    proxy.script("429")
    with OutboxClient(proxy.url, key, retry=QUICK) as outbox, pytest.raises(OutboxUnavailable) as limited:
        outbox.submit("http.request", call(target_server, "/later"))

    assert limited.value.status == 429
    assert limited.value.retry_after == 3600
    assert len(proxy.posts()) == 1
    assert outbox_server.action_count() == 0


def test_a_gateways_page_is_retried_and_reported_as_what_it_is(
    proxy: FaultyProxy, outbox_server: OutboxServer, target_server: TargetServer
) -> None:
    key = outbox_server.agent("writer", "http-writer")
    proxy.script("html-502", "html-502", "html-200")
    with OutboxClient(proxy.url, key, retry=RetryPolicy(attempts=2, backoff=0.01)) as outbox:
        with pytest.raises(OutboxUnavailable) as gateway:
            outbox.submit("http.request", call(target_server, "/gw"))
        with pytest.raises(OutboxError) as not_outbox:
            outbox.get("act_anything")

    assert gateway.value.status == 502
    assert "Bad Gateway" in str(gateway.value)
    assert not_outbox.value.problem.title == "Not an outbox answer"
    assert not_outbox.value.hint is not None and "/healthz" in not_outbox.value.hint
    assert outbox_server.action_count() == 0


def test_refusals_are_not_retried(proxy: FaultyProxy, outbox_server: OutboxServer) -> None:
    with OutboxClient(proxy.url, "not-a-key", retry=QUICK) as outbox, pytest.raises(Unauthorized):
        outbox.submit("http.request", {"method": "GET", "url": "http://127.0.0.1:9/x"})
    assert len(proxy.posts()) == 1


def test_an_unreachable_outbox_raises_transport_failed_with_the_key_to_retry_with() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    retry = RetryPolicy(attempts=2, backoff=0.01)
    with OutboxClient(url, "any-key", retry=retry) as outbox, pytest.raises(TransportFailed) as failed:
        outbox.submit("http.request", {}, idempotency_key="mine")
    assert failed.value.idempotency_key == "mine"
    assert "2 attempt(s)" in str(failed.value)
    assert failed.value.hint is not None and "idempotency_key='mine'" in failed.value.hint
