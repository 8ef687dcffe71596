"""Profiles sharing the host network never reach this host's services, the outbox's own first.

Run for real: bubblewrap, the nftables rules the sandbox installs, and listening sockets on this
machine standing in for the outbox's API and SMTP sink (on their configured ports when free).
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from outbox.commands import SandboxConfigurationError, SandboxSettings, SandboxUnavailable, check_isolation
from outbox.commands.provider import sandbox_settings
from outbox.config import Settings
from tests.commands.test_sandbox import python

pytestmark = pytest.mark.usefixtures("require_host_fence")

CONNECT_TCP = """
import socket
try:
    socket.create_connection(({host!r}, {port}), timeout=3).close()
    print("connected")
except OSError as error:
    print("blocked", type(error).__name__)
"""

SEND_UDP = """
import socket
family = socket.AF_INET6 if ":" in {host!r} else socket.AF_INET
with socket.socket(family, socket.SOCK_DGRAM) as sender:
    try:
        sender.sendto(b"from the sandbox", ({host!r}, {port}))
        print("sent")
    except OSError as error:
        print("blocked", type(error).__name__)
"""


def host_addresses() -> list[str]:
    """This machine's own non-loopback addresses (traffic to them never leaves the host)."""
    output = subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=True).stdout
    return [address for address in output.split() if not address.startswith("fe80")]


@pytest.fixture
def listener() -> Iterator[tuple[str, int]]:
    """A TCP service on every IPv4 and IPv6 address of this host, on a free port."""
    with socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True) as server:
        server.listen(16)
        yield "::", server.getsockname()[1]


def listen_on(port: int) -> socket.socket | None:
    """Listen on `port` (all addresses); None when something already does."""
    try:
        return socket.create_server(("::", port), family=socket.AF_INET6, dualstack_ipv6=True)
    except OSError:
        return None


def reachable_from_the_host(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError:
        return False
    return True


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "::ffff:127.0.0.1"])
def test_a_network_profile_cannot_reach_a_loopback_service_by_any_loopback_name(
    settings: SandboxSettings, listener: tuple[str, int], host: str
) -> None:
    _, port = listener
    assert reachable_from_the_host(host, port)

    result = python(CONNECT_TCP.format(host=host, port=port), settings, profile="network")

    assert result.stdout.strip() == "blocked ConnectionRefusedError"


def test_a_network_profile_cannot_reach_a_service_on_the_host_s_own_addresses(
    settings: SandboxSettings, listener: tuple[str, int]
) -> None:
    _, port = listener
    addresses = host_addresses()
    assert addresses, "the machine has no non-loopback address to try"
    for address in addresses:
        assert reachable_from_the_host(address, port), address

        result = python(CONNECT_TCP.format(host=address, port=port), settings, profile="network")

        assert result.stdout.strip() == "blocked ConnectionRefusedError", address


@pytest.mark.parametrize("port_of", ["api", "mail_sink"])
def test_a_network_profile_cannot_reach_the_outbox_s_own_ports(settings: SandboxSettings, port_of: str) -> None:
    port = Settings().api_port if port_of == "api" else Settings().mail_sink_port
    server = listen_on(port)  # the real port; if another process already serves it, that one
    try:
        assert reachable_from_the_host("127.0.0.1", port)

        result = python(CONNECT_TCP.format(host="127.0.0.1", port=port), settings, profile="network")

        assert result.stdout.strip() == "blocked ConnectionRefusedError"
    finally:
        if server is not None:
            server.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_udp_datagrams_to_local_services_are_refused(settings: SandboxSettings, host: str) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as receiver:
        receiver.bind((host, 0))
        receiver.settimeout(1)
        port = receiver.getsockname()[1]

        result = python(SEND_UDP.format(host=host, port=port), settings, profile="network")

        with pytest.raises(TimeoutError):
            receiver.recvfrom(1024)
    assert result.stdout.strip() in {"sent", "blocked ConnectionRefusedError", "blocked PermissionError"}


