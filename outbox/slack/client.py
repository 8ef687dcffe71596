"""The slack_sdk WebClient, pointed at `OUTBOX_SLACK_API_URL`, with failures sorted into
"retry later" and "retrying cannot help".

slack_sdk's own retry handlers are switched off: a retry that sleeps inside a request or a
worker is lost if the process dies. Retries are durable deliveries instead (delivery.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from outbox.config import Settings
from outbox.retry_after import parse_retry_after
from outbox.sqltypes import utcnow

# Slack asking for a longer pause than this is retried after an hour anyway.
_MAX_RETRY_AFTER_SECONDS = 3600.0

# Errors Slack reports in a 200 body that go away by themselves.
_TRANSIENT_ERRORS = frozenset(
    {"ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)


class SlackUnavailable(Exception):
    """Slack could not be reached or asked us to slow down; the call may be retried."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SlackRefused(Exception):
    """Slack refused the call for a reason retrying cannot fix (bad token, unknown channel)."""


class SlackNotConfigured(Exception):
    """No bot token: nothing can be posted."""


@dataclass(frozen=True, slots=True)
class PostedMessage:
    channel_id: str
    ts: str


def slack_enabled(settings: Settings) -> bool:
    return settings.slack_bot_token is not None


class SlackClient:
    def __init__(self, settings: Settings) -> None:
        if settings.slack_bot_token is None:
            raise SlackNotConfigured("OUTBOX_SLACK_BOT_TOKEN is not set")
        self._web = WebClient(
            token=settings.slack_bot_token.get_secret_value(),
            base_url=settings.slack_api_url,
            timeout=max(1, round(settings.slack_timeout_seconds)),
            retry_handlers=[],
        )

    def _call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._web.api_call(method, json=kwargs)
        except SlackApiError as exc:
            raise _classify(method, exc) from exc
        except (SlackClientError, OSError, ValueError) as exc:
            # URLError, connection refused, timeouts (socket.timeout is an OSError).
            raise SlackUnavailable(f"{method}: {type(exc).__name__}: {exc}") from exc
        data = response.data
        return data if isinstance(data, dict) else {}

    def post_message(self, *, channel: str, text: str, blocks: list[dict[str, Any]]) -> PostedMessage:
        # Slack itself would fetch URLs in agent-written text to build previews: an outbound
        # request nobody's policy decided. Neither links nor media are unfurled.
        data = self._call(
            "chat.postMessage", channel=channel, text=text, blocks=blocks, unfurl_links=False, unfurl_media=False
        )
        return PostedMessage(channel_id=str(data.get("channel") or channel), ts=str(data["ts"]))

    def update_message(self, *, channel: str, ts: str, text: str, blocks: list[dict[str, Any]]) -> None:
        self._call("chat.update", channel=channel, ts=ts, text=text, blocks=blocks)

    def post_ephemeral(self, *, channel: str, user: str, text: str) -> None:
        self._call("chat.postEphemeral", channel=channel, user=user, text=text)

    def open_view(self, *, trigger_id: str, view: dict[str, Any]) -> None:
        self._call("views.open", trigger_id=trigger_id, view=view)


def _classify(method: str, exc: SlackApiError) -> Exception:
    response = exc.response
    status = getattr(response, "status_code", None)
    data = getattr(response, "data", None)
    error = data.get("error") if isinstance(data, dict) else None
    headers = getattr(response, "headers", None) or {}
    if status == 429 or error in _TRANSIENT_ERRORS or (isinstance(status, int) and status >= 500):
        return SlackUnavailable(f"{method}: HTTP {status} {error or ''}".strip(), retry_after=_retry_after(headers))
    return SlackRefused(f"{method}: HTTP {status} {error or 'error'}")


def _retry_after(headers: Any) -> float | None:
    value = None
    for name in ("Retry-After", "retry-after"):
        raw = headers.get(name) if hasattr(headers, "get") else None
        if isinstance(raw, list):
            raw = raw[0] if raw else None
        if raw is not None:
            value = raw
            break
    seconds = parse_retry_after(value if isinstance(value, str) else None, now=utcnow())
    return None if seconds is None else min(seconds, _MAX_RETRY_AFTER_SECONDS)
