"""Egress from a real bubblewrap sandbox: the proxy is the only way out, and every attempt shows.

The tools here are curl and the system Python, run as a sandboxed command would be, with the
proxy's variables (HTTPS_PROXY, ALL_PROXY) the profile sets. Servers listen on the host's
loopback; names resolve only through the test's own DNS server.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator, Sequence

import pytest

from outbox.commands.egress import AllowedDestination
from outbox.commands.sandbox import SandboxResult, SandboxSettings, run_command
from tests.commands.egress_world import NameServer
from tests.support.http_target import TargetServer

PYTHON = "/usr/bin/python3"


@pytest.fixture
def target() -> Iterator[TargetServer]:
    server = TargetServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def egress_settings(settings: SandboxSettings, name_server: NameServer) -> SandboxSettings:
    return settings.model_copy(update={"egress_resolver": name_server.address})


def run(
    argv: Sequence[str], settings: SandboxSettings, egress: Sequence[AllowedDestination] = (), profile: str = "network"
) -> SandboxResult:
    return run_command(
        argv, settings=settings, profile=profile, timeout_seconds=30, output_cap_bytes=65536, egress=egress
    )


def curl(url: str, *options: str) -> list[str]:
    # --proxytunnel: plain http through CONNECT too, as the proxy tunnels only.
    return ["curl", "--silent", "--show-error", "--max-time", "10", "--proxytunnel", *options, url]


def records(result: SandboxResult) -> list[dict[str, object]]:
    egress = result.response()["egress"]
    assert isinstance(egress, list)
    return egress


def test_a_tool_reaches_its_allowed_destination_through_the_proxy(
    egress_settings: SandboxSettings, name_server: NameServer, target: TargetServer
) -> None:
    name_server.publish("allowed.test", "127.0.0.1")
    allowed = [AllowedDestination("allowed.test", target.port, allow_private=True, source="destination allowed")]

    result = run(curl(f"http://allowed.test:{target.port}/hello"), egress_settings, allowed)

    assert result.exit_code == 0, result.stderr
    assert '"path": "/hello"' in result.stdout
    (record,) = records(result)
    assert record["outcome"] == "connected"
    assert (record["host"], record["port"], record["address"]) == ("allowed.test", target.port, "127.0.0.1")
    assert isinstance(record["bytes_sent"], int) and record["bytes_sent"] > 0
    assert isinstance(record["bytes_received"], int) and record["bytes_received"] >= len(result.stdout)
    assert result.response()["egress_truncated"] is False
    assert "egress:proxy" in result.isolation


def test_socks5_through_all_proxy_reaches_the_allowed_destination_too(
    egress_settings: SandboxSettings, name_server: NameServer, target: TargetServer
) -> None:
    name_server.publish("allowed.test", "127.0.0.1")
    allowed = [AllowedDestination("allowed.test", target.port, allow_private=True)]
    argv = ["curl", "--silent", "--show-error", "--max-time", "10", "--proxy", "socks5h://127.0.0.1:3128"]

    result = run([*argv, f"http://allowed.test:{target.port}/socks"], egress_settings, allowed)

    assert result.exit_code == 0, result.stderr
    assert [(r["protocol"], r["outcome"]) for r in records(result)] == [("socks5", "connected")]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://forbidden.test:{port}/", "forbidden.test:{port} is not among this tool's allowed destinations"),
        ("http://allowed.test:{other}/", "allowed.test:{other} is not among this tool's allowed destinations"),
        ("http://127.0.0.1:{port}/", "127.0.0.1:{port} is not among"),
        ("http://localhost:{port}/", "127.0.0.1:{port} is not among"),
        ("http://[::1]:{port}/", "127.0.0.1:{port} is not among"),
        ("http://[::ffff:127.0.0.1]:{port}/", "127.0.0.1:{port} is not among"),
        ("http://169.254.169.254:80/", "169.254.169.254:80 is not among"),
    ],
)
def test_a_forbidden_host_port_or_loopback_address_fails_and_is_recorded(
    egress_settings: SandboxSettings, name_server: NameServer, target: TargetServer, url: str, reason: str
) -> None:
    name_server.publish("allowed.test", "127.0.0.1")
    name_server.publish("forbidden.test", "127.0.0.1")
    allowed = [AllowedDestination("allowed.test", target.port, allow_private=True)]
    values = {"port": target.port, "other": target.port + 1 if target.port < 65535 else target.port - 1}

    result = run(curl(url.format(**values)), egress_settings, allowed)

    assert result.exit_code != 0
    assert "CONNECT tunnel failed, response 403" in result.stderr
    (record,) = records(result)
    assert record["outcome"] == "refused"
    assert str(record["reason"]).startswith(reason.format(**values))
    assert target.received() == []


def test_loopback_listed_without_allow_private_is_still_refused(
    egress_settings: SandboxSettings, target: TargetServer
) -> None:
    result = run(
        curl(f"http://127.0.0.1:{target.port}/"), egress_settings, [AllowedDestination("127.0.0.1", target.port)]
    )

    assert result.exit_code != 0
    assert "a loopback address" in str(records(result)[0]["reason"])
    assert target.received() == []


DIRECT = """
import socket, sys
for host, port in [("127.0.0.1", int(sys.argv[1])), ("192.0.2.1", 80), ("::1", int(sys.argv[1]))]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family) as sock:
            sock.settimeout(3)
            sock.connect((host, port))
        print("connected", host)
    except OSError as error:
        print("failed", host, type(error).__name__)
