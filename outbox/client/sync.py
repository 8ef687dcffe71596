"""`OutboxClient`: the outbox's agent contract for Python code that does not speak MCP."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any

import httpx

from outbox.client import _protocol as protocol
from outbox.client.errors import NotCancellable
from outbox.client.models import Action, ToolDefinition
from outbox.client.retries import RetryPolicy
from outbox.client.tools import ToolFormat, convert, read_tool_call

__all__ = ["OutboxClient"]


class OutboxClient:
    """Submit tool calls to an outbox and read what became of them.

    `base_url` defaults to `$OUTBOX_URL`, then `http://127.0.0.1:8000` (`outbox serve`);
    `api_key` to `$OUTBOX_API_KEY`. `timeout` is httpx's (seconds, or an `httpx.Timeout`);
    `Prefer: wait` submissions add their wait to the read timeout. `retry` says how often and how
    long the client retries (see `outbox.client.retries`). `http` is an `httpx.Client` of your
    own (proxies, TLS, transports); the client then leaves it open on `close()`.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = 10.0,
        retry: RetryPolicy | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self.base_url = protocol.base_url(base_url)
        self.retry = retry or RetryPolicy()
        self._timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self._owns_http = http is None
        self._http = http or httpx.Client()
        self._headers = {
            "Authorization": f"Bearer {protocol.api_key(api_key)}",
            "Accept": "application/json, application/problem+json",
            "User-Agent": protocol.USER_AGENT,
        }

    def __enter__(self) -> OutboxClient:
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _value: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    # -- the agent contract ------------------------------------------------------------------

    def submit(
        self,
        tool: str,
        args: Mapping[str, Any] | None = None,
        on_behalf_of: str | None = None,
        reason: str | None = None,
        wait: int | None = None,
        *,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
    ) -> Action:
        """Submit one tool call; the returned action says where it stands (`status`).

        One Idempotency-Key is made for this call (or `idempotency_key` is used) and sent on every
        attempt, so the client's own retries never run the call twice. `wait=N` asks the server to
        hold the answer up to N seconds (≤ 60) until the call is settled: it ran, a human decided,
        or it was deferred (`not_before`, `retry_after`). Without `wait` the answer comes at once,
        usually `queued` or `awaiting_approval`; `wait()` follows it.

        Raises `Denied` (policy), `Rejected`/`Expired` (a human said no, or nobody said yes in
        time), `InvalidCall` (422 with `errors`), `Unauthorized`, `ToolUnavailable` or
        `OutboxUnavailable` (still unavailable after the retries), `TransportFailed`; all are
        `OutboxError`s carrying the server's problem document. A call that ran and failed is not
        an exception: it is an action with status `failed` and the tool's response.
        """
        request = protocol.submit_request(
            tool,
            args,
            on_behalf_of=on_behalf_of,
            reason=reason,
            wait=wait,
            idempotency_key=idempotency_key,
            callback_url=callback_url,
        )
        action = protocol.read_action(self._send(request), request)
        return protocol.raise_if_refused(action, request.idempotency_key)

    def submit_tool_call(
        self,
        call: Mapping[str, Any],
        on_behalf_of: str | None = None,
        reason: str | None = None,
        wait: int | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Action:
        """Submit a tool call as a model returned it (OpenAI, Anthropic or MCP shape; see
        `outbox.client.tools.read_tool_call`), under the name the model used."""
        name, arguments = read_tool_call(call)
        return self.submit(name, arguments, on_behalf_of, reason, wait, idempotency_key=idempotency_key)

    def get(self, action_id: str) -> Action:
        """The action as it is now. A denied or rejected action is returned, not raised: reading
        state is not a refusal (`wait()` raises, since it waits for the outcome)."""
        return protocol.read_action(self._send(protocol.Request("GET", protocol.action_path(action_id))))

    def wait(self, action_id: str, timeout: float = 60.0, *, poll: float = 0.1, max_poll: float = 2.0) -> Action:
        """Poll until the action is settled (terminal, or deferred to `not_before`) or `timeout`
        seconds pass, and return it as last seen (check `is_settled`).

        An action awaiting approval is followed through the human's decision to its outcome,
        since an approved action runs at once. Raises `Rejected`/`Expired`/`Denied` when that is
        the outcome, like `submit`.
        """
        deadline = time.monotonic() + timeout
        delay = poll
        while True:
            action = self.get(action_id)
            remaining = deadline - time.monotonic()
            if action.is_settled or remaining <= 0:
                return protocol.raise_if_refused(action)
            time.sleep(min(delay, remaining))
            delay = min(delay * 1.5, max_poll)

    def cancel(self, action_id: str) -> Action:
        """Cancel a queued, deferred or awaiting action. Cancelling one already cancelled returns
        it (the caller's goal, that it never runs, holds); one running or finished raises
        `NotCancellable`."""
        try:
            cancel = protocol.Request("POST", protocol.action_path(action_id) + "/cancel")
            return protocol.read_action(self._send(cancel))
        except NotCancellable:
            current = self.get(action_id)
            if current.status == "cancelled":
                return current
            raise

    def actions(self, status: str | None = None, tool: str | None = None, *, page_size: int = 50) -> Iterator[Action]:
        """Your actions, newest first, following the cursor across pages as you iterate."""
        cursor: str | None = None
        while True:
            page = protocol.read_page(self._send(protocol.list_request(status, tool, page_size, cursor)))
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def tool_definitions(self, *, all_tools: bool = False) -> list[ToolDefinition]:
        """The tools this agent may call (every tool, marked, with `all_tools=True`)."""
        return protocol.read_tools(self._send(protocol.tools_request(all_tools)), all_tools=all_tools)

    def tools(self, format: ToolFormat = "openai", *, all_tools: bool = False) -> list[dict[str, Any]]:
        """The tools in the shape a model API takes (`outbox.client.tools` says which name each uses)."""
        return convert(self.tool_definitions(all_tools=all_tools), format)

    # -- transport ---------------------------------------------------------------------------

    def _send(self, request: protocol.Request) -> httpx.Response:
        """Send until the answer is final or the retry policy gives up; the same request (and so
        the same Idempotency-Key) every time."""
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._http.request(
                    request.method,
                    self.base_url + request.path,
                    json=request.json,
                    params=request.params,
                    headers={**self._headers, **request.headers},
                    timeout=protocol.timeout_for(request, self._timeout),
                )
            except httpx.TransportError as exc:
                delay = self.retry.delay(attempt, None) if self.retry.retry_transport_errors else None
                if delay is None:
                    raise protocol.transport_failure(request, exc, attempt) from exc
                protocol.log_retry(request, type(exc).__name__, delay)
                time.sleep(delay)
                continue
            delay = protocol.retry_delay(response, self.retry, attempt)
            if delay is None:
                return response
            protocol.log_retry(request, f"HTTP {response.status_code}", delay)
            time.sleep(delay)
