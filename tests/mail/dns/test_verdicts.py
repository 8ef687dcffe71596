"""When a subdomain is blocked from sending by its DNS verdict: one rule, used by the gate, the
status, the audit event and `outbox mail check-dns`."""

from __future__ import annotations

import pytest

from outbox.mail.dns.verdicts import DnsVerdict, blocks_sending


@pytest.mark.parametrize(
    ("enforced", "ok", "blocked"),
    [
        (True, False, True),  # enforced and the last check failed: mail waits
        (True, None, False),  # never checked: the first send checks before it decides
        (True, True, False),
        (False, False, False),  # a failing check that is not enforced only warns
        (False, None, False),
        (False, True, False),
    ],
)
def test_only_an_enforced_failed_check_blocks_sending(enforced: bool, ok: bool | None, blocked: bool) -> None:
    assert blocks_sending(enforced, ok) is blocked
    verdict = DnsVerdict("agents.mail.example.com", enforced, ok, reason=None, checked_at=None)
    assert verdict.blocks is blocked
