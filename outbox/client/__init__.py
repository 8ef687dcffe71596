"""A Python client for agents that call the outbox over HTTP (docs/client.md).

    from outbox.client import OutboxClient, Denied

    with OutboxClient("http://127.0.0.1:8000", api_key) as outbox:
        action = outbox.submit("http.request", {"method": "GET", "url": "http://127.0.0.1:8765/"}, wait=10)

It imports only httpx, pydantic and the standard library, never the server's modules: agents
install the package without running a server.
"""

from outbox.client.aio import AsyncOutboxClient
from outbox.client.errors import (
    ActionNotFound,
    Denied,
    Expired,
    InvalidCall,
    KeyReused,
    NotCancellable,
    OutboxError,
    OutboxUnavailable,
    Problem,
    Rejected,
    ToolUnavailable,
    TransportFailed,
    Unauthorized,
)
from outbox.client.models import Action, ActionPage, ActionResult, Decision, ToolDefinition
from outbox.client.retries import RetryPolicy
from outbox.client.sync import OutboxClient
from outbox.client.tools import ToolFormat, read_tool_call

__all__ = [
    "Action",
    "ActionNotFound",
    "ActionPage",
    "ActionResult",
    "AsyncOutboxClient",
    "Decision",
    "Denied",
    "Expired",
    "InvalidCall",
    "KeyReused",
    "NotCancellable",
    "OutboxClient",
    "OutboxError",
    "OutboxUnavailable",
    "Problem",
    "Rejected",
    "RetryPolicy",
    "ToolDefinition",
    "ToolFormat",
    "ToolUnavailable",
    "TransportFailed",
    "Unauthorized",
    "read_tool_call",
]
