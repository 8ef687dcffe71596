"""The key that signs audit checkpoints: Ed25519, held outside the database.

The database writer must not be able to forge a checkpoint, so the private key never enters the
database: production reads it from a secret (`OUTBOX_AUDIT_SIGNING_KEY`, or a mounted file named
by `OUTBOX_AUDIT_SIGNING_KEY_FILE`); the embedded default keeps it beside its data, created on
first use with mode 0600 in a 0700 directory.

Keys are named by their RFC 7638 JWK thumbprint (over the RFC 8037 `OKP` form), which anyone
holding the public key can compute with standard tools (docs/audit.md).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from outbox.config import Settings

KEY_FILE = "audit-signing.key"


class SigningKeyError(ValueError):
    """The configured signing key cannot be read or is not an Ed25519 key."""


def b64url(data: bytes) -> str:
    """base64url without padding (RFC 4648 §5), as JOSE writes it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    stripped = text.strip()
    if not stripped or any(c not in _B64URL for c in stripped):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))


_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """RFC 7638 thumbprint: SHA-256 of the canonical JWK {"crv","kty","x"}, base64url."""
    jwk = {"crv": "Ed25519", "kty": "OKP", "x": b64url(raw_public_key(key))}
    return b64url(hashlib.sha256(rfc8785.dumps(jwk)).digest())


def public_key_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def public_key_jwk(key: Ed25519PublicKey) -> dict[str, str]:
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw_public_key(key)), "kid": key_id(key)}


@dataclass(frozen=True)
class CheckpointSigner:
    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)

    def sign(self, message: bytes) -> str:
        return b64url(self.private_key.sign(message))


def verify_signature(key: Ed25519PublicKey, message: bytes, signature: str) -> bool:
    try:
        key.verify(b64url_decode(signature), message)
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True


def parse_private_key(text: str) -> Ed25519PrivateKey:
    """A PEM PKCS#8 Ed25519 key (`openssl genpkey -algorithm ed25519`), or the raw 32-byte seed
    in base64 or base64url (padding optional)."""
    stripped = text.strip()
    if stripped.startswith("-----BEGIN"):
        try:
            loaded = serialization.load_pem_private_key(stripped.encode(), password=None)
        except (ValueError, TypeError) as exc:
            raise SigningKeyError(f"not a readable unencrypted PEM private key: {exc}") from exc
        if not isinstance(loaded, Ed25519PrivateKey):
            raise SigningKeyError(f"the PEM key is {type(loaded).__name__}, not Ed25519")
        return loaded
    try:
        seed = b64url_decode(stripped.replace("+", "-").replace("/", "_").rstrip("="))
    except (ValueError, binascii.Error) as exc:
        raise SigningKeyError("neither PEM nor base64: expected a PEM Ed25519 key or a 32-byte base64 seed") from exc
    if len(seed) != 32:
        raise SigningKeyError(f"an Ed25519 seed is 32 bytes; this one decodes to {len(seed)}")
    return Ed25519PrivateKey.from_private_bytes(seed)


def parse_public_key(text: str) -> Ed25519PublicKey:
    """A PEM public key (SubjectPublicKeyInfo), or a PEM private key whose public half is used."""
    stripped = text.strip()
    if "PRIVATE KEY" in stripped:
        return parse_private_key(stripped).public_key()
    try:
        loaded = serialization.load_pem_public_key(stripped.encode())
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"not a PEM public key: {exc}") from exc
    if not isinstance(loaded, Ed25519PublicKey):
        raise SigningKeyError(f"the PEM key is {type(loaded).__name__}, not Ed25519")
    return loaded


def default_key_file(settings: Settings) -> Path:
    return settings.data_dir / KEY_FILE


def load_signer(settings: Settings, *, create: bool) -> CheckpointSigner | None:
    """The configured signing key. Development without one: the key file in the data directory,
    created when `create` (the checkpointer), else None when it does not exist yet (a verifier
    must not mint a key)."""
    if settings.audit_signing_key is not None:
        return CheckpointSigner(parse_private_key(settings.audit_signing_key.get_secret_value()))
    if settings.audit_signing_key_file is not None:
        try:
            text = settings.audit_signing_key_file.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise SigningKeyError(f"cannot read OUTBOX_AUDIT_SIGNING_KEY_FILE: {exc}") from exc
        return CheckpointSigner(parse_private_key(text))
    if settings.environment == "production":
        raise SigningKeyError("production needs OUTBOX_AUDIT_SIGNING_KEY or OUTBOX_AUDIT_SIGNING_KEY_FILE")
    path = default_key_file(settings)
    if not path.exists():
        if not create:
            return None
        _create_key_file(path)
    return CheckpointSigner(parse_private_key(path.read_text(encoding="ascii")))


def _create_key_file(path: Path) -> None:
    """Written to a private draft, then hard-linked into place: two processes starting together
    agree on one key, and nobody reads a half-written file."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        with contextlib.suppress(FileExistsError):
            os.link(draft, path)
    finally:
        draft.unlink()
