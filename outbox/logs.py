"""Structured logs (structlog), one JSON object per line.

Every line carries the context it was written in: the request id in the API, the action id and
agent once they are known, in workers the action being run (`log_context`, `bind_log_context`).
Logs from the standard library (Celery, alembic, httpx) go through the same processors, so they
are JSON too.

Secrets and message bodies are never passed to loggers on purpose; `redact_secrets` is the net
under that rule: it blanks fields whose names say secret (authorization, tokens, keys, passwords)
or mail content (body, text, html, mime), and scrubs values that look like credentials (bearer
tokens, Slack tokens, outbox API keys, PEM private keys) wherever they appear, exception text
included.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import threading
from collections.abc import Iterator, MutableMapping
from contextvars import ContextVar
from typing import Any

import structlog

from outbox.config import Settings

REDACTED = "[redacted]"

# Field names whose values are secrets, whatever they contain.
_SECRET_FIELD = re.compile(
    r"^(?:authorization|proxy[-_]authorization|cookie|set[-_]cookie|x[-_]api[-_]key|"
    r"password|passwd|secret|token|api[-_]?key|key|private[-_]?key|dkim[-_]?key|"
    r".*[-_](?:token|secret|password|passwd|api[-_]?key|private[-_]?key|signing[-_]?key|dkim[-_]?key))$",
    re.IGNORECASE,
)
# Field names that hold message content (mail bodies and raw messages, request bodies).
_CONTENT_FIELDS = frozenset({"body", "text", "html", "mime", "raw", "content", "raw_message"})
# Values that are credentials wherever they appear, even inside a longer string.
_SECRET_VALUE = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)"
    r"|\b(?:Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}"
    r"|\bxox[abposre]-[A-Za-z0-9-]{8,}"
    r"|\bxapp-[A-Za-z0-9-]{8,}"
    r"|\bobx_[A-Za-z0-9_-]{16,}",
    re.DOTALL,
)
_MAX_DEPTH = 8
# aiosmtpd's "mail.log" logs every SMTP command of the sink at INFO, recipients included.
_CHATTY_LOGGERS = ("casbin", "httpx", "httpx2", "httpcore", "alembic.runtime.plugins", "mail.log")

_log_context: ContextVar[dict[str, Any] | None] = ContextVar("outbox_log_context", default=None)


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[dict[str, Any]]:
    """Every line logged inside the block carries `fields` (and those bound later with
    `bind_log_context`).

    The context is one mutable mapping shared by the whole block. Starlette runs synchronous
    handlers and dependencies in a worker thread with a *copy* of the context variables, so a
    value bound there with plain contextvars would be lost on return; a shared mapping is seen
    by the request's every line, whichever thread writes it.
    """
    parent = _log_context.get()
    scope = {**(parent or {}), **fields}
    token = _log_context.set(scope)
    try:
        yield scope
    finally:
        _log_context.reset(token)


def bind_log_context(**fields: Any) -> None:
    """Add fields (e.g. `agent`, `action_id`) to the enclosing `log_context`, if there is one."""
    scope = _log_context.get()
    if scope is not None:
        scope.update({k: v for k, v in fields.items() if v is not None})


def current_log_context() -> dict[str, Any]:
    return dict(_log_context.get() or {})


def _merge_log_context(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    scope = _log_context.get()
    if scope:
        for name, value in scope.items():
            event_dict.setdefault(name, value)
    return event_dict


def _scrub(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return _SECRET_VALUE.sub(REDACTED, value)
    if depth >= _MAX_DEPTH:
        return value
    if isinstance(value, dict):
        return {k: _redact_field(k, v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v, depth + 1) for v in value]
    if isinstance(value, bytes | bytearray):
        # Raw bytes in a log line are message content (MIME, bodies) more often than not.
        return REDACTED
    return value


def _redact_field(name: Any, value: Any, depth: int) -> Any:
    if value is not None and isinstance(name, str) and (_SECRET_FIELD.match(name) or name.lower() in _CONTENT_FIELDS):
        return REDACTED
    return _scrub(value, depth)


def redact_secrets(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor: blank secret and content fields, scrub credential-looking values."""
    for name in list(event_dict):
        event_dict[name] = _redact_field(name, event_dict[name], 0)
    return event_dict


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is at the time (test runners swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


class _StderrLogger:
    """structlog's output: one line to whatever `sys.stderr` is at the time of the call."""

    _lock = threading.Lock()

    def msg(self, message: str) -> None:
        with self._lock:
            stream = sys.stderr
            stream.write(message + "\n")
            stream.flush()

    log = debug = info = warn = warning = error = err = critical = fatal = exception = failure = msg


def _stderr_logger(*_args: Any) -> _StderrLogger:
    return _StderrLogger()


# structlog caches each logger's configuration on first use. Level, processors and renderer are
# therefore kept in objects that a later `configure_logging` changes in place, so that a logger
# first used before (an import-time logger in a worker, say) follows the new settings.
_level = [logging.INFO]
_processors: list[structlog.typing.Processor] = []


def _drop_below_level(_logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if _METHOD_LEVELS.get(method, logging.INFO) < _level[0]:
        raise structlog.DropEvent
    return event_dict


_METHOD_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "msg": logging.INFO,
    "log": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "err": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}


def configure_logging(settings: Settings) -> None:
    level = logging.getLevelNamesMapping().get(settings.log_level.upper(), logging.INFO)
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if settings.log_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        _merge_log_context,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    _level[0] = level
    _processors[:] = [_drop_below_level, *shared, structlog.processors.format_exc_info, redact_secrets, renderer]
    structlog.configure(
        processors=_processors,
        # Levels are filtered by `_drop_below_level`, which a reconfiguration can change.
        wrapper_class=structlog.make_filtering_bound_logger(logging.NOTSET),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=True,
    )
    # The standard library's loggers (Celery, alembic, httpx) through the same processors.
    handler = _StderrHandler()
    handler.set_name("outbox")
    handler.setLevel(level)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact_secrets,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for existing in [h for h in root.handlers if h.get_name() == "outbox"]:
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # Libraries that narrate at INFO (casbin prints its model on every load, httpx every URL it
    # fetches, which may carry an agent's query string): warnings and errors only.
    for chatty in _CHATTY_LOGGERS:
        logging.getLogger(chatty).setLevel(max(level, logging.WARNING))
