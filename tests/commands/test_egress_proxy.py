"""The egress proxy on its own: a real proxy on a Unix socket, real loopback servers, real DNS.

Every request here is what a sandboxed tool could send: the proxy must tunnel exactly the
allowed name/port pairs, refuse everything else with a reason, and survive hostile input.
"""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from ipaddress import ip_address
from pathlib import Path

import pytest

from outbox.commands.egress import AllowedDestination, DnsResolver, EgressPolicy, EgressProxy
from outbox.commands.egress.addresses import forbidden_address
from outbox.commands.egress.destinations import host_matches, host_pattern_problem
from tests.commands.egress_world import NameServer, proxy_exchange, read_all
from tests.support.http_target import TargetServer


@contextmanager
def running_proxy(
    name_server: NameServer, allowed: Sequence[AllowedDestination], **policy: float | int
) -> Iterator[tuple[EgressProxy, Path]]:
    with tempfile.TemporaryDirectory(prefix="outbox-egress-test-") as directory:
        path = Path(directory) / "proxy.sock"
        rules = EgressPolicy(tuple(allowed), DnsResolver(name_server.address, 2.0), **policy)  # type: ignore[arg-type]
        with EgressProxy(rules, path) as proxy:
            yield proxy, path


@pytest.fixture
def target() -> Iterator[TargetServer]:
    server = TargetServer()
    server.start()
    yield server
    server.stop()


def connect_line(target: str) -> bytes:
    return f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode()


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def test_an_allowed_destination_is_tunnelled_and_its_bytes_counted_both_ways(
    name_server: NameServer, target: TargetServer
) -> None:
    allowed = [AllowedDestination("127.0.0.1", target.port, allow_private=True)]
    request = b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with running_proxy(name_server, allowed) as (proxy, path):
        answer = proxy_exchange(path, connect_line(f"127.0.0.1:{target.port}") + request)

    established, _, response = answer.partition(b"\r\n\r\n")
    assert established == b"HTTP/1.1 200 Connection established"
    assert b'"path": "/hello"' in response
    (record,) = proxy.log().records
    assert (record.outcome, record.host, record.port, record.address) == (
        "connected",
        "127.0.0.1",
        target.port,
        "127.0.0.1",
    )
    assert (record.bytes_sent, record.bytes_received) == (len(request), len(response))
    assert record.protocol == "http-connect"
    assert record.reason is None


@pytest.mark.parametrize(
    ("requested", "reason"),
    [
        ("other.test:443", "other.test:443 is not among this tool's allowed destinations"),
        ("allowed.test:8443", "allowed.test:8443 is not among this tool's allowed destinations"),
        ("allowed.test.evil.test:443", "allowed.test.evil.test:443 is not among"),
    ],
)
def test_a_host_or_port_not_on_the_list_is_refused_and_recorded(
    name_server: NameServer, requested: str, reason: str
) -> None:
    with running_proxy(name_server, [AllowedDestination("allowed.test", 443)]) as (proxy, path):
        answer = proxy_exchange(path, connect_line(requested))

    assert status_of(answer) == 403
    (record,) = proxy.log().records
    assert record.outcome == "refused"
    assert record.reason is not None and record.reason.startswith(reason)
    assert record.address is None  # nothing was resolved or connected


@pytest.mark.parametrize(
    "spelling", ["127.0.0.1", "localhost", "LocalHost.", "api.localhost", "[::1]", "[0:0::1]", "[::ffff:127.0.0.1]"]
)
def test_every_spelling_of_loopback_is_one_address_and_refused(
    name_server: NameServer, target: TargetServer, spelling: str
) -> None:
    # Even listed, loopback is refused unless a server-side destination sets allow_private.
    with running_proxy(name_server, [AllowedDestination("127.0.0.1", target.port)]) as (proxy, path):
        answer = proxy_exchange(path, connect_line(f"{spelling}:{target.port}"))

    assert status_of(answer) == 403
    (record,) = proxy.log().records
    assert record.host == "127.0.0.1"
    assert record.reason is not None and "a loopback address" in record.reason
    assert target.received() == []


