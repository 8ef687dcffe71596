"""RFC 8058 tokens: they name the recipient and subdomain, and any change to them is detected."""

from __future__ import annotations

import pytest

from outbox.mail.sending.unsubscribe import (
    InvalidUnsubscribeTokenError,
    UnsubscribeRequest,
    list_unsubscribe_headers,
    sign_unsubscribe_token,
    verify_unsubscribe_token,
)

SECRET = b"s" * 32


def token() -> str:
    return sign_unsubscribe_token(SECRET, recipient="Ann@example.net", subdomain="Agents.Mail.Example.com")


def test_a_token_round_trips_to_its_mailbox_and_subdomain() -> None:
    # The token names the mailbox (its recipient key), whatever spelling the message went to.
    assert verify_unsubscribe_token(SECRET, token()) == UnsubscribeRequest(
        recipient="ann@example.net", subdomain="agents.mail.example.com"
    )


def test_tokens_are_url_safe_and_versioned() -> None:
    value = token()
    assert value.startswith("v1.")
    assert all(c.isalnum() or c in "-_." for c in value)


def _swap_payload(value: str) -> str:
    other = sign_unsubscribe_token(SECRET, recipient="bob@example.net", subdomain="agents.mail.example.com")
    version, _, mac = value.split(".")
    return f"{version}.{other.split('.')[1]}.{mac}"


@pytest.mark.parametrize(
    "tamper",
    [
        _swap_payload,
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),
        lambda t: "v2" + t[2:],
        lambda t: t.rsplit(".", 1)[0],
        lambda t: t + ".extra",
        lambda t: t.replace(".", ".!", 1),
    ],
)
def test_a_changed_token_is_refused(tamper: object) -> None:
    assert callable(tamper)
    with pytest.raises(InvalidUnsubscribeTokenError):
        verify_unsubscribe_token(SECRET, tamper(token()))


def test_a_token_from_another_secret_is_refused() -> None:
    with pytest.raises(InvalidUnsubscribeTokenError, match="signature"):
        verify_unsubscribe_token(b"t" * 32, token())


def test_short_secrets_are_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        sign_unsubscribe_token(b"short", recipient="a@example.net", subdomain="x.example.com")


def test_headers_follow_rfc_8058() -> None:
    value = token()
    headers = list_unsubscribe_headers(
        token=value, base_url="https://outbox.example.com/unsubscribe", mailto_address="unsubscribe@x.example.com"
    )
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https, mailto = headers["List-Unsubscribe"].split(", ")
    assert https == f"<https://outbox.example.com/unsubscribe/{value}>"
    assert mailto == f"<mailto:unsubscribe@x.example.com?subject=unsubscribe%20{value}>"
    without_mailto = list_unsubscribe_headers(token=value, base_url="https://o.example.com/u", mailto_address=None)
    assert without_mailto["List-Unsubscribe"] == f"<https://o.example.com/u/{value}>"
