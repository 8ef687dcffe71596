"""Is a sending subdomain's DNS ready for it to send? SPF, DKIM and DMARC, checked with dnspython.

A subdomain whose records are missing or wrong would have its mail rejected or junked, and every
such message costs reputation; so the pipeline blocks a subdomain whose report is not `ok`. The
resolver is configurable (nameserver and port) so that tests, and operators checking a zone
before it is public, can point it at a specific server.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from ipaddress import ip_address
from pathlib import Path
from typing import Literal

import dns.exception
import dns.resolver
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import BaseModel, ConfigDict

from outbox.mail.config import MailConfig, SubdomainConfig
from outbox.mail.sending.dkim_signing import DkimKey, DkimKeyError, dkim_record_name, load_signing_key
from outbox.sqltypes import utcnow

DEFAULT_TIMEOUT_SECONDS = 5.0


class CheckStatus(StrEnum):
    PASS = "pass"  # noqa: S105 - a status, not a password
    FAIL = "fail"
    ERROR = "error"  # the question could not be answered (timeout, SERVFAIL): try again later


class DnsCheck(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: Literal["spf", "dkim", "dmarc"]
    status: CheckStatus
    reason: str
    # The DNS name asked, and the record found (when one was).
    query: str
    record: str | None = None


class SubdomainDnsReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    subdomain: str
    ok: bool
    checks: list[DnsCheck]
    checked_at: datetime


class _LookupError(Exception):
    pass


def make_resolver(spec: str | None, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> dns.resolver.Resolver:
    """A resolver for `"ip"`, `"ip:port"` or `"[ipv6]:port"`; the system's for None or "system"."""
    if spec is None or spec == "system":
        resolver = dns.resolver.Resolver()
    else:
        host, port = _split_host_port(spec)
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [host]
        resolver.port = port
    resolver.lifetime = timeout
    resolver.timeout = timeout
    return resolver


def _split_host_port(spec: str) -> tuple[str, int]:
    host, port = spec, "53"
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        port = rest.removeprefix(":") or "53"
    elif spec.count(":") == 1:
        host, port = spec.split(":")
    try:
        ip_address(host)
        number = int(port)
    except ValueError:
        raise ValueError(f"resolver {spec!r}: expected ip, ip:port or [ipv6]:port") from None
    if not 0 < number < 65536:
        raise ValueError(f"resolver {spec!r}: port out of range")
    return host, number