@pytest.mark.parametrize("spelling", ["2130706433", "0x7f000001", "0177.0.0.1", "127.1", "0x7f.0.0.1", "127.0.0.01"])
def test_ipv4_spellings_that_parsers_disagree_on_are_refused(name_server: NameServer, spelling: str) -> None:
    with running_proxy(name_server, [AllowedDestination("127.0.0.1", 80, allow_private=True)]) as (proxy, path):
        answer = proxy_exchange(path, connect_line(f"{spelling}:80"))

    assert status_of(answer) == 400
    (record,) = proxy.log().records
    assert record.reason is not None and "non-standard form" in record.reason


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("10.0.0.1", "a private address"),
        ("172.16.5.4", "a private address"),
        ("192.168.1.1", "a private address"),
        ("100.64.0.1", "a carrier-grade NAT (shared) address"),
        ("169.254.169.254", "a cloud metadata service address"),
        ("169.254.1.1", "a link-local address"),
        ("224.0.0.251", "a multicast address"),
        ("192.0.2.1", "not globally routable"),
        ("fe80::1", "a link-local address"),
        ("fd00:ec2::254", "a cloud metadata service address"),
        ("fc00::1", "a private (unique local) address"),
        ("ff02::1", "a multicast address"),
        ("64:ff9b::a9fe:a9fe", "a cloud metadata service address (64:ff9b::a9fe:a9fe carries 169.254.169.254)"),
        ("64:ff9b:1::1", "a local-use NAT64 address"),
        ("2002:7f00:1::", "a loopback address (2002:7f00:1:: carries 127.0.0.1)"),
    ],
)
def test_private_link_local_cgnat_multicast_nat64_and_metadata_addresses_are_refused(
    name_server: NameServer, address: str, reason: str
) -> None:
    shown = f"[{address}]" if ":" in address else address
    listed = str(ip_address(address))
    with running_proxy(name_server, [AllowedDestination(listed, 443)]) as (proxy, path):
        answer = proxy_exchange(path, connect_line(f"{shown}:443"))

    assert status_of(answer) == 403
    (record,) = proxy.log().records
    assert record.reason is not None and reason in record.reason


def test_global_addresses_including_their_nat64_and_6to4_forms_are_not_refused_by_the_address_rules() -> None:
    for address in ["93.184.216.34", "2606:4700::1111", "64:ff9b::5db8:d822", "2002:5db8:d822::1"]:
        assert forbidden_address(ip_address(address)) is None, address


def test_a_name_resolving_to_loopback_is_refused_unless_its_destination_allows_private(
    name_server: NameServer, target: TargetServer
) -> None:
    name_server.publish("rebind.test", "127.0.0.1")
    request = connect_line(f"rebind.test:{target.port}") + b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with running_proxy(name_server, [AllowedDestination("rebind.test", target.port)]) as (refusing, path):
        refused = proxy_exchange(path, request)
    with running_proxy(name_server, [AllowedDestination("rebind.test", target.port, allow_private=True)]) as (
        allowing,
        path,
    ):
        allowed = proxy_exchange(path, request)

    assert status_of(refused) == 403
    assert "rebind.test is or resolves to 127.0.0.1, a loopback address" in (refusing.log().records[0].reason or "")
    assert status_of(allowed) == 200
    assert allowing.log().records[0].address == "127.0.0.1"
    assert [request.path for request in target.received()] == ["/x"]


def test_the_outbox_s_own_ports_on_loopback_are_refused_even_to_a_destination_allowing_private(
    name_server: NameServer, target: TargetServer
) -> None:
    allowed = [AllowedDestination("127.0.0.1", target.port, allow_private=True)]
    with running_proxy(name_server, allowed, reserved_ports=frozenset({target.port})) as (proxy, path):
        answer = proxy_exchange(path, connect_line(f"localhost:{target.port}"))

    assert status_of(answer) == 403
    assert (
        proxy.log().records[0].reason == f"127.0.0.1:{target.port} is one of the outbox's own services on this machine"
    )
    assert target.received() == []


def test_a_name_with_one_private_address_among_public_ones_is_refused(name_server: NameServer) -> None:
    name_server.publish("mixed.test", "93.184.216.34", "10.1.2.3")
    with running_proxy(name_server, [AllowedDestination("mixed.test", 443)]) as (proxy, path):
        answer = proxy_exchange(path, connect_line("mixed.test:443"))

    assert status_of(answer) == 403
    assert "10.1.2.3, a private address" in (proxy.log().records[0].reason or "")


def test_a_name_that_does_not_resolve_is_refused_with_its_reason(name_server: NameServer) -> None:
    with running_proxy(name_server, [AllowedDestination("missing.test", 443)]) as (proxy, path):
        answer = proxy_exchange(path, connect_line("missing.test:443"))

    assert status_of(answer) == 502
    assert "could not resolve missing.test" in (proxy.log().records[0].reason or "")
    assert "missing.test" in name_server.queries


@pytest.mark.parametrize(
    ("host", "matches"),
    [
        ("api.example.test", True),
        ("a.b.example.test", True),
        ("example.test", False),
        ("badexample.test", False),
        ("example.test.evil.test", False),
        ("xexample.test", False),
    ],
)
def test_a_wildcard_matches_subdomains_only(host: str, matches: bool) -> None:
    assert host_matches("*.example.test", host) is matches


