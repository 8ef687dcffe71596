"""SPF, DKIM and DMARC checks against a real DNS server on loopback."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from outbox.mail.config import MailConfig, parse_mail_config
from outbox.mail.dns.checks import CheckStatus, SubdomainDnsReport, check_mail_dns, check_subdomain, make_resolver
from outbox.mail.sending.dkim_signing import DkimKey, dkim_record_name, generate_key
from tests.mail.conftest import SELECTOR, SUBDOMAIN, config_data
from tests.mail.dns_server import LoopbackDns

SPF = "v=spf1 ip4:192.0.2.10 -all"
DMARC = "v=DMARC1; p=quarantine; adkim=s; aspf=r; rua=mailto:dmarc@example.com"


@pytest.fixture
def config() -> MailConfig:
    return parse_mail_config(config_data(bounce_address=f"bounces@{SUBDOMAIN}"))


def publish_all(dns: LoopbackDns, key: DkimKey) -> None:
    dns.publish(SUBDOMAIN, SPF, "google-site-verification=abc")
    dns.publish(dkim_record_name(SELECTOR, SUBDOMAIN), key.txt_record())
    dns.publish(f"_dmarc.{SUBDOMAIN}", DMARC)


def check(dns: LoopbackDns, config: MailConfig, key: DkimKey | str) -> SubdomainDnsReport:
    return check_subdomain(config.subdomains[0], config, make_resolver(dns.address, timeout=3), key)


def statuses(report: SubdomainDnsReport) -> dict[str, CheckStatus]:
    return {c.name: c.status for c in report.checks}


@pytest.mark.parametrize("key_fixture", ["rsa_key", "ed25519_key"])
def test_a_fully_published_subdomain_passes(
    key_fixture: str, request: pytest.FixtureRequest, dns_server: LoopbackDns, config: MailConfig
) -> None:
    key: DkimKey = request.getfixturevalue(key_fixture)
    publish_all(dns_server, key)
    if key.algorithm == "ed25519-sha256":
        config = parse_mail_config(
            config_data(dkim={"selector": SELECTOR, "algorithm": "ed25519-sha256", "key_env": "K"})
        )
    report = check(dns_server, config, key)
    assert report.ok, report
    assert statuses(report) == {"spf": "pass", "dkim": "pass", "dmarc": "pass"}
    dkim_check = report.checks[1]
    assert dkim_check.query == f"{SELECTOR}._domainkey.{SUBDOMAIN}"
    assert dkim_check.record == key.txt_record()
    assert "policy quarantine; DKIM aligned; SPF aligned" in report.checks[2].reason
    assert report.model_dump(mode="json")["checks"][0]["status"] == "pass"


def test_a_missing_spf_record_fails(dns_server: LoopbackDns, config: MailConfig, rsa_key: DkimKey) -> None:
    dns_server.publish(dkim_record_name(SELECTOR, SUBDOMAIN), rsa_key.txt_record())
    dns_server.publish(f"_dmarc.{SUBDOMAIN}", DMARC)
    dns_server.publish(SUBDOMAIN, "some-other=txt")
    report = check(dns_server, config, rsa_key)
    assert not report.ok
    assert statuses(report) == {"spf": "fail", "dkim": "pass", "dmarc": "pass"}
    assert report.checks[0].reason.startswith("no SPF record")


def test_two_spf_records_fail(dns_server: LoopbackDns, config: MailConfig, rsa_key: DkimKey) -> None:
    publish_all(dns_server, rsa_key)
    dns_server.publish(SUBDOMAIN, "v=spf1 include:_spf.example.net ~all")
    report = check(dns_server, config, rsa_key)
    assert statuses(report)["spf"] == "fail"
    assert "RFC 7208" in report.checks[0].reason


def test_a_dkim_record_with_another_key_fails(dns_server: LoopbackDns, config: MailConfig, rsa_key: DkimKey) -> None:
    publish_all(dns_server, generate_key("rsa-sha256"))
    report = check(dns_server, config, rsa_key)
    assert statuses(report) == {"spf": "pass", "dkim": "fail", "dmarc": "pass"}
    assert "does not match the private key" in report.checks[1].reason
    assert rsa_key.txt_record() in report.checks[1].reason  # says what to publish instead


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ("v=DKIM1; k=rsa; p=", "revoked"),
        ("v=DKIM1; k=ed25519; p=AAAA", "k=ed25519"),
        ("v=DKIM1; k=rsa; s=tlsrpt; p=AAAA", "excludes email"),
    ],
)
def test_unusable_dkim_records_fail(
    record: str, reason: str, dns_server: LoopbackDns, config: MailConfig, rsa_key: DkimKey
) -> None:
    dns_server.publish(dkim_record_name(SELECTOR, SUBDOMAIN), record)
    report = check(dns_server, config, rsa_key)
    assert statuses(report)["dkim"] == "fail"
    assert reason in report.checks[1].reason


def test_an_unloadable_private_key_fails_the_dkim_check(
    dns_server: LoopbackDns, config: MailConfig, rsa_key: DkimKey
) -> None:
    publish_all(dns_server, rsa_key)
    report = check(dns_server, config, "environment variable X is not set")
    assert statuses(report)["dkim"] == "fail"
    assert "private key unavailable" in report.checks[1].reason


def test_a_missing_dmarc_record_fails(dns_server: LoopbackDns, config: MailConfig, rsa_key: DkimKey) -> None:
    dns_server.publish(SUBDOMAIN, SPF)
    dns_server.publish(dkim_record_name(SELECTOR, SUBDOMAIN), rsa_key.txt_record())
    report = check(dns_server, config, rsa_key)
    assert statuses(report) == {"spf": "pass", "dkim": "pass", "dmarc": "fail"}
    assert report.checks[2].reason.startswith(f"no DMARC record at _dmarc.{SUBDOMAIN} or _dmarc.example.com")
    # RFC 7489 §6.6.3: asked at the subdomain, then at the organizational domain.
    assert f"_dmarc.{SUBDOMAIN}" in dns_server.queries
    assert "_dmarc.example.com" in dns_server.queries


def test_the_organizational_domains_dmarc_record_applies_with_its_subdomain_policy(
    dns_server: LoopbackDns, config: MailConfig, rsa_key: DkimKey
) -> None:
    dns_server.publish(SUBDOMAIN, SPF)
    dns_server.publish(dkim_record_name(SELECTOR, SUBDOMAIN), rsa_key.txt_record())
    dns_server.publish("_dmarc.example.com", "v=DMARC1; p=reject; sp=none")
    report = check(dns_server, config, rsa_key)
    assert report.ok
    assert report.checks[2].query == "_dmarc.example.com"
    assert report.checks[2].reason.startswith("policy none")


def test_strict_spf_alignment_is_reported_when_bounces_use_another_domain(
    dns_server: LoopbackDns, rsa_key: DkimKey
) -> None:
    config = parse_mail_config(config_data(bounce_address="bounces@returns.example.com"))
    dns_server.publish("returns.example.com", SPF)
    dns_server.publish(dkim_record_name(SELECTOR, SUBDOMAIN), rsa_key.txt_record())
    dns_server.publish(f"_dmarc.{SUBDOMAIN}", "v=DMARC1; p=reject; aspf=s")
    report = check(dns_server, config, rsa_key)
    assert report.ok  # DKIM alignment alone satisfies DMARC
    assert report.checks[0].query == "returns.example.com"  # SPF is checked at the envelope domain
    assert "SPF not aligned (returns.example.com; aspf=s)" in report.checks[2].reason


def test_a_dns_server_failure_is_an_error_not_a_verdict(
    dns_server: LoopbackDns, config: MailConfig, rsa_key: DkimKey
) -> None:
    publish_all(dns_server, rsa_key)
    dns_server.servfail.add(SUBDOMAIN)
    report = check(dns_server, config, rsa_key)
    assert not report.ok
    assert statuses(report)["spf"] == "error"


@pytest.mark.parametrize(
    ("spec", "nameserver", "port"),
    [("127.0.0.1:5353", "127.0.0.1", 5353), ("[::1]:53", "::1", 53), ("192.0.2.1", "192.0.2.1", 53)],
)
def test_resolver_specs(spec: str, nameserver: str, port: int) -> None:
    resolver = make_resolver(spec)
    assert resolver.nameservers == [nameserver]
    assert resolver.port == port


@pytest.mark.parametrize("spec", ["dns.example.com:53", "127.0.0.1:0", "127.0.0.1:x"])
def test_bad_resolver_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="resolver"):
        make_resolver(spec)


def test_reports_for_every_subdomain_load_keys_through_the_config(
    dns_server: LoopbackDns, rsa_key: DkimKey, make_config: Callable[..., MailConfig]
) -> None:
    publish_all(dns_server, rsa_key)
    reports = check_mail_dns(make_config(rsa_key), make_resolver(dns_server.address, timeout=3))
    assert [(r.subdomain, r.ok) for r in reports] == [(SUBDOMAIN, True)]