def test_a_port_the_deployment_allows_stays_reachable_and_only_that_one(
    settings: SandboxSettings, listener: tuple[str, int]
) -> None:
    _, allowed_port = listener
    with socket.create_server(("127.0.0.1", 0)) as other:
        other_port = other.getsockname()[1]
        allowing = settings.model_copy(update={"network_allowed_local_ports": (allowed_port,)})

        allowed = python(CONNECT_TCP.format(host="127.0.0.1", port=allowed_port), allowing, profile="network")
        refused = python(CONNECT_TCP.format(host="127.0.0.1", port=other_port), allowing, profile="network")

    assert allowed.stdout.strip() == "connected"
    assert refused.stdout.strip() == "blocked ConnectionRefusedError"


def test_profiles_without_network_are_untouched_by_the_fence(settings: SandboxSettings) -> None:
    result = python(CONNECT_TCP.format(host="127.0.0.1", port=Settings().api_port), settings, profile="default")

    assert "network:shared" not in result.isolation
    assert "host-services:blocked" not in result.isolation
    assert "network-namespace" in result.isolation


@pytest.mark.parametrize(
    ("nft", "reason"),
    [
        ("/nonexistent/nft", "nft (nftables) is not installed or not executable"),
        ("/usr/bin/false", "nft refused the rules"),
    ],
)
def test_without_the_fence_a_network_profile_runs_nothing(
    settings: SandboxSettings, shared_dir: Path, nft: str, reason: str
) -> None:
    unfenced = settings.model_copy(update={"nft_path": Path(nft)})
    canary = shared_dir / "ran"

    with pytest.raises(SandboxUnavailable, match="could not be installed") as refused:
        python(f"open({str(canary)!r}, 'w')", unfenced, profile="network")

    assert reason in str(refused.value)
    assert not canary.exists()


def test_the_sandbox_check_reports_network_profiles_unavailable_without_the_fence(settings: SandboxSettings) -> None:
    report = check_isolation(settings.model_copy(update={"nft_path": Path("/nonexistent/nft")}))

    (fence,) = [row for row in report.rows() if row[0] == "host services fenced (network profiles)"]
    assert fence[1] == "FAILED"
    assert "nft (nftables) is not installed" in fence[2]
    assert "network" in report.unavailable_profiles
    assert "not fenced off" in report.unavailable_profiles["network"]
    assert report.sandbox_available  # profiles without network still run


@pytest.mark.parametrize(
    ("changes", "port"),
    [
        ({}, Settings().api_port),
        ({}, 2525),
        ({"mail_sink_port": 2600}, 2600),
        ({"database_url": "postgresql://outbox@127.0.0.1/outbox"}, 5432),
        ({"database_url": "postgresql://outbox@127.0.0.1:5433/outbox"}, 5433),
        ({"broker_url": "redis://127.0.0.1:6379/0"}, 6379),
    ],
)
def test_the_outbox_s_own_ports_cannot_be_allowed(changes: dict[str, object], port: int) -> None:
    settings = Settings.model_validate({**changes, "sandbox_network_allowed_local_ports": [53, port]})

    with pytest.raises(SandboxConfigurationError, match=f"includes {port}, a port the outbox itself listens on"):
        sandbox_settings(settings)


LISTEN = """
import socket
server = socket.create_server(("127.0.0.1", {port}))
server.settimeout(3)
try:
    server.accept()
    print("accepted")
except TimeoutError:
    print("no one came through")
"""


def impostor_reached(settings: SandboxSettings, port: int) -> tuple[bool, str]:
    """A sandboxed command listens on `port`; does a host client get through to it?"""
    outcome: dict[str, str] = {}
    runner = threading.Thread(
        target=lambda: outcome.update(out=python(LISTEN.format(port=port), settings, profile="network").stdout)
    )
    runner.start()
    reached = False
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and not reached:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            reached = True
        except OSError:
            time.sleep(0.1)
    runner.join()
    return reached, outcome.get("out", "").strip()


def test_a_command_squatting_on_one_of_the_outbox_s_ports_answers_nobody(settings: SandboxSettings) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # free once closed: stands in for a stopped SMTP sink
    reserved = settings.model_copy(update={"network_reserved_ports": (port,)})

    reached, inside = impostor_reached(reserved, port)

    assert not reached
    assert inside == "no one came through"


def test_a_command_may_listen_on_other_ports(settings: SandboxSettings) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]

    reached, inside = impostor_reached(settings, port)

    assert reached
    assert inside == "accepted"
