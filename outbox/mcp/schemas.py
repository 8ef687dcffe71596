"""What the MCP face reads from and writes into MCP messages, beyond the SDK's own types.

`_meta` names: the MCP specification reserves un-prefixed keys and every prefix whose second
label is `modelcontextprotocol` or `mcp`; anything else takes a reverse-DNS prefix of labels
(letters, digits, hyphens) and a `/`. The outbox's problem types live under agent-outbox.dev, so
its prefix is `dev.agent-outbox/`, and the names after it are the HTTP contract's field names
(docs/mcp.md lists them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import mcp_types as types

from outbox.actions.schemas import ActionOut
from outbox.errors import ValidationFailed

META_PREFIX: Final = "dev.agent-outbox/"
# Request `_meta`: a client's own key for this call (retries reuse it), and the envelope fields
# that are not the tool's arguments.
IDEMPOTENCY_KEY_META: Final = META_PREFIX + "idempotency_key"
ON_BEHALF_OF_META: Final = META_PREFIX + "on_behalf_of"
REASON_META: Final = META_PREFIX + "reason"
CALLBACK_URL_META: Final = META_PREFIX + "callback_url"
# Result `_meta`: the action a call recorded, and whether this answer replays an earlier call.
ACTION_ID_META: Final = META_PREFIX + "action_id"
REPLAYED_META: Final = META_PREFIX + "replayed"
RETRY_AFTER_META: Final = META_PREFIX + "retry_after_seconds"
# Tool `_meta` in tools/list: the tool's name in the outbox (the MCP name is the function name),
# and why it cannot run on this server now, when it cannot.
TOOL_NAME_META: Final = META_PREFIX + "tool"
UNAVAILABLE_META: Final = META_PREFIX + "unavailable_reason"

# The Tasks extension (io.modelcontextprotocol/tasks, SEP-2663, for 2026-07-28).
TASKS_EXTENSION: Final = "io.modelcontextprotocol/tasks"

# `structuredContent` of a tools/call result: the action, as GET /v1/actions/{id} shows it.
ACTION_OUTPUT_SCHEMA: Final[Mapping[str, Any]] = ActionOut.model_json_schema(mode="serialization")


@dataclass(frozen=True, slots=True)
class CallMeta:
    """The outbox's fields of a tools/call `_meta`, each a string when sent."""

    idempotency_key: str | None
    on_behalf_of: str | None
    reason: str | None
    callback_url: str | None

    @classmethod
    def of(cls, meta: Mapping[str, Any] | None) -> CallMeta:
        """Read them; a value that is not a string is a field error the client must fix."""
        meta = meta or {}
        names = (IDEMPOTENCY_KEY_META, ON_BEHALF_OF_META, REASON_META, CALLBACK_URL_META)
        errors = [
            {"field": f"_meta.{name}", "message": "must be a string"}
            for name in names
            if meta.get(name) is not None and not isinstance(meta.get(name), str)
        ]
        if errors:
            raise ValidationFailed(errors, hint=f"Send the `{META_PREFIX}*` values of `_meta` as strings.")
        return cls(*(meta.get(name) for name in names))

    def envelope_fields(self) -> dict[str, str]:
        """The envelope fields of POST /v1/actions these carry, as that body names them."""
        fields = {"on_behalf_of": self.on_behalf_of, "reason": self.reason, "callback_url": self.callback_url}
        return {name: value for name, value in fields.items() if value is not None}


class TaskParams(types.RequestParams):
    """Params of tasks/get, tasks/update and tasks/cancel: the task named (`taskId`)."""

    task_id: str
