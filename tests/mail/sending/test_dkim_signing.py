"""DKIM keys and signatures (RFC 6376, RFC 8463), checked with dkimpy's own verifier."""

from __future__ import annotations

import base64
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

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
