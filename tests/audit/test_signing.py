"""The signing key lives outside the database, production insists on one, and a third party can
check checkpoints and event hashes with standard tools only (the recipe in docs/audit.md)."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr
from sqlmodel import col, select

from outbox.audit.checkpointer import checkpoint_file
from outbox.audit.models import AuditEvent
from outbox.audit.service import record_event
from outbox.audit.signing import SigningKeyError, load_signer, parse_private_key, public_key_pem
from outbox.config import Settings, UnsafeConfigurationError
from outbox.runtime import Runtime
from tests.support.audit import checkpointer, make_events

SAFE_PRODUCTION = {
    "environment": "production",
    "admin_token": SecretStr("x" * 32),
    "database_url": "postgresql://db/outbox",
    "broker_url": "redis://redis:6379/0",
}


def _settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(_env_file=None, policy_dir=tmp_path, data_dir=tmp_path / "data", **values)  # type: ignore[call-arg, arg-type]


def test_production_refuses_to_start_without_a_configured_signing_key(tmp_path: Path) -> None:
    with pytest.raises(UnsafeConfigurationError, match="OUTBOX_AUDIT_SIGNING_KEY"):
        _settings(tmp_path, **SAFE_PRODUCTION).check_production_safety()
    with pytest.raises(SigningKeyError, match="production needs"):
        load_signer(_settings(tmp_path, **SAFE_PRODUCTION), create=True)
    assert not (tmp_path / "data" / "audit-signing.key").exists()  # never minted beside the data
    _settings(tmp_path, audit_signing_key=SecretStr("k" * 43), **SAFE_PRODUCTION).check_production_safety()
    _settings(tmp_path, audit_signing_key_file=tmp_path / "mounted.key", **SAFE_PRODUCTION).check_production_safety()


def test_production_refuses_a_log_sink_its_log_level_would_drop(tmp_path: Path) -> None:
    quiet = _settings(tmp_path, audit_signing_key=SecretStr("k" * 43), log_level="WARNING", **SAFE_PRODUCTION)
    with pytest.raises(UnsafeConfigurationError, match=r"drops the audit\.checkpoint lines"):
        quiet.check_production_safety()
    quiet.model_copy(update={"audit_checkpoint_sinks": ["file"]}).check_production_safety()
    with pytest.raises(UnsafeConfigurationError, match="kept nowhere"):
        quiet.model_copy(update={"audit_checkpoint_sinks": []}).check_production_safety()


def test_sinks_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OUTBOX_AUDIT_CHECKPOINT_SINKS", '["log"]')
    assert _settings(tmp_path).audit_checkpoint_sinks == ["log"]
    monkeypatch.setenv("OUTBOX_AUDIT_CHECKPOINT_SINKS", '["syslog"]')
    with pytest.raises(ValueError, match="file"):
        _settings(tmp_path)


def _pem(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def test_a_key_is_read_from_a_variable_or_a_mounted_file_in_every_documented_form(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    expected = load_signer(_settings(tmp_path, audit_signing_key=SecretStr(_pem(key))), create=False)
    assert expected is not None
    forms = [
        base64.b64encode(seed).decode(),
        base64.urlsafe_b64encode(seed).decode().rstrip("="),
        "  " + base64.b64encode(seed).decode() + "\n",
    ]
    for form in forms:
        signer = load_signer(_settings(tmp_path, audit_signing_key=SecretStr(form)), create=False)
        assert signer is not None and signer.key_id == expected.key_id
    mounted = tmp_path / "secret" / "audit.key"
    mounted.parent.mkdir()
    mounted.write_text(_pem(key))
    from_file = load_signer(_settings(tmp_path, audit_signing_key_file=mounted), create=False)
    assert from_file is not None and from_file.key_id == expected.key_id


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("c2hvcnQ", "32 bytes"),
        (base64.b64encode(b"x" * 64).decode(), "32 bytes"),
        ("not a key at all!", "neither PEM nor base64"),
        ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----", "PEM"),
        (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
            .decode(),
            "not Ed25519",
        ),
        (
            Ed25519PrivateKey.generate()
            .private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"pw"),
            )
            .decode(),
            "unencrypted",
        ),
    ],
    ids=["short", "long", "garbage", "bad-pem", "rsa", "encrypted"],
)
def test_an_unusable_key_is_refused_saying_why(text: str, message: str) -> None:
    with pytest.raises(SigningKeyError, match=message):
        parse_private_key(text)


def test_a_missing_key_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError, match="cannot read OUTBOX_AUDIT_SIGNING_KEY_FILE"):
        load_signer(_settings(tmp_path, audit_signing_key_file=tmp_path / "absent.key"), create=True)


def test_development_mints_one_private_key_on_first_use_and_a_verifier_never_does(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert load_signer(settings, create=False) is None
    assert not (tmp_path / "data").exists()
    signer = load_signer(settings, create=True)
    assert signer is not None
    key_file = tmp_path / "data" / "audit-signing.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "data").stat().st_mode & 0o777 == 0o700
    assert key_file.read_text().startswith("-----BEGIN PRIVATE KEY-----")  # what openssl genpkey writes
    again = load_signer(settings, create=False)
    assert again is not None and again.key_id == signer.key_id


def test_the_documented_recipe_verifies_checkpoints_and_events_with_standard_tools(
    runtime: Runtime, tmp_path: Path
) -> None:
    """docs/audit.md, followed literally: Python's standard library and openssl, none of our code."""
    make_events(runtime, 3)
    with runtime.db.session() as session:
        record_event(session, event_type="test.unicode", actor="tëst", data={"text": "é ✓", "x": [1.5, None, True]})
    writer = checkpointer(runtime)
    writer.checkpoint_once()
    make_events(runtime, 2)
    writer.checkpoint_once()
    signer = load_signer(runtime.settings, create=False)
    assert signer is not None

    public_pem = tmp_path / "audit.pub"
    public_pem.write_text(public_key_pem(signer.public_key))

    previous_digest = "0" * 64
    records = [json.loads(line) for line in checkpoint_file(runtime.settings).read_text().splitlines()]
    for record in records:
        body = json.dumps(record["checkpoint"], sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        (tmp_path / "body").write_bytes(body)
        signature = record["signature"]
        (tmp_path / "sig").write_bytes(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
        verified = subprocess.run(
            [
                *("openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(public_pem), "-rawin"),
                *("-in", str(tmp_path / "body"), "-sigfile", str(tmp_path / "sig")),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert record["checkpoint"]["prev"] == previous_digest
        previous_digest = hashlib.sha256(body).hexdigest()

    # The key id: RFC 7638 thumbprint of the JWK, from the PEM with openssl's DER output.
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-in", str(public_pem), "-outform", "DER"], capture_output=True, check=True
    ).stdout
    x = base64.urlsafe_b64encode(der[-32:]).decode().rstrip("=")
    thumbprint = hashlib.sha256(json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":")).encode())
    assert base64.urlsafe_b64encode(thumbprint.digest()).decode().rstrip("=") == records[-1]["checkpoint"]["key_id"]

    # Event hashes, recomputed from the stored columns.
    with runtime.db.session() as session:
        sealed = select(AuditEvent).where(col(AuditEvent.seq).is_not(None))
        rows = session.exec(sealed.order_by(col(AuditEvent.seq))).all()
    prev = "0" * 64
    for position, row in enumerate(rows, start=1):
        header = json.dumps(
            {
                "action_id": row.action_id,
                "event_type": row.event_type,
                "actor": row.actor,
                "from_status": row.from_status,
                "to_status": row.to_status,
                "created_at": row.created_at.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00"),
            },
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        assert row.prev_hash == prev
        assert hashlib.sha256(f"{prev}\n{header}\n{row.data_json}".encode()).hexdigest() == row.hash
        prev = row.hash
        if position == records[-1]["checkpoint"]["event_count"]:
            assert (row.id, row.hash) == (
                records[-1]["checkpoint"]["last_event_id"],
                records[-1]["checkpoint"]["last_hash"],
            )
    assert len(rows) == records[-1]["checkpoint"]["event_count"] == 6