def _txt(resolver: dns.resolver.Resolver, name: str) -> list[str]:
    """The TXT records at `name`, each one's strings joined (RFC 6376 §3.6.2.2, RFC 7208 §3.3)."""
    try:
        answer = resolver.resolve(name, "TXT", raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        return []
    except dns.exception.DNSException as exc:
        raise _LookupError(f"{name}: {type(exc).__name__}: {exc}") from None
    records: list[str] = []
    for rdata in answer:
        strings: tuple[bytes, ...] = rdata.strings
        records.append(b"".join(strings).decode("utf-8", "replace"))
    return records


def _tags(record: str) -> dict[str, str]:
    """A tag=value list (RFC 6376 §3.2, RFC 7489 §6.4); whitespace inside values is dropped."""
    tags: dict[str, str] = {}
    for part in record.split(";"):
        tag, sep, value = part.partition("=")
        if sep:
            tags.setdefault(tag.strip().lower(), "".join(value.split()))
    return tags


def check_spf(resolver: dns.resolver.Resolver, domain: str) -> DnsCheck:
    """An SPF record at the envelope-sender domain; exactly one (RFC 7208 §4.5)."""
    try:
        found = [r for r in _txt(resolver, domain) if r.lower().split(" ")[0] == "v=spf1"]
    except _LookupError as exc:
        return DnsCheck(name="spf", status=CheckStatus.ERROR, reason=str(exc), query=domain)
    if not found:
        return DnsCheck(
            name="spf",
            status=CheckStatus.FAIL,
            query=domain,
            reason=f'no SPF record: publish TXT "v=spf1 … -all" at {domain}',
        )
    if len(found) > 1:
        return DnsCheck(
            name="spf",
            status=CheckStatus.FAIL,
            query=domain,
            record=" | ".join(found),
            reason=f"{len(found)} SPF records; RFC 7208 §4.5 makes that a permanent error",
        )
    record = found[0]
    if any(term in ("+all", "all") for term in record.lower().split()[1:]):
        return DnsCheck(
            name="spf",
            status=CheckStatus.FAIL,
            query=domain,
            record=record,
            reason="the SPF record authorises every host (+all)",
        )
    return DnsCheck(name="spf", status=CheckStatus.PASS, query=domain, record=record, reason="SPF published")


def _same_public_key(published_b64: str, key: DkimKey) -> bool:
    try:
        published = base64.b64decode(published_b64, validate=True)
    except binascii.Error:
        return False
    if key.algorithm == "ed25519-sha256":
        return published == base64.b64decode(key.public_key_b64)
    try:
        theirs = serialization.load_der_public_key(published)
    except ValueError:
        return False
    ours = serialization.load_der_public_key(base64.b64decode(key.public_key_b64))
    return (
        isinstance(theirs, rsa.RSAPublicKey)
        and isinstance(ours, rsa.RSAPublicKey)
        and theirs.public_numbers() == ours.public_numbers()
    )


def check_dkim(resolver: dns.resolver.Resolver, selector: str, domain: str, key: DkimKey | str) -> DnsCheck:
    """The key record at `<selector>._domainkey.<domain>` holds our private key's public half.

    `key` is the loaded key, or the reason it could not be loaded.
    """
    name = dkim_record_name(selector, domain)

    def result(status: CheckStatus, reason: str, record: str | None = None) -> DnsCheck:
        return DnsCheck(name="dkim", status=status, reason=reason, query=name, record=record)

    if isinstance(key, str):
        return result(CheckStatus.FAIL, f"private key unavailable: {key}")
    try:
        records = _txt(resolver, name)
    except _LookupError as exc:
        return result(CheckStatus.ERROR, str(exc))
    if not records:
        return result(CheckStatus.FAIL, f'no key record: publish TXT "{key.txt_record()}"')
    if len(records) > 1:
        return result(CheckStatus.FAIL, f"{len(records)} TXT records; a selector has one key")
    record = records[0]
    tags = _tags(record)
    if tags.get("v", "DKIM1") != "DKIM1":
        return result(CheckStatus.FAIL, "v= is not DKIM1", record)
    expected_k = "rsa" if key.algorithm == "rsa-sha256" else "ed25519"
    if tags.get("k", "rsa") != expected_k:
        return result(CheckStatus.FAIL, f"k={tags.get('k', 'rsa')}, the key is {expected_k}", record)
    if tags.get("s", "*") not in ("*", "email"):
        return result(CheckStatus.FAIL, f"service type s={tags['s']} excludes email", record)
    if "h" in tags and "sha256" not in tags["h"].split(":"):
        return result(CheckStatus.FAIL, f"h={tags['h']} excludes sha256", record)
    if not tags.get("p"):
        return result(CheckStatus.FAIL, "the key is revoked (empty p=)", record)
    if not _same_public_key(tags["p"], key):
        return result(
            CheckStatus.FAIL,
            f'published key does not match the private key; publish "{key.txt_record()}"',
            record,
        )
    testing = " (t=y: receivers treat it as testing)" if "y" in tags.get("t", "").split(":") else ""
    return result(CheckStatus.PASS, f"key record matches the private key{testing}", record)


def _dmarc_record(resolver: dns.resolver.Resolver, domain: str) -> tuple[str, str | None]:
    """The one DMARC record at `_dmarc.<domain>` (RFC 7489 §6.6.3: several count as none)."""
    name = f"_dmarc.{domain}"
    found = [r for r in _txt(resolver, name) if _tags(r.split(";", 1)[0]).get("v") == "DMARC1"]
    return name, found[0] if len(found) == 1 else None


def _aligned(mode: str, domain: str, from_domain: str, config: MailConfig) -> bool:
    """Identifier alignment, RFC 7489 §3.1: strict is equality, relaxed a shared org domain."""
    if mode == "s":
        return domain == from_domain
    return config.organizational_domain(domain) == config.organizational_domain(from_domain)


def check_dmarc(resolver: dns.resolver.Resolver, sub: SubdomainConfig, config: MailConfig) -> DnsCheck:
    """A DMARC policy covers the subdomain, and our DKIM signature aligns with From under it.

    RFC 7489 §6.6.3: the record at `_dmarc.<from-domain>` applies; without one, the
    organizational domain's applies, with its `sp=` (subdomain policy) when given.
    """
    org = config.organizational_domain(sub.domain)
    assert org is not None  # MailConfig refuses subdomains outside the primary domains
    query = f"_dmarc.{sub.domain}"
    try:
        query, record = _dmarc_record(resolver, sub.domain)
        inherited = record is None
        if record is None:
            query, record = _dmarc_record(resolver, org)
    except _LookupError as exc:
        return DnsCheck(name="dmarc", status=CheckStatus.ERROR, reason=str(exc), query=query)
    if record is None:
        return DnsCheck(
            name="dmarc",
            status=CheckStatus.FAIL,
            query=f"_dmarc.{sub.domain}",
            reason=f"no DMARC record at _dmarc.{sub.domain} or _dmarc.{org}: publish one",
        )
    tags = _tags(record)
    policy = tags.get("sp", tags.get("p")) if inherited else tags.get("p")
    if policy not in ("none", "quarantine", "reject"):
        return DnsCheck(
            name="dmarc",
            status=CheckStatus.FAIL,
            query=query,
            record=record,
            reason="the DMARC record has no valid p= policy",
        )
    envelope_domain = sub.envelope_domain()
    dkim_ok = _aligned(tags.get("adkim", "r"), sub.domain, sub.domain, config)
    spf_ok = _aligned(tags.get("aspf", "r"), envelope_domain, sub.domain, config)
    if not dkim_ok:
        return DnsCheck(
            name="dmarc",
            status=CheckStatus.FAIL,
            query=query,
            record=record,
            reason="DKIM d= does not align with the From domain",
        )
    spf_note = "SPF aligned" if spf_ok else f"SPF not aligned ({envelope_domain}; aspf=s)"
    monitoring = "; p=none only monitors" if policy == "none" else ""
    return DnsCheck(
        name="dmarc",
        status=CheckStatus.PASS,
        query=query,
        record=record,
        reason=f"policy {policy}; DKIM aligned; {spf_note}{monitoring}",
    )


def check_subdomain(
    sub: SubdomainConfig,
    config: MailConfig,
    resolver: dns.resolver.Resolver,
    key: DkimKey | str,
    now: Callable[[], datetime] = utcnow,
) -> SubdomainDnsReport:
    """All three checks for one subdomain; `ok` only if every one passes."""
    checks = [
        check_spf(resolver, sub.envelope_domain()),
        check_dkim(resolver, sub.dkim.selector, sub.domain, key),
        check_dmarc(resolver, sub, config),
    ]
    return SubdomainDnsReport(
        subdomain=sub.domain,
        ok=all(c.status is CheckStatus.PASS for c in checks),
        checks=checks,
        checked_at=now(),
    )


def check_mail_dns(
    config: MailConfig, resolver: dns.resolver.Resolver, key_base_dir: Path | None = None
) -> list[SubdomainDnsReport]:
    """Check every configured subdomain but the development ones (never looked up), loading each
    one's private key to compare."""
    reports: list[SubdomainDnsReport] = []
    for sub in (s for s in config.subdomains if not s.development):
        key: DkimKey | str
        try:
            key = load_signing_key(sub.dkim, key_base_dir)
        except DkimKeyError as exc:
            key = str(exc)
        reports.append(check_subdomain(sub, config, resolver, key))
    return reports
