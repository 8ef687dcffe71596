"""DKIM keys and signatures (RFC 6376, RFC 8463), checked with dkimpy's own verifier."""

from __future__ import annotations

import base64
import os
import re
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from outbox.mail.config import DkimConfig
from outbox.mail.sending.dkim_signing import (
    DkimKey,
    DkimKeyError,
    DkimSelfCheckError,
    key_record_lookup,
    load_signing_key,
    parse_private_key,
    sign_message,
    signature_header,
    signed_header_list,
    verify_own_signature,
    write_private_key,
)
from outbox.mail.sending.message import EmailSendArgs, build_mime
from outbox.mail.sending.unsubscribe import list_unsubscribe_headers

DOMAIN = "agents.mail.example.com"


def message(*, bulk: bool = False) -> bytes:
    parsed = EmailSendArgs.model_validate(
        {
            "from": f"Agent <bot@{DOMAIN}>",
            "to": ["ann@example.net"],
            "subject": "Grüße",
            "text": "Hello\n",
            "category": "bulk" if bulk else "transactional",
        }
    )
    headers = (
        list_unsubscribe_headers(token="v1.abc.def", base_url="https://o.example.com/u", mailto_address=None)
        if bulk
        else None
    )
    return build_mime(parsed, message_id=f"<m1@{DOMAIN}>", date=datetime.now(UTC), extra_headers=headers)


def signature_tags(signed: bytes) -> dict[str, str]:
    header = signed.split(b"\r\n\r\n")[0].decode().split("\r\nFrom:")[0]
    assert header.startswith("DKIM-Signature:")
    body = "".join(header.removeprefix("DKIM-Signature:").split())
    return dict(part.split("=", 1) for part in body.split(";") if part)


@pytest.mark.parametrize("algorithm", ["rsa-sha256", "ed25519-sha256"])
def test_signatures_verify_with_dkimpy_against_the_published_record(
    algorithm: str, rsa_key: DkimKey, ed25519_key: DkimKey
) -> None:
    key = rsa_key if algorithm == "rsa-sha256" else ed25519_key
    signed = sign_message(message(), key=key, selector="s1", domain=DOMAIN)
    assert dkim.verify(signed, dnsfunc=key_record_lookup(key, "s1", DOMAIN))
    tags = signature_tags(signed)
    assert tags["a"] == algorithm
    assert tags["d"] == DOMAIN
    assert tags["s"] == "s1"
    assert tags["c"] == "relaxed/relaxed"


def test_the_header_list_is_explicit_and_oversigned(rsa_key: DkimKey) -> None:
    signed = sign_message(message(), key=rsa_key, selector="s1", domain=DOMAIN)
    signed_headers = signature_tags(signed)["h"].split(":")
    for name in ("from", "to", "subject", "date", "message-id", "mime-version", "content-type"):
        assert name in signed_headers
    # Absent headers are signed as absent, present ones once more than they occur.
    assert signed_headers.count("from") == 2
    assert "reply-to" in signed_headers
    assert "cc" in signed_headers


def test_bulk_signs_both_rfc_8058_headers(ed25519_key: DkimKey) -> None:
    signed = sign_message(message(bulk=True), key=ed25519_key, selector="s1", domain=DOMAIN)
    signed_headers = signature_tags(signed)["h"].split(":")
    assert signed_headers.count("list-unsubscribe") == 2
    assert signed_headers.count("list-unsubscribe-post") == 2


@pytest.mark.parametrize(
    ("find", "replace"),
    [
        (b"Subject: ", b"Subject: Re: "),
        (b"\r\nFrom: ", b"\r\nReply-To: attacker@example.org\r\nFrom: "),
        (b"\r\nFrom: ", b"\r\nFrom: Other <ceo@example.com>\r\nFrom: "),
        (b"Hello", b"Hullo"),
    ],
)
def test_changes_in_transit_break_the_signature(find: bytes, replace: bytes, rsa_key: DkimKey) -> None:
    signed = sign_message(message(), key=rsa_key, selector="s1", domain=DOMAIN)
    tampered = signed.replace(find, replace, 1)
    assert tampered != signed
    assert not dkim.verify(tampered, dnsfunc=key_record_lookup(rsa_key, "s1", DOMAIN))
    with pytest.raises(DkimSelfCheckError):
        verify_own_signature(tampered, key=rsa_key, selector="s1", domain=DOMAIN)


def test_self_verification_refuses_a_key_that_is_not_the_configured_one(rsa_key: DkimKey) -> None:
    other = parse_private_key(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        "rsa-sha256",
    )
    signed = sign_message(message(), key=other, selector="s1", domain=DOMAIN)
    with pytest.raises(DkimSelfCheckError, match="does not verify"):
        verify_own_signature(signed, key=rsa_key, selector="s1", domain=DOMAIN)
    verify_own_signature(signed, key=other, selector="s1", domain=DOMAIN)


