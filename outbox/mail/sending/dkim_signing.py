"""DKIM keys, signing and self-verification (RFC 6376, RFC 8463 for Ed25519).

Each sending subdomain has its own selector and key, so a subdomain that misbehaves can be cut off
(its key record removed) without touching the mail of any other system. Every message is verified
against our own key record before it leaves: a signature that does not verify here would not
verify at the receiver either, and an unsigned-looking message from our domain is worse than none.

Signing is dkimpy's algorithm with one part swapped. `dkim.sign` re-parses the PEM key and runs
RSA in pure Python on every message (about 10 ms of a 12 ms sign); here the key is parsed once
into a `cryptography` key object and only the private-key operation runs there (well under a
millisecond). Header selection, canonicalisation and folding are dkimpy's own functions, so the
DKIM-Signature is byte for byte the one `dkim.sign` writes (a test holds us to that), and the
self-verification is still dkimpy's verifier.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import dkim  # dkimpy ships no type information (see the mypy overrides in pyproject.toml)
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim.canonicalization import CanonicalizationPolicy

from outbox.mail.config import DkimConfig

Algorithm = Literal["rsa-sha256", "ed25519-sha256"]
PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

# RFC 8301 §3.2: verifiers reject RSA keys under 1024 bits; we generate 2048 as it recommends.
MIN_RSA_BITS = 1024
RSA_BITS = 2048

# The headers we sign when present. dkimpy's default list leaves out List-Unsubscribe and
# List-Unsubscribe-Post, which RFC 8058 §4 requires to be signed for one-click unsubscribe.
SIGNED_HEADERS: tuple[str, ...] = (
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
)
# Listed once more than they occur ("oversigning", RFC 6376 §8.15): a header of that name added
# in transit, or an absent one added later (a second From, a Reply-To), breaks the signature.
OVERSIGNED_HEADERS: tuple[str, ...] = (
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
)


class DkimKeyError(ValueError):
    """A private key that cannot be used for the configured algorithm."""


class DkimSelfCheckError(RuntimeError):
    """Our own signature did not verify against our own key record: refuse to send."""


@dataclass(frozen=True, slots=True)
class DkimKey:
    """A private key in the form dkimpy takes, the public half as published in DNS, and the
    parsed key that signs (parsed once, when the key is read)."""

    algorithm: Algorithm
    # PEM for RSA; the base64 32-byte seed for Ed25519 (RFC 8463 §4).
    private_key: bytes = field(repr=False)
    # The p= value of the key record: base64 DER SubjectPublicKeyInfo (RSA) or raw key (Ed25519).
    public_key_b64: str
    # Determined by private_key, so equality and hashing leave it out.
    signer: PrivateKey = field(repr=False, compare=False)

    def txt_record(self) -> str:
        """The TXT record value for `<selector>._domainkey.<domain>` (RFC 6376 §3.6.1)."""
        k = "rsa" if self.algorithm == "rsa-sha256" else "ed25519"
        return f"v=DKIM1; k={k}; p={self.public_key_b64}"


def dkim_record_name(selector: str, domain: str) -> str:
    return f"{selector}._domainkey.{domain}"


def _rsa_key(private: rsa.RSAPrivateKey) -> DkimKey:
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    spki = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return DkimKey("rsa-sha256", pem, base64.b64encode(spki).decode("ascii"), private)


def _ed25519_key(private: ed25519.Ed25519PrivateKey) -> DkimKey:
    seed = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return DkimKey("ed25519-sha256", base64.b64encode(seed), base64.b64encode(public).decode("ascii"), private)


def generate_key(algorithm: Algorithm) -> DkimKey:
    """A fresh key: RSA-2048 or Ed25519."""
    if algorithm == "rsa-sha256":
        return _rsa_key(rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS))
    return _ed25519_key(ed25519.Ed25519PrivateKey.generate())


def parse_private_key(data: bytes, algorithm: Algorithm) -> DkimKey:
    """Read a private key: PEM (PKCS#1 or PKCS#8) for either algorithm, or dkimpy's base64 seed
    for Ed25519. Escaped newlines (`\\n`, as environment variables often carry PEM) are accepted.
    """
    text = data.strip()
    if b"-----BEGIN" in text and b"\n" not in text:
        text = text.replace(b"\\n", b"\n")
    if text.startswith(b"-----BEGIN"):
        try:
            private = serialization.load_pem_private_key(text, password=None)
        except (ValueError, TypeError) as exc:
            raise DkimKeyError(f"unreadable PEM private key: {exc}") from None
        if algorithm == "rsa-sha256" and isinstance(private, rsa.RSAPrivateKey):
            if private.key_size < MIN_RSA_BITS:
                raise DkimKeyError(f"RSA key of {private.key_size} bits; RFC 8301 needs 1024+")
            return _rsa_key(private)
        if algorithm == "ed25519-sha256" and isinstance(private, ed25519.Ed25519PrivateKey):
            return _ed25519_key(private)
        raise DkimKeyError(f"the key is a {type(private).__name__}, not a key for {algorithm}")
    if algorithm == "ed25519-sha256":
        try:
            seed = base64.b64decode(text, validate=True)
        except ValueError:
            raise DkimKeyError("an Ed25519 key is PEM or a base64 32-byte seed") from None
        if len(seed) != 32:
            raise DkimKeyError("an Ed25519 seed is 32 bytes")
        return _ed25519_key(ed25519.Ed25519PrivateKey.from_private_bytes(seed))
    raise DkimKeyError("an RSA key must be PEM")


# Keyed by the key's text, so a key is parsed once however often it is read, and a key file
# replaced in place (a rotated secret mount) is picked up on the next read without any mtime
# granularity to get wrong. Parsing raises for bad keys, and lru_cache keeps no exceptions.
_parse_once = functools.lru_cache(maxsize=32)(parse_private_key)


def load_signing_key(config: DkimConfig, base_dir: Path | None = None) -> DkimKey:
    """Read the key a subdomain refers to, from its file or environment variable.

    Relative `key_file` paths resolve against `base_dir` (the working directory by default).
    Reading is cheap enough to do per message; parsing happens once per distinct key.
    """
    if config.key_env is not None:
        value = os.environ.get(config.key_env)
        if not value:
            raise DkimKeyError(f"environment variable {config.key_env} is not set")
        return _parse_once(value.encode(), config.algorithm)
    assert config.key_file is not None  # DkimConfig guarantees exactly one reference
    path = config.key_file if base_dir is None else base_dir / config.key_file
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DkimKeyError(f"cannot read key file {path}: {exc.strerror}") from None
    return _parse_once(data, config.algorithm)


def private_key_text(key: DkimKey) -> str:
    """What to store in a key file or environment variable."""
    return key.private_key.decode("ascii")


def write_private_key(path: Path, key: DkimKey) -> None:
    """Write a new key file readable by its owner only; never overwrite an existing key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(private_key_text(key) + "\n")


def _header_names(message: bytes) -> list[str]:
    """The lowercase names of the top-level header fields, in order."""
    head = message.split(b"\r\n\r\n", 1)[0]
    names: list[str] = []
    for line in head.split(b"\r\n"):
        if line and line[:1] not in (b" ", b"\t") and b":" in line:
            names.append(line.split(b":", 1)[0].strip().decode("ascii").lower())
    return names


def signed_header_list(message: bytes) -> list[str]:
    """The h= list for `message`: present headers from SIGNED_HEADERS, then the oversigned ones."""
    present = _header_names(message)
    listed = [h.lower() for h in SIGNED_HEADERS for _ in range(present.count(h.lower()))]
    return listed + [h.lower() for h in OVERSIGNED_HEADERS]


_RELAXED = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
_SIGNATURE_HEADER = b"DKIM-Signature"


def _private_key_signature(key: DkimKey, digest: bytes) -> bytes:
    """The b= value's bytes for the SHA-256 of the signed headers.

    RSA: RSASSA-PKCS1-v1_5 over the digest (RFC 6376 §3.3.1); Ed25519 signs the digest itself as
    its message (RFC 8463 §3). Both are deterministic, so these are dkimpy's bytes exactly.
    """
    if isinstance(key.signer, rsa.RSAPrivateKey):
        return key.signer.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    return key.signer.sign(digest)


def _joined(fields: list[tuple[bytes, bytes]]) -> bytes:
    return b"; ".join(b"=".join(tag) for tag in fields)


def signature_header(
    message: bytes, *, key: DkimKey, selector: str, domain: str, timestamp: int | None = None
) -> bytes:
    """The DKIM-Signature field (relaxed/relaxed, RFC 6376 §3.4) that `dkim.sign` would write.

    The steps and tag order are dkimpy's `DKIM.sign` and `DKIM.gen_header`: hash the
    canonical body, fold the tags with a placeholder b= so b= starts its own line, hash the
    signed headers and the field with b= empty, sign, fold again with the signature.
    """
    # Always names From (it is oversigned), which dkimpy's sign insists on.
    include = tuple(h.encode("ascii") for h in signed_header_list(message))
    headers, body = dkim.rfc822_parse(message)
    body_hash = base64.b64encode(hashlib.sha256(_RELAXED.canonicalize_body(body)).digest())
    domain_bytes = domain.encode("ascii")
    fields = [
        (b"v", b"1"),
        (b"a", key.algorithm.encode("ascii")),
        (b"c", _RELAXED.to_c_value()),
        (b"d", domain_bytes),
        (b"i", b"@" + domain_bytes),
        (b"q", b"dns/txt"),
        (b"s", selector.encode("ascii")),
        (b"t", str(int(time.time()) if timestamp is None else timestamp).encode("ascii")),
        (b"h", b" : ".join(include)),
        (b"bh", body_hash),
        (b"b", b"0" * 60),
    ]
    unsigned = dkim.fold(_joined(fields), namelen=len(_SIGNATURE_HEADER), linesep=b"\r\n")
    unsigned = dkim.RE_BTAG.sub(b"\\1", unsigned)
    hasher = hashlib.sha256()
    canonical = _RELAXED.canonicalize_headers(headers)
    dkim.hash_headers(hasher, _RELAXED, canonical, include, (_SIGNATURE_HEADER, b" " + unsigned), dict(fields))
    fields[-1] = (b"b", base64.b64encode(_private_key_signature(key, hasher.digest())))
    value: bytes = dkim.fold(_joined(fields) + b"\r\n", namelen=len(_SIGNATURE_HEADER), linesep=b"\r\n")
    return _SIGNATURE_HEADER + b": " + value


def sign_message(message: bytes, *, key: DkimKey, selector: str, domain: str) -> bytes:
    """Prepend a DKIM-Signature (relaxed/relaxed canonicalisation, RFC 6376 §3.4)."""
    return signature_header(message, key=key, selector=selector, domain=domain) + message


def key_record_lookup(key: DkimKey, selector: str, domain: str) -> Callable[..., bytes | None]:
    """A dkimpy `dnsfunc` that answers with our own key record and nothing else."""
    expected = (dkim_record_name(selector, domain) + ".").lower().encode("ascii")
    record = key.txt_record().encode("ascii")

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        return record if name.lower() == expected else None

    return lookup


def verify_own_signature(signed: bytes, *, key: DkimKey, selector: str, domain: str) -> None:
    """Verify the top signature against the key record we publish; raise if it fails."""
    verifier = dkim.DKIM(signed, minkey=MIN_RSA_BITS)
    try:
        ok = verifier.verify(dnsfunc=key_record_lookup(key, selector, domain))
    except dkim.DKIMException as exc:
        raise DkimSelfCheckError(f"DKIM self-verification failed: {exc}") from None
    if not ok:
        raise DkimSelfCheckError("DKIM self-verification failed: signature does not verify")