@pytest.mark.parametrize(
    "pattern", ["*.com", "*.*.example.test", "a.*.example.test", "*example.test", "Example.test", "*.127.0.0.1", "x y"]
)
def test_malformed_host_patterns_are_named(pattern: str) -> None:
    assert host_pattern_problem(pattern) is not None


@pytest.mark.parametrize(
    ("request_bytes", "status", "reason"),
    [
        (connect_line("host.test:0"), 400, "port '0'"),
        (connect_line("host.test:65536"), 400, "port '65536'"),
        (connect_line("host.test:-1"), 400, "port '-1'"),
        (connect_line("host.test:443x"), 400, "port '443x'"),
        (connect_line("host.test:000443"), 400, "port '000443'"),
        (connect_line("host.test:"), 400, "port ''"),
        (connect_line("host.test"), 400, "expected host:port"),
        (connect_line("[::1:443"), 400, "expected [ipv6]:port"),
        (connect_line("::1:443"), 400, "expected host:port (an IPv6 address in brackets)"),
        (connect_line("[::1]443"), 400, "expected [ipv6]:port"),
        (connect_line("[fe80::1%25eth0]:443"), 400, "zone identifiers"),
        (connect_line("[host.test]:443"), 400, "is not an IPv6 address"),
        (connect_line("user@host.test:443"), 400, "user information is not allowed"),
        (connect_line("user:pw@host.test:443"), 400, "user information is not allowed"),
        (connect_line("host.test:443@evil.test:80"), 400, "user information is not allowed"),
        (b"GET http://host.test/ HTTP/1.1\r\nHost: host.test\r\n\r\n", 405, "only tunnels (CONNECT)"),
        (b"CONNECT host.test:443 HTTP/2\r\n\r\n", 400, "malformed request line"),
        (b"CONNECT  host.test:443 HTTP/1.1\r\n\r\n", 400, "malformed request line"),
        (b"CONNECT h\xc3\xb6st.test:443 HTTP/1.1\r\n\r\n", 400, "not ASCII"),
        (b"CONNECT host\x00.test:443 HTTP/1.1\r\n\r\n", 400, "control character"),
        (b"CONNECT " + b"a" * 20000 + b".test:443 HTTP/1.1\r\n\r\n", 431, "longer than 8192 bytes"),
        (connect_line("host.test:443")[:-2] + b"X-Pad: " + b"p" * 9000 + b"\r\n\r\n", 431, "longer than 8192"),
    ],
    ids=lambda case: case[:40].decode("latin-1").replace("\r\n", " ") if isinstance(case, bytes) else str(case),
)
def test_hostile_connect_requests_are_refused_with_a_reason(
    name_server: NameServer, request_bytes: bytes, status: int, reason: str
) -> None:
    with running_proxy(name_server, [AllowedDestination("host.test", 443)]) as (proxy, path):
        answer = proxy_exchange(path, request_bytes)

    assert status_of(answer) == status
    (record,) = proxy.log().records
    assert record.outcome == "refused"
    assert reason in (record.reason or ""), record.reason
    assert len(record.target) <= 201


def test_a_request_head_that_never_ends_is_cut_off_at_the_header_timeout(name_server: NameServer) -> None:
    with running_proxy(name_server, [AllowedDestination("host.test", 443)], header_timeout_seconds=0.5) as (
        proxy,
        path,
    ):
        # No blank line: a slowloris client keeps the head open.
        answer = proxy_exchange(path, b"CONNECT host.test:443 HTTP/1.1\r\nHost: host.test\r\n", read_timeout=10)

    assert status_of(answer) == 408
    assert proxy.log().records[0].reason == "request not complete within 0.5 s"


def test_a_head_trickled_byte_by_byte_is_cut_off_by_the_total_deadline_not_per_read(name_server: NameServer) -> None:
    head = connect_line("host.test:443")
    with (
        running_proxy(name_server, [AllowedDestination("host.test", 443)], header_timeout_seconds=0.5) as (
            proxy,
            path,
        ),
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client,
    ):
        client.connect(str(path))
        client.settimeout(10)
        stop = threading.Event()

        def trickle() -> None:
            for byte in head:
                if stop.wait(0.05):
                    return
                try:
                    client.send(bytes([byte]))
                except OSError:
                    return

        sender = threading.Thread(target=trickle)
        sender.start()
        answer = read_all(client)
        stop.set()
        sender.join()

    assert status_of(answer) == 408
    assert proxy.log().records[0].reason == "request not complete within 0.5 s"


