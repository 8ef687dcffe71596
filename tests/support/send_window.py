"""Mail whose send window is closed whenever the test runs: a real `email.send` that execution
defers (status `deferred`, `not_before` at the window's opening) without any clock trickery.

The window opens on one weekday only, two days after today (UTC), so it is closed now and stays
closed for the whole test, whatever the hour (even across midnight). Two, not three: the opening
is then 32 to 56 hours away, always within the 72 hours a send may wait (`mail_max_deferral_hours`);
three days after today at 08:00 is more than 72 hours away before 08:00 UTC, and the send would
expire instead of waiting.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from outbox.mail.sending.dkim_signing import generate_key, write_private_key
from tests.mail.world import SUBDOMAIN, subdomain_config, write_mail_yaml

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
OPENS_AT = time(8, 0)


def opening_day() -> datetime:
    """When the closed window next opens (UTC)."""
    day = datetime.now(UTC).date() + timedelta(days=2)
    return datetime.combine(day, OPENS_AT, tzinfo=UTC)


def write_closed_window_mail(policy_dir: Path, key_dir: Path) -> None:
    """mail.yaml with one subdomain (relay on the discard port: nothing is ever sent) whose send
    window is closed now."""
    key_file = key_dir / "closed-window.key"
    if not key_file.exists():
        write_private_key(key_file, generate_key("rsa-sha256"))
    window = {
        "days": [WEEKDAYS[opening_day().weekday()]],
        "start": OPENS_AT.strftime("%H:%M"),
        "end": "18:00",
        "timezone": "UTC",
    }
    write_mail_yaml(policy_dir, [subdomain_config(SUBDOMAIN, key_file, 9, send_window=window)])


# Settings a runtime needs to load that mail.yaml (nothing here reaches DNS: checks not enforced).
MAIL_SETTINGS: dict[str, Any] = {
    "unsubscribe_secret": SecretStr("send-window-unsubscribe-secret-0123456789abcdef"),
}


def closed_window_message() -> dict[str, Any]:
    return {
        "from": f"Reports <reports@{SUBDOMAIN}>",
        "to": ["ann@example.net"],
        "subject": "Your weekly report",
        "text": "Hello,\n\nyour report is ready.\n",
        "category": "transactional",
    }
