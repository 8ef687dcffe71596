"""Outbound destinations that come from configuration are parsed once, at startup.

The outbox makes requests to: targets of `http.request` (policy decides, tests/tools), agent
callbacks (policy decides, tests/approvals/test_callbacks.py), the Slack Web API, SMTP relays
(policies/mail.yaml) and a DNS resolver. The last three are server settings only; these tests
show they are parsed into one form when the settings load, and that unsafe forms stop the
server from starting rather than surfacing at the first request.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from outbox.config import Settings


@pytest.mark.parametrize(
    ("given", "parsed"),
    [
        ("https://slack.com/api/", "https://slack.com/api/"),
        ("https://slack.com/api", "https://slack.com/api/"),
        ("HTTPS://Slack.COM:443/api/", "https://slack.com/api/"),
        ("http://localhost:9000/api/", "http://127.0.0.1:9000/api/"),
        ("http://[::1]:9000/gateway/slack/", "http://127.0.0.1:9000/gateway/slack/"),
        ("https://slack-gw.internal/%61pi/", "https://slack-gw.internal/api/"),
    ],
)
def test_the_slack_api_base_url_is_parsed_once_into_the_canonical_form(given: str, parsed: str) -> None:
    assert Settings(slack_api_url=given).slack_api_url == parsed


@pytest.mark.parametrize(
    "given",
    [
        "https://token@slack.com/api/",
        "https://u:p@slack.com/api/",
        "https://slack.com/api/?team=T1",
        "https://slack.com/api/#x",
        "ftp://slack.com/api/",
        "slack.com/api/",
        "https://slack.com//api/",
        "https://slack.com/api/../admin/",
        "https://0x7f.0.0.1/api/",
        "https://slack.com\\@evil.example/api/",
    ],
)
def test_an_unsafe_slack_api_base_url_stops_the_settings_from_loading(given: str) -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(slack_api_url=given)
    assert raised.value.errors()[0]["loc"] == ("slack_api_url",)


@pytest.mark.parametrize(
    ("given", "parsed"),
    [
        (None, None),
        ("system", "system"),
        ("127.0.0.1", "127.0.0.1:53"),
        ("127.0.0.1:5353", "127.0.0.1:5353"),
        ("10.0.0.2:053", "10.0.0.2:53"),
        ("::1", "[::1]:53"),
        ("[::1]", "[::1]:53"),
        ("[::1]:", "[::1]:53"),
        ("[2001:DB8::53]:5353", "[2001:db8::53]:5353"),
    ],
)
def test_the_dns_resolver_is_an_address_parsed_once(given: str | None, parsed: str | None) -> None:
    assert Settings(dns_resolver=given).dns_resolver == parsed


@pytest.mark.parametrize(
    "given",
    [
        "dns.example",
        "localhost",
        "localhost:53",
        "0177.0.0.1",
        "127.1",
        "1.1.1.1:0",
        "1.1.1.1:65536",
        "1.1.1.1:dns",
        "[::1]x",
        "udp://1.1.1.1",
    ],
)
def test_a_dns_resolver_that_is_a_name_or_malformed_stops_the_settings_from_loading(given: str) -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(dns_resolver=given)
    assert raised.value.errors()[0]["loc"] == ("dns_resolver",)