def socks_request(host: bytes, port: int, *, command: int = 1, kind: int = 3) -> bytes:
    address = bytes([len(host)]) + host if kind == 3 else host
    return b"\x05\x01\x00" + bytes([5, command, 0, kind]) + address + port.to_bytes(2, "big")


def test_socks5_reaches_an_allowed_name_and_relays(name_server: NameServer, target: TargetServer) -> None:
    name_server.publish("socks.test", "127.0.0.1")
    request = b"GET /via-socks HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with running_proxy(name_server, [AllowedDestination("socks.test", target.port, allow_private=True)]) as (
        proxy,
        path,
    ):
        answer = proxy_exchange(path, socks_request(b"socks.test", target.port) + request)

    assert answer[:2] == b"\x05\x00"  # method: no authentication
    assert answer[2:4] == b"\x05\x00"  # request granted
    assert b'"path": "/via-socks"' in answer
    (record,) = proxy.log().records
    assert (record.protocol, record.outcome, record.host) == ("socks5", "connected", "socks.test")


@pytest.mark.parametrize(
    ("request_bytes", "answer", "reason"),
    [
        (b"\x05\x01\x02", b"\x05\xff", "without an acceptable authentication method"),
        (b"\x05\x00", b"\x05\xff", "without an acceptable authentication method"),
        (socks_request(b"host.test", 443, command=2), b"\x05\x00\x05\x07", "command 2 is not supported"),
        (socks_request(b"host.test", 443, command=3), b"\x05\x00\x05\x07", "command 3 is not supported"),
        (b"\x05\x01\x00\x05\x01\x00\x09" + b"\x00" * 6, b"\x05\x00\x05\x08", "address type 9 is not supported"),
        (socks_request(b"ho\x00st.test", 443), b"\x05\x00\x05\x02", "is not printable ASCII"),
        (socks_request(b"", 443), b"\x05\x00\x05\x02", "is not printable ASCII"),
        (socks_request(b"host.test", 0), b"\x05\x00\x05\x02", "port 0 is not a destination"),
        (socks_request(bytes([127, 0, 0, 1]), 443, kind=1), b"\x05\x00\x05\x02", "not among"),
        (socks_request(b"other.test", 443), b"\x05\x00\x05\x02", "other.test:443 is not among"),
        (socks_request(b"0x7f.1", 443), b"\x05\x00\x05\x02", "non-standard form"),
    ],
    ids=lambda case: case.hex()[:40] if isinstance(case, bytes) else str(case),
)
def test_hostile_socks5_requests_are_refused_with_a_reason(
    name_server: NameServer, request_bytes: bytes, answer: bytes, reason: str
) -> None:
    with running_proxy(name_server, [AllowedDestination("host.test", 443)]) as (proxy, path):
        received = proxy_exchange(path, request_bytes)

    assert received[: len(answer)] == answer
    (record,) = proxy.log().records
    assert record.protocol == "socks5"
    assert reason in (record.reason or ""), record.reason


def test_a_truncated_socks5_request_times_out(name_server: NameServer) -> None:
    with running_proxy(name_server, [AllowedDestination("host.test", 443)], header_timeout_seconds=0.5) as (
        proxy,
        path,
    ):
        proxy_exchange(path, b"\x05\x01\x00\x05\x01\x00\x03\x09host", read_timeout=10)

    assert proxy.log().records[0].reason == "request not complete within 0.5 s"


def test_records_beyond_the_cap_are_counted_not_listed(name_server: NameServer) -> None:
    with running_proxy(name_server, [], record_cap=3) as (proxy, path):
        for index in range(5):
            proxy_exchange(path, connect_line(f"host{index}.test:443"))
        # Wait until the proxy has finished every connection it accepted.
        deadline = time.monotonic() + 10
        while sum(1 for record in proxy.log().records if record.reason) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)

    log = proxy.log()
    assert [record.host for record in log.records] == ["host0.test", "host1.test", "host2.test"]
    assert log.dropped == 2
    assert log.truncated


def test_connections_beyond_the_limit_open_at_once_are_refused_and_recorded(name_server: NameServer) -> None:
    with running_proxy(name_server, [], max_connections=2, header_timeout_seconds=5) as (proxy, path):
        idle = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(2)]
        for client in idle:
            client.connect(str(path))
        # Both idle clients are accepted before a third is: the accept loop takes one at a time.
        deadline = time.monotonic() + 10
        while len(proxy.log().records) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        third = proxy_exchange(path, b"")
        for client in idle:
            client.close()

    assert third == b""  # closed at once, without an answer
    reasons = [record.reason for record in proxy.log().records]
    assert "more than 2 connections open at once" in reasons
