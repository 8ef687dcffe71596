"""policies/mail.yaml: what loads, and what is refused with the file and field named."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from outbox.mail.config import MailConfigError, load_mail_config, parse_mail_config
from tests.mail.conftest import config_data

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mail.yaml"
    path.write_text(text)
    return path


def test_the_shipped_example_config_loads() -> None:
    config = load_mail_config(REPO / "policies" / "mail.yaml")
    assert config.primary_domains == ["example.com"]
    sub = config.subdomain("AGENTS.mail.example.com.")
    assert sub is not None
    assert sub.dkim.key_file is not None
    assert sub.recipient_domain_hourly_cap("Gmail.com") == 20
    assert sub.recipient_domain_hourly_cap("example.org") == sub.default_recipient_domain_hourly
    assert config.organizational_domain(sub.domain) == "example.com"


def test_errors_name_the_file_and_the_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
primary_domains: [example.com]
unsubscribe: {base_url: "https://o.example.com/u"}
subdomains:
  - domain: agents.example.com
    dkim: {algorithm: rsa-sha256, key_env: DKIM_KEY}
    relay: {host: relay.example.com}
    budgets: {per_hour: 10, per_day: 100}
""",
    )
    with pytest.raises(MailConfigError) as caught:
        load_mail_config(path)
    assert f"{path}: subdomains[0].dkim.selector: Field required" in str(caught.value)


def test_invalid_yaml_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "primary_domains: [example.com]\nsubdomains: [\n")
    with pytest.raises(MailConfigError, match=rf"^{re.escape(str(path))}:3: "):
        load_mail_config(path)


SUBDOMAIN_YAML = """\
  - domain: agents.mail.example.com
    dkim: {selector: s1, algorithm: rsa-sha256, key_file: keys/agents.key}
    relay: {host: 127.0.0.1, port: 2525, starttls: false}
    budgets: {per_hour: 100, per_day: 1000}
"""


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        # A second top-level key would silently replace the first: here, the protected domains.
        (
            "primary_domains: [example.com]\nprimary_domains: [example.org]\nsubdomains:\n" + SUBDOMAIN_YAML,
            2,
            "primary_domains",
        ),
        # Inside a subdomain: a second budget that raises the cap a reviewer saw.
        (
            "primary_domains: [example.com]\nsubdomains:\n"
            + SUBDOMAIN_YAML.replace("per_day: 1000}", "per_day: 1000}\n    budgets: {per_hour: 9000, per_day: 90000}"),
            7,
            "budgets",
        ),
        # In a flow mapping, on one line.
        (
            "primary_domains: [example.com]\nsubdomains:\n"
            + SUBDOMAIN_YAML.replace("starttls: false", "starttls: false, host: 10.0.0.1"),
            5,
            "host",
        ),
    ],
)
def test_a_repeated_key_is_refused_with_the_file_and_line(tmp_path: Path, text: str, line: int, key: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(MailConfigError, match=rf"^{re.escape(str(path))}:{line}: .*duplicate key '{key}'"):
        load_mail_config(path)


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(MailConfigError, match=rf"^{re.escape(str(tmp_path))}: cannot read"):
        load_mail_config(tmp_path)  # a directory


def test_a_primary_domain_cannot_be_a_sending_subdomain() -> None:
    with pytest.raises(MailConfigError, match="agent mail never uses the primary domain"):
        parse_mail_config(config_data(domain="example.com"))


def test_a_sending_subdomain_must_sit_under_a_primary_domain() -> None:
    with pytest.raises(MailConfigError, match="must be a subdomain of a primary domain"):
        parse_mail_config(config_data(domain="agents.example.org"))


@pytest.mark.parametrize(
    ("override", "field", "message"),
    [
        ({"dkim": {"selector": "s1", "key_file": "a.key", "key_env": "A"}}, "dkim", "exactly one"),
        ({"dkim": {"selector": "s1"}}, "dkim", "exactly one"),
        ({"dkim": {"selector": "s1", "key_env": "lower-case"}}, "dkim.key_env", "environment variable"),
        ({"relay": {"host": "h", "starttls": False, "require_tls": True}}, "relay", "require_tls needs"),
        ({"relay": {"host": "h", "username_env": "U"}}, "relay", "both username_env and password_env"),
        ({"budgets": {"per_hour": 101, "per_day": 100}}, "budgets", "per_hour cannot exceed per_day"),
        (
            {"send_window": {"days": ["mon"], "start": 480, "end": "18:00", "timezone": "UTC"}},
            "send_window.start",
            "quoted strings",
        ),
        (
            {"send_window": {"days": ["mon"], "start": "20:00", "end": "06:00", "timezone": "UTC"}},
            "send_window",
            "across midnight",
        ),
        (
            {"send_window": {"days": ["mon"], "start": "08:00", "end": "18:00", "timezone": "Mars/Olympus"}},
            "send_window.timezone",
            "unknown IANA time zone",
        ),
        (
            {"send_window": {"days": [], "start": "08:00", "end": "18:00", "timezone": "UTC"}},
            "send_window.days",
            "at least 1",
        ),
        ({"recipient_domain_hourly": {"gmail.com": 0}}, "recipient_domain_hourly.gmail.com", "greater than"),
        ({"breaker": {"bounce_rate": 1.5}}, "breaker.bounce_rate", "less than 1"),
    ],
)
def test_subdomain_mistakes_are_reported_on_their_field(override: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(MailConfigError) as caught:
        parse_mail_config(config_data(**override))
    text = str(caught.value)
    assert f"subdomains[0].{field}" in text
    assert message in text


def test_unsubscribe_needs_https_except_on_loopback() -> None:
    data = config_data()
    data["unsubscribe"] = {"base_url": "http://outbox.example.com/u"}
    with pytest.raises(MailConfigError, match=r"unsubscribe\.base_url: .*https"):
        parse_mail_config(data)
    data["unsubscribe"] = {"base_url": "http://127.0.0.1:8000/unsubscribe/"}
    assert parse_mail_config(data).unsubscribe.base_url == "http://127.0.0.1:8000/unsubscribe"


def test_end_of_day_is_written_24_00() -> None:
    window = {"days": ["sun", "mon"], "start": "00:00", "end": "24:00", "timezone": "UTC"}
    sub = parse_mail_config(config_data(send_window=window)).subdomains[0]
    assert sub.send_window is not None
    assert sub.send_window.days == ["mon", "sun"]
    assert sub.send_window.end.hour == 23


def test_unknown_keys_are_refused() -> None:
    with pytest.raises(MailConfigError, match=r"subdomains\[0\].budget: Extra inputs are not permitted"):
        parse_mail_config(config_data(budget={"per_hour": 1}))


def test_relay_credentials_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    relay = {"host": "h", "username_env": "RELAY_USER_T", "password_env": "RELAY_PASSWORD_T"}
    sub = parse_mail_config(config_data(relay=relay)).subdomains[0]
    with pytest.raises(MailConfigError, match="RELAY_USER_T"):
        sub.relay.credentials()
    monkeypatch.setenv("RELAY_USER_T", "user")
    monkeypatch.setenv("RELAY_PASSWORD_T", "secret")
    assert sub.relay.credentials() == ("user", "secret")
