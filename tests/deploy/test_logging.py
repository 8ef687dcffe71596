"""Structured logs: JSON lines with context, and no secrets or message bodies, ever."""

from __future__ import annotations

import contextvars
import logging
import threading

import structlog

from outbox.logs import REDACTED, bind_log_context, current_log_context, log_context, redact_secrets
from tests.deploy.conftest import JsonLines

API_KEY = "obx_" + "k" * 43
SLACK_TOKEN = "xoxb-1234567890-abcdefghijkl"
PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"


def test_secret_fields_are_blanked_whatever_their_value() -> None:
    event = redact_secrets(
        None,
        "info",
        {
            "event": "relay.login",
            "authorization": "Bearer abc",
            "password": "hunter2",
            "slack_bot_token": "anything",
            "api_key": "anything",
            "dkim_key": "anything",
            "private_key": "anything",
            "signing_secret": "anything",
            "cookie": "session=1",
        },
    )
    assert event["event"] == "relay.login"
    assert {k: v for k, v in event.items() if k != "event"} == dict.fromkeys(
        [
            "authorization",
            "password",
            "slack_bot_token",
            "api_key",
            "dkim_key",
            "private_key",
            "signing_secret",
            "cookie",
        ],
        REDACTED,
    )


def test_message_bodies_are_blanked_but_their_identifiers_kept() -> None:
    event = redact_secrets(
        None,
        "info",
        {
            "event": "mail.sent",
            "message_id": "<1@agents.mail.example.com>",
            "body": "Dear customer",
            "text": "Dear customer",
            "html": "<p>Dear customer</p>",
            "mime": b"From: a\r\n\r\nDear customer",
            "idempotency_key": "order-42",
        },
    )
    assert event["message_id"] == "<1@agents.mail.example.com>"
    assert event["idempotency_key"] == "order-42"
    assert event["body"] == event["text"] == event["html"] == event["mime"] == REDACTED


def test_credentials_inside_other_values_are_scrubbed_at_any_depth() -> None:
    event = redact_secrets(
        None,
        "error",
        {
            "event": f"request failed with header Authorization: Bearer {API_KEY}",
            "request": {"headers": {"Authorization": f"Bearer {API_KEY}", "Accept": "*/*"}, "url": "http://x/y"},
            "attempts": [{"note": f"slack said no to {SLACK_TOKEN}"}],
            "exception": f"ValueError: bad key\n{PEM}",
            "count": 3,
            "missing": None,
        },
    )
    rendered = repr(event)
    for secret in (API_KEY, SLACK_TOKEN, "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"):
        assert secret not in rendered
    assert event["request"]["headers"] == {"Authorization": REDACTED, "Accept": "*/*"}
    assert event["request"]["url"] == "http://x/y"
    assert event["count"] == 3
    assert event["missing"] is None


def test_configured_logs_are_json_with_context_and_redacted(json_logs: JsonLines) -> None:
    log = structlog.get_logger("tests.deploy")
    with log_context(request_id="req-1"):
        bind_log_context(agent="crm-bot", action_id="act_1")
        log.info("relay.login", password="hunter2", note=f"token {SLACK_TOKEN}")
        try:
            raise RuntimeError(f"could not load {PEM}")
        except RuntimeError:
            log.exception("dkim.load_failed")
    log.info("outside")

    lines = json_logs()
    login, failure, outside = lines[-3:]
    assert login["event"] == "relay.login"
    assert login["level"] == "info"
    assert (login["request_id"], login["agent"], login["action_id"]) == ("req-1", "crm-bot", "act_1")
    assert login["password"] == REDACTED
    assert SLACK_TOKEN not in login["note"]
    assert failure["request_id"] == "req-1"
    assert "RuntimeError" in failure["exception"]
    assert "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC" not in failure["exception"]
    assert "request_id" not in outside


def test_standard_library_logs_go_through_the_same_processors(json_logs: JsonLines) -> None:
    with log_context(request_id="req-2"):
        logging.getLogger("celery.worker").info("sending %s", f"Bearer {API_KEY}")
    line = json_logs()[-1]
    assert line["logger"] == "celery.worker"
    assert line["request_id"] == "req-2"
    assert API_KEY not in line["event"]


def test_levels_below_the_configured_one_are_dropped(json_logs: JsonLines) -> None:
    log = structlog.get_logger("tests.deploy.levels")
    log.debug("too.quiet")
    log.warning("loud.enough")
    events = [line["event"] for line in json_logs()]
    assert "loud.enough" in events
    assert "too.quiet" not in events


def test_context_bound_in_a_worker_thread_is_seen_by_the_request() -> None:
    # Starlette runs sync dependencies in a thread with a copy of the context, as here.
    with log_context(request_id="req-3"):
        copied = contextvars.copy_context()
        thread = threading.Thread(target=copied.run, args=(bind_log_context,), kwargs={"agent": "crm-bot"})
        thread.start()
        thread.join()
        assert current_log_context() == {"request_id": "req-3", "agent": "crm-bot"}
    assert current_log_context() == {}


def test_binding_outside_any_context_is_a_no_op() -> None:
    bind_log_context(agent="nobody")
    assert current_log_context() == {}