def test_txt_records_carry_the_public_key(rsa_key: DkimKey, ed25519_key: DkimKey) -> None:
    assert rsa_key.txt_record().startswith("v=DKIM1; k=rsa; p=MII")
    public = serialization.load_der_public_key(base64.b64decode(rsa_key.public_key_b64))
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.key_size == 2048
    assert ed25519_key.txt_record() == f"v=DKIM1; k=ed25519; p={ed25519_key.public_key_b64}"
    assert len(base64.b64decode(ed25519_key.public_key_b64)) == 32
    assert "private_key" not in repr(rsa_key)


def test_private_keys_load_from_pem_seed_and_escaped_environment_values() -> None:
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    from_pem = parse_private_key(pem, "ed25519-sha256")
    assert parse_private_key(from_pem.private_key, "ed25519-sha256") == from_pem
    escaped = pem.decode().strip().replace("\n", "\\n").encode()
    assert parse_private_key(escaped, "ed25519-sha256") == from_pem


@pytest.mark.parametrize(
    ("data", "algorithm", "message"),
    [
        (b"not a key", "rsa-sha256", "must be PEM"),
        (b"AAAA", "ed25519-sha256", "32 bytes"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----", "rsa-sha256", "unreadable PEM"),
    ],
)
def test_unusable_keys_are_refused(data: bytes, algorithm: str, message: str) -> None:
    with pytest.raises(DkimKeyError, match=message):
        parse_private_key(data, algorithm)  # type: ignore[arg-type]


def test_a_key_of_the_other_algorithm_is_refused(rsa_key: DkimKey) -> None:
    with pytest.raises(DkimKeyError, match="not a key for ed25519-sha256"):
        parse_private_key(rsa_key.private_key, "ed25519-sha256")


def test_keys_load_from_a_file_or_an_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ed25519_key: DkimKey
) -> None:
    write_private_key(tmp_path / "dkim" / "agents.key", ed25519_key)
    assert stat.S_IMODE(os.stat(tmp_path / "dkim" / "agents.key").st_mode) == 0o600
    with pytest.raises(FileExistsError):
        write_private_key(tmp_path / "dkim" / "agents.key", ed25519_key)
    from_file = DkimConfig(selector="s1", algorithm="ed25519-sha256", key_file=Path("dkim/agents.key"))
    assert load_signing_key(from_file, base_dir=tmp_path) == ed25519_key

    from_env = DkimConfig(selector="s1", algorithm="ed25519-sha256", key_env="OUTBOX_TEST_DKIM_KEY")
    with pytest.raises(DkimKeyError, match="OUTBOX_TEST_DKIM_KEY is not set"):
        load_signing_key(from_env)
    monkeypatch.setenv("OUTBOX_TEST_DKIM_KEY", ed25519_key.private_key.decode())
    assert load_signing_key(from_env) == ed25519_key

    missing = DkimConfig(selector="s1", algorithm="rsa-sha256", key_file=tmp_path / "absent.key")
    with pytest.raises(DkimKeyError, match="cannot read key file"):
        load_signing_key(missing)


# --- The signature is dkimpy's, byte for byte (only the key operation runs in `cryptography`) ---

LONG_LINE = "word " * 400  # one 2,000-character line: quoted-printable soft breaks, and no folding
VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "unicode body and subject": {"subject": "Grüße aus Köln — 東京 🚀", "text": "Schöne Grüße,\nÄrger? Nein. 日本語\n"},
    "long lines": {"subject": "A long subject " * 20, "text": LONG_LINE + "\n" + LONG_LINE + "\n"},
    "cc, reply-to and html": {
        "cc": ["Bob <bob@example.org>", "carol@example.org"],
        "reply_to": "Support <help@example.com>",
        "html": "<p>Hello <b>Ann</b> — Grüße</p>",
    },
    "bulk with RFC 8058 headers": {"category": "bulk"},
    "empty-looking body": {"text": "\n\n   \n"},
}


def variant(name: str) -> bytes:
    raw: dict[str, Any] = {
        "from": f"Agent <bot@{DOMAIN}>",
        "to": ["ann@example.net"],
        "subject": "Hello",
        "text": "Hello\n",
        "category": "transactional",
    }
    raw.update(VARIANTS[name])
    bulk = raw["category"] == "bulk"
    headers = (
        list_unsubscribe_headers(token="v1.abc.def", base_url="https://o.example.com/u", mailto_address=None)
        if bulk
        else None
    )
    parsed = EmailSendArgs.model_validate(raw)
    return build_mime(parsed, message_id=f"<m-{len(name)}@{DOMAIN}>", date=datetime.now(UTC), extra_headers=headers)


