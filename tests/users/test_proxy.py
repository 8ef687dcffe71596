"""Sign-in through an authenticating proxy: the identity header counts only when the TCP peer is
a configured proxy and names a known, enabled user; from anyone else it is refused, logged and
audited."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlmodel import select
from structlog.testing import capture_logs

from outbox.runtime import Runtime
from outbox.users.errors import ConsoleMisconfigured, ProxyIdentityRefused
from outbox.users.models import ConsoleSession
from outbox.users.service import disable_user, is_trusted_proxy, session_user, sign_in_from_proxy
from tests.support.dispatchers import RecordingDispatcher
from tests.users.conftest import add_person, audit_events


@pytest.fixture
def behind_proxy(make_runtime: Callable[..., Runtime]) -> Runtime:
    return make_runtime(RecordingDispatcher(), console_trusted_proxies=["127.0.0.1", "10.0.1.0/24"])


def _sessions(runtime: Runtime) -> int:
    with runtime.db.read_session() as session:
        return len(session.exec(select(ConsoleSession)).all())


def test_a_trusted_proxy_signs_in_a_known_user(behind_proxy: Runtime) -> None:
    add_person(behind_proxy, "ada@example.com", password=None)

    signed_in = sign_in_from_proxy(behind_proxy, "Ada@Example.com", "127.0.0.1")

    assert signed_in.user.identity == "user:ada@example.com"
    assert signed_in.user.via == "proxy"
    assert session_user(behind_proxy, signed_in.session_token) == signed_in.user
    (event,) = audit_events(behind_proxy, "console.signed_in")
    assert (event["actor"], event["data"]["via"], event["data"]["client_ip"]) == (
        "user:ada@example.com",
        "proxy",
        "127.0.0.1",
    )


@pytest.mark.parametrize("peer", ["10.0.1.77", "::ffff:10.0.1.5", "10.0.1.0"])
def test_a_peer_inside_a_trusted_network_is_trusted(behind_proxy: Runtime, peer: str) -> None:
    add_person(behind_proxy, "ada@example.com", password=None)

    assert sign_in_from_proxy(behind_proxy, "ada@example.com", peer).user.email == "ada@example.com"


@pytest.mark.parametrize("peer", ["10.0.2.1", "127.0.0.2", "192.0.2.7", "::1", "not-an-address", "", None])
def test_the_header_from_any_other_peer_is_refused_logged_and_audited(behind_proxy: Runtime, peer: str | None) -> None:
    add_person(behind_proxy, "ada@example.com")

    with capture_logs() as logs, pytest.raises(ProxyIdentityRefused) as refused:
        sign_in_from_proxy(behind_proxy, "ada@example.com", peer)

    assert refused.value.reason == "untrusted_proxy"
    assert "not a trusted proxy" in refused.value.detail
    assert "X-Forwarded-Email" in refused.value.detail
    assert _sessions(behind_proxy) == 0
    assert [entry["event"] for entry in logs if entry["log_level"] == "warning"] == ["console.proxy_identity_refused"]
    (event,) = audit_events(behind_proxy, "console.")
    assert (event["event_type"], event["actor"], event["data"]["reason"], event["data"]["via"]) == (
        "console.sign_in_failed",
        "anonymous",
        "untrusted_proxy",
        "proxy",
    )


def test_without_configured_proxies_the_header_is_never_trusted(runtime: Runtime) -> None:
    assert runtime.settings.console_trusted_proxies == []
    add_person(runtime, "ada@example.com")

    with pytest.raises(ProxyIdentityRefused) as refused:
        sign_in_from_proxy(runtime, "ada@example.com", "127.0.0.1")

    assert refused.value.reason == "untrusted_proxy"
    assert not is_trusted_proxy(runtime.settings, "127.0.0.1")


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("nobody@example.com", "unknown_user"),
        ("disabled@example.com", "disabled"),
        (None, "no_identity"),
        ("", "no_identity"),
        ("Ada <ada@example.com>", "invalid_identity"),
        ("slack:U0123ABC", "invalid_identity"),
    ],
)
def test_a_trusted_proxy_naming_no_enabled_user_is_refused(
    behind_proxy: Runtime, header: str | None, reason: str
) -> None:
    add_person(behind_proxy, "ada@example.com")
    add_person(behind_proxy, "disabled@example.com")
    disable_user(behind_proxy.db, "disabled@example.com", actor="test")

    with pytest.raises(ProxyIdentityRefused) as refused:
        sign_in_from_proxy(behind_proxy, header, "127.0.0.1")

    assert refused.value.reason == reason
    assert _sessions(behind_proxy) == 0
    (event,) = audit_events(behind_proxy, "console.sign_in_failed")
    assert event["data"]["reason"] == reason


def test_a_proxy_entry_that_is_not_an_address_is_a_configuration_error(make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime(RecordingDispatcher(), console_trusted_proxies=["proxy.internal"])

    with pytest.raises(ConsoleMisconfigured, match=r"proxy\.internal"):
        sign_in_from_proxy(runtime, "ada@example.com", "127.0.0.1")


def test_a_custom_identity_header_is_named_in_refusals(make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime(RecordingDispatcher(), console_identity_header="X-Pomerium-Claim-Email")

    with pytest.raises(ProxyIdentityRefused, match="X-Pomerium-Claim-Email"):
        sign_in_from_proxy(runtime, "ada@example.com", "192.0.2.7")
