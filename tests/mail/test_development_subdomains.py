"""Development subdomains (`development: true` in mail.yaml): delivered to the local sink only,
never looked up in DNS, and refused by production. The shipped example has two of them."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from outbox.config import Settings
from outbox.mail.config import MailConfig, MailConfigError, load_mail_config, parse_mail_config
from outbox.mail.dns.checks import check_mail_dns, make_resolver
from outbox.mail.dns.verdicts import check_subdomains
from outbox.mail.environment import load_configured_mail, local_public_base_url, with_deployment_overrides
from tests.conftest import POLICIES
from tests.mail.conftest import config_data


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, policy_dir=POLICIES, **values)


def development(**subdomain: Any) -> dict[str, Any]:
    """A development subdomain as mail.yaml would give it: without a relay, unless one is given."""
    data = config_data(development=True, **subdomain)
    if "relay" not in subdomain:
        del data["subdomains"][0]["relay"]
    return data


@pytest.fixture
def silent_resolver() -> Iterator[socket.socket]:
    """A UDP socket standing in for a resolver: it never answers, and we read what reached it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as resolver:
        resolver.bind(("127.0.0.1", 0))
        resolver.setblocking(False)
        yield resolver


def queries(resolver: socket.socket) -> int:
    count = 0
    while True:
        try:
            resolver.recv(4096)
        except BlockingIOError:
            return count
        count += 1


def test_the_shipped_quickstart_subdomains_are_development_ones_and_only_the_second_has_a_send_window() -> None:
    config = load_mail_config(POLICIES / "mail.yaml")
    quickstart, reminders, outreach = config.subdomains

    assert [s.domain for s in config.development_subdomains()] == [quickstart.domain, reminders.domain]
    assert quickstart.domain == "agents.mail.example.com" and quickstart.send_window is None
    assert reminders.domain == "reminders.mail.example.com" and reminders.send_window is not None
    assert not outreach.development and outreach.enforce_dns_checks and outreach.relay.require_tls


def test_a_development_subdomain_relays_to_the_sink_and_is_never_dns_enforced() -> None:
    [sub] = parse_mail_config(development()).subdomains

    assert (sub.relay.host, sub.relay.port, sub.relay.starttls) == ("127.0.0.1", 2525, False)
    assert sub.enforce_dns_checks is False


@pytest.mark.parametrize(
    ("subdomain", "message"),
    [
        ({"relay": {"host": "smtp.example.net", "port": 587}}, "delivers only to the local sink"),
        (
            {"relay": {"host": "127.0.0.1", "port": 2525, "username_env": "U", "password_env": "P", "starttls": False}},
            "delivers only to the local sink",
        ),
        ({"enforce_dns_checks": True}, "DNS is never checked"),
    ],
)
def test_a_development_subdomain_refuses_what_would_take_it_past_the_sink(
    subdomain: dict[str, Any], message: str
) -> None:
    with pytest.raises(MailConfigError, match=message) as caught:
        parse_mail_config(development(**subdomain))
    assert "subdomains[0]" in str(caught.value)


def test_development_must_be_a_yaml_boolean() -> None:
    with pytest.raises(MailConfigError, match=r"subdomains\[0\]\.development"):
        parse_mail_config(config_data(development="yes"))


def test_a_loaded_development_subdomain_reads_back_as_it_was() -> None:
    config = parse_mail_config(development())
    assert parse_mail_config(config.model_dump(mode="json")) == config


def test_each_process_points_development_subdomains_at_its_own_sink_port() -> None:
    config = with_deployment_overrides(parse_mail_config(development()), settings(mail_sink_port=2600))

    assert config.subdomains[0].relay.port == 2600


def test_production_sends_nothing_from_development_subdomains() -> None:
    config = load_configured_mail(settings(environment="production"))

    assert config is not None
    assert config.allowed_sender_domains() == ["outreach.mail.example.com"]
    assert load_configured_mail(settings()).allowed_sender_domains() == [  # type: ignore[union-attr]
        "agents.mail.example.com",
        "reminders.mail.example.com",
        "outreach.mail.example.com",
    ]


def test_local_unsubscribe_links_follow_the_port_the_server_listens_on() -> None:
    shipped = load_mail_config(POLICIES / "mail.yaml")
    public = parse_mail_config(config_data())  # https://outbox.example.com/unsubscribe

    assert local_public_base_url(shipped, 9123) == "http://127.0.0.1:9123"
    assert local_public_base_url(public, 9123) is None
    moved = with_deployment_overrides(shipped, settings(public_base_url="http://127.0.0.1:9123"))
    assert moved.unsubscribe.base_url == "http://127.0.0.1:9123/unsubscribe"


def test_no_dns_query_is_ever_made_for_a_development_subdomain(silent_resolver: socket.socket, tmp_path: Path) -> None:
    config: MailConfig = parse_mail_config(development())
    address = f"127.0.0.1:{silent_resolver.getsockname()[1]}"

    assert check_subdomains(config, settings(dns_resolver=address, dns_timeout_seconds=0.2)) == []
    assert check_subdomains(config, settings(dns_resolver=address), config.subdomains) == []
    assert check_mail_dns(config, make_resolver(address, timeout=0.2), tmp_path) == []
    assert queries(silent_resolver) == 0
    # The same subdomain without `development` is looked up: the socket above does hear queries.
    plain = parse_mail_config(config_data())
    check_subdomains(plain, settings(dns_resolver=address, dns_timeout_seconds=0.2, dkim_key_dir=tmp_path))
    assert queries(silent_resolver) > 0