# A message as another tool writes it: folded headers, tabs, trailing spaces, headers we do not
# sign (Received, X-Mailer), a 1,500-character body line and trailing empty lines.
HAND_WRITTEN = (
    b"Received: from relay.example.net by mx.example.com; Mon, 2 Mar 2026 10:00:00 +0000\r\n"
    b"From: Agent <bot@" + DOMAIN.encode() + b">\r\n"
    b"To: ann@example.net,\r\n\tbob@example.org\r\n"
    b"Subject:   a  folded\r\n   subject\t with  spaces  \r\n"
    b"Date: Mon, 2 Mar 2026 10:00:00 +0000\r\n"
    b"Message-ID: <hand@" + DOMAIN.encode() + b">\r\n"
    b"X-Mailer: something else\r\n"
    b"\r\n"
    b"line with trailing spaces   \r\n\tindented  \t line\r\n" + b"x" * 1500 + b"\r\n\r\n\r\n"
)


def dkimpy_signature(message: bytes, key: DkimKey) -> bytes:
    """What plain dkimpy writes for the same message, key, selector and header list."""
    signature = dkim.sign(
        message,
        b"s1",
        DOMAIN.encode(),
        key.private_key,
        signature_algorithm=key.algorithm.encode(),
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=[h.encode() for h in signed_header_list(message)],
    )
    assert isinstance(signature, bytes)
    return signature


@pytest.mark.parametrize("name", [*VARIANTS, "hand-written"])
@pytest.mark.parametrize("algorithm", ["rsa-sha256", "ed25519-sha256"])
def test_the_signature_is_the_one_dkimpy_writes_and_verifies(
    name: str, algorithm: str, rsa_key: DkimKey, ed25519_key: DkimKey
) -> None:
    key = rsa_key if algorithm == "rsa-sha256" else ed25519_key
    message = HAND_WRITTEN if name == "hand-written" else variant(name)
    expected = dkimpy_signature(message, key)
    # Both signature schemes are deterministic: with dkimpy's t= the bytes must be the same.
    timestamp = re.search(rb"t=(\d+)", expected)
    assert timestamp is not None
    ours = signature_header(message, key=key, selector="s1", domain=DOMAIN, timestamp=int(timestamp[1]))
    assert ours == expected
    signed = sign_message(message, key=key, selector="s1", domain=DOMAIN)
    assert dkim.verify(signed, dnsfunc=key_record_lookup(key, "s1", DOMAIN))
    verify_own_signature(signed, key=key, selector="s1", domain=DOMAIN)


def tampered(signed: bytes, part: str) -> bytes:
    """One byte of the body (base64 of the UTF-8 text), the subject, or the signature changed."""
    head, body = signed.split(b"\r\n\r\n", 1)
    if part == "body":
        return head + b"\r\n\r\n" + (b"V" if body[:1] != b"V" else b"W") + body[1:]
    if part == "subject":
        return signed.replace(b"\r\nSubject: ", b"\r\nSubject: Re: ", 1)
    index = signed.index(b" b=") + 3
    return signed[:index] + (b"A" if signed[index : index + 1] != b"A" else b"B") + signed[index + 1 :]


@pytest.mark.parametrize("algorithm", ["rsa-sha256", "ed25519-sha256"])
@pytest.mark.parametrize("part", ["body", "subject", "signature"])
def test_a_tampered_unicode_message_fails_verification(
    algorithm: str, part: str, rsa_key: DkimKey, ed25519_key: DkimKey
) -> None:
    key = rsa_key if algorithm == "rsa-sha256" else ed25519_key
    signed = sign_message(variant("unicode body and subject"), key=key, selector="s1", domain=DOMAIN)
    changed = tampered(signed, part)
    assert changed != signed
    assert not dkim.verify(changed, dnsfunc=key_record_lookup(key, "s1", DOMAIN))
    with pytest.raises(DkimSelfCheckError):
        verify_own_signature(changed, key=key, selector="s1", domain=DOMAIN)


def test_a_key_file_is_parsed_once_and_read_again_when_replaced(tmp_path: Path, rsa_key: DkimKey) -> None:
    path = tmp_path / "agents.key"
    write_private_key(path, rsa_key)
    config = DkimConfig(selector="s1", algorithm="rsa-sha256", key_file=path)
    first = load_signing_key(config)
    # The same parsed key object comes back: the PEM is not parsed again per message.
    assert all(load_signing_key(config).signer is first.signer for _ in range(5))

    # Replaced in place (as a rotated secret mount is): the next read signs with the new key.
    rotated = parse_private_key(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        "rsa-sha256",
    )
    write_private_key(tmp_path / "agents.key.new", rotated)
    os.replace(tmp_path / "agents.key.new", path)
    current = load_signing_key(config)
    assert current == rotated
    assert current.public_key_b64 != first.public_key_b64
    signed = sign_message(message(), key=current, selector="s1", domain=DOMAIN)
    assert dkim.verify(signed, dnsfunc=key_record_lookup(rotated, "s1", DOMAIN))
    assert not dkim.verify(signed, dnsfunc=key_record_lookup(rsa_key, "s1", DOMAIN))
