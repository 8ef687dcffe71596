"""The operators' templates: this folder first, then the console's own (for `base.html`).

The console's environment loads only `outbox/console/templates`; an overlay of it (same
autoescaping, undefined handling and filters) adds this package's folder in front, so the
operators' pages live with their handlers and still extend the console's layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, FileSystemLoader
from starlette.requests import Request
from starlette.responses import HTMLResponse

from outbox.console import templating as console_templating

TEMPLATES_DIR = Path(__file__).parent / "templates"


def percent(rate: float) -> str:
    """0.0412 -> "4.12 %": rates and thresholds as people read them."""
    return f"{rate * 100:.2f} %"


def number(value: int) -> str:
    return f"{value:,}".replace(",", "\u202f")


_TONES = {
    "succeeded": "ok",
    "queued": "",
    "running": "",
    "awaiting_approval": "warn",
    "deferred": "warn",
    "failed": "bad",
    "denied": "bad",
    "rejected": "bad",
    "expired": "bad",
}


def status_tone(status: str) -> str:
    """The pill colour of an action status (its text says it too: colour is never the only cue)."""
    return _TONES.get(status, "")


_core = console_templating.environment
assert _core.loader is not None
environment = _core.overlay(loader=ChoiceLoader([FileSystemLoader(TEMPLATES_DIR), _core.loader]))
# Our own copy of the filters, so the ones added here do not leak into the console's environment.
environment.filters = {**_core.filters, "percent": percent, "number": number}
environment.globals = {**_core.globals, "status_tone": status_tone}


def render(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    user: Any,
    csrf_token: str | None,
    active: str,
    status_code: int = 200,
) -> HTMLResponse:
    """A page of the operators' templates, with what the console's layout needs."""
    return console_templating.render(
        request,
        template,
        context,
        status_code=status_code,
        user=user,
        csrf_token=csrf_token,
        active=active,
        templates=environment,
    )
