"""The console's Jinja2 templates: one environment, autoescaped, loaded from the package.

Pages render through `render`, which adds what every page's layout needs (the signed-in person,
the CSRF token for its forms, the active navigation entry).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from outbox.console.previews import summary_of
from outbox.sqltypes import utcnow

TEMPLATES_DIR = Path(__file__).parent / "templates"


def time_left(when: datetime, now: datetime | None = None) -> str:
    """ "in 12 min", "in 1 h 05 min", "expired 3 min ago": what a person reads at a glance."""
    now = now or utcnow()
    seconds = int((when - now).total_seconds())
    if seconds <= 0:
        return f"expired {_span(-seconds)} ago" if seconds < 0 else "expired"
    return f"in {_span(seconds)}"


def _span(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    return f"{hours // 24} days"


def utc(when: datetime | None) -> str:
    return "" if when is None else f"{when:%Y-%m-%d %H:%M:%S} UTC"


def iso(when: datetime) -> str:
    """Machine-readable time for `<time datetime>` and the countdown script."""
    return when.isoformat(timespec="seconds") + ("" if when.tzinfo else "Z")


def _seconds(delta: timedelta) -> int:
    return int(delta.total_seconds())


environment = Environment(
    loader=FileSystemLoader(TEMPLATES_DIR),
    autoescape=select_autoescape(["html"], default=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
environment.filters["time_left"] = time_left
environment.filters["utc"] = utc
environment.filters["iso"] = iso
environment.filters["seconds"] = _seconds
environment.filters["summary"] = summary_of
# JSON as text (autoescaped like any other text), unlike Jinja's `tojson`, which is meant for scripts.
environment.filters["json_text"] = lambda value: json.dumps(value, ensure_ascii=False)


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
    user: Any = None,
    csrf_token: str | None = None,
    active: str | None = None,
    templates: Environment | None = None,
) -> HTMLResponse:
    """A page (or an htmx fragment) as an HTML response; `templates` is another environment than
    the console's (the operators' overlay, `outbox.console.operate.templating`)."""
    values: dict[str, Any] = {
        "request": request,
        "user": user,
        "csrf_token": csrf_token,
        "active": active,
        "now": utcnow(),
    }
    values.update(context or {})
    html = (templates or environment).get_template(template).render(values)
    return HTMLResponse(html, status_code=status_code)
