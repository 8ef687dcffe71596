"""RFC 8058 one-click unsubscribe: signed tokens and the two headers that carry them.

A token names a recipient and the subdomain that mailed them, and is signed with a server secret
(HMAC-SHA256), so `POST /unsubscribe/{token}` can suppress exactly that pair without a login and
without a database lookup to find out whom the link belonged to. Tokens do not expire: RFC 8058
links must keep working for as long as the message sits in a mailbox. The leading version tag lets
the format (or the secret) change later while old links are still recognised.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import quote

from outbox.mail.addresses import RecipientAddressError, recipient_key

TOKEN_VERSION = "v1"  # noqa: S105 - a format version, not a secret
MIN_SECRET_BYTES = 32


class InvalidUnsubscribeTokenError(ValueError):
    """The token was not issued by this server (tampered, truncated, or another secret)."""


@dataclass(frozen=True, slots=True)
class UnsubscribeRequest:
    """Who asked to stop receiving mail (a recipient key: the mailbox, whatever spelling the
    message was sent to), and from which subdomain."""

    recipient: str
    subdomain: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _check_secret(secret: bytes) -> None:
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"the unsubscribe secret needs at least {MIN_SECRET_BYTES} bytes")


def _mac(secret: bytes, version: str, payload: str) -> bytes:
    return hmac.new(secret, f"{version}.{payload}".encode("ascii"), hashlib.sha256).digest()


def sign_unsubscribe_token(secret: bytes, *, recipient: str, subdomain: str) -> str:
    """A URL-safe token `v1.<payload>.<mac>` for one mailbox (the recipient's key) of one subdomain."""
    _check_secret(secret)
    if "\n" in subdomain:
        raise ValueError("the subdomain cannot contain a newline")
    payload = _b64(f"{subdomain.lower()}\n{recipient_key(recipient)}".encode())
    return f"{TOKEN_VERSION}.{payload}.{_b64(_mac(secret, TOKEN_VERSION, payload))}"


def verify_unsubscribe_token(secret: bytes, token: str) -> UnsubscribeRequest:
    """Check the signature (in constant time) and return what the token names."""
    _check_secret(secret)
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != TOKEN_VERSION:
        raise InvalidUnsubscribeTokenError("unknown token format")
    version, payload, mac = parts
    try:
        given = _unb64(mac)
        decoded = _unb64(payload).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise InvalidUnsubscribeTokenError("token is not valid base64url") from None
    if not hmac.compare_digest(given, _mac(secret, version, payload)):
        raise InvalidUnsubscribeTokenError("signature does not match")
    subdomain, _, recipient = decoded.partition("\n")
    try:
        # Tokens issued before recipients were keyed name the address as written.
        key = recipient_key(recipient)
    except RecipientAddressError:
        raise InvalidUnsubscribeTokenError("the token names no address") from None
    return UnsubscribeRequest(recipient=key, subdomain=subdomain)


def list_unsubscribe_headers(*, token: str, base_url: str, mailto_address: str | None) -> dict[str, str]:
    """The RFC 8058 §3.1 header pair: an HTTPS URI (and optionally a mailto) plus the POST marker.

    Both headers must be covered by the DKIM signature (RFC 8058 §4), which `dkim_signing` does.
    """
    uris = [f"<{base_url}/{token}>"]
    if mailto_address is not None:
        uris.append(f"<mailto:{mailto_address}?subject={quote('unsubscribe ' + token)}>")
    return {
        "List-Unsubscribe": ", ".join(uris),
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