"""


def test_a_direct_connection_that_bypasses_the_proxy_goes_nowhere(
    egress_settings: SandboxSettings, target: TargetServer
) -> None:
    allowed = [AllowedDestination("127.0.0.1", target.port, allow_private=True)]

    result = run([PYTHON, "-c", DIRECT, str(target.port)], egress_settings, allowed)

    # The sandbox's 127.0.0.1 is its own loopback (nothing listens there), and nothing else routes.
    assert result.stdout.splitlines() == [
        "failed 127.0.0.1 ConnectionRefusedError",
        "failed 192.0.2.1 OSError",
        "failed ::1 ConnectionRefusedError",
    ]
    # Nothing reached the proxy, so there is nothing to record, and the server saw nobody.
    assert records(result) == []
    assert target.received() == []


DNS = """
import socket, struct, sys
try:
    print("resolved", socket.getaddrinfo("allowed.test", 80))
except OSError as error:
    print("getaddrinfo failed", type(error).__name__)
query = struct.pack(">HHHHHH", 7, 0x0100, 1, 0, 0, 0) + b"\\x0aexfiltrate\\x04test\\x00" + struct.pack(">HH", 1, 1)
for server in ["127.0.0.1", "192.0.2.53"]:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(2)
            sock.sendto(query, (server, int(sys.argv[1])))
            sock.recv(512)
        print("answered", server)
    except OSError as error:
        print("no answer", server, type(error).__name__)
try:
    open("/etc/resolv.conf").read()
    print("resolv.conf present")
except OSError:
    print("no resolv.conf")
"""


def test_dns_queries_from_inside_fail_and_never_reach_a_nameserver(
    egress_settings: SandboxSettings, name_server: NameServer
) -> None:
    name_server.publish("allowed.test", "127.0.0.1")
    before = list(name_server.queries)

    result = run([PYTHON, "-c", DNS, str(name_server.port)], egress_settings)

    lines = result.stdout.splitlines()
    assert lines[0] == "getaddrinfo failed gaierror"
    assert lines[1].startswith("no answer 127.0.0.1")
    assert lines[2].startswith("no answer 192.0.2.53")
    assert lines[3] == "no resolv.conf"
    assert name_server.queries == before


def test_a_profile_without_egress_has_no_proxy_and_no_egress_record(
    settings: SandboxSettings, target: TargetServer
) -> None:
    result = run(curl(f"http://127.0.0.1:{target.port}/"), settings, profile="default")

    assert result.exit_code != 0
    assert "egress" not in result.response()
    assert "network:none" in result.isolation


def test_the_proxy_variables_are_set_for_an_egress_profile(egress_settings: SandboxSettings) -> None:
    result = run(["/usr/bin/env"], egress_settings)

    environment = dict(line.split("=", 1) for line in result.stdout.splitlines())
    assert environment["HTTPS_PROXY"] == environment["https_proxy"] == "http://127.0.0.1:3128"
    assert environment["ALL_PROXY"] == "socks5h://127.0.0.1:3128"
    assert environment["NO_PROXY"] == ""


def dns_wire_query(name: bytes) -> bytes:
    labels = b"".join(bytes([len(part)]) + part for part in name.split(b"."))
    return struct.pack(">HHHHHH", 1, 0x0100, 1, 0, 0, 0) + labels + b"\x00" + struct.pack(">HH", 1, 1)


def test_the_test_name_server_answers_from_the_host_so_the_dns_test_can_fail(name_server: NameServer) -> None:
    # The DNS test above means something only if the same query from outside gets an answer.
    name_server.publish("allowed.test", "127.0.0.1")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(dns_wire_query(b"allowed.test"), ("127.0.0.1", name_server.port))
        assert sock.recv(512)[:2] == b"\x00\x01"
