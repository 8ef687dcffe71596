"""What the egress tests talk to, all on loopback: a DNS server, a fake cluster API over TLS, and
helpers to speak raw CONNECT/SOCKS5 to a proxy.

The DNS server is the only resolver the proxy is given (`egress_resolver`): nothing here asks
the system's resolver. The cluster API serves a certificate for its names from a CA the test
makes, so a client that verifies TLS (curl) proves it reached this server and no other.
"""

from __future__ import annotations

import datetime
import json
import socket
import ssl
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from dnslib import AAAA, QTYPE, RCODE, RR, A, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer


class NameServer(BaseResolver):  # type: ignore[misc]
    """A and AAAA records a test publishes; NXDOMAIN for the rest; every query remembered."""

    def __init__(self) -> None:
        self.records: dict[str, list[str]] = {}
        self.queries: list[str] = []
        self._lock = threading.Lock()
        self._server = DNSServer(
            self, address="127.0.0.1", port=0, logger=DNSLogger("-request,-reply,-truncated,-error")
        )

    @property
    def address(self) -> str:
        host, port = self._server.server.server_address
        return f"{host}:{port}"

    @property
    def port(self) -> int:
        return int(self._server.server.server_address[1])

    def publish(self, name: str, *addresses: str) -> None:
        with self._lock:
            self.records[name] = list(addresses)

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply()
        name = str(request.q.qname).lower().rstrip(".")
        with self._lock:
            self.queries.append(name)
            addresses = self.records.get(name)
        if addresses is None:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        for address in addresses:
            version = ip_address(address).version
            if request.q.qtype == QTYPE.A and version == 4:
                reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(address), ttl=60))
            elif request.q.qtype == QTYPE.AAAA and version == 6:
                reply.add_answer(RR(request.q.qname, QTYPE.AAAA, rdata=AAAA(address), ttl=60))
        return reply

    def start(self) -> NameServer:
        self._server.start_thread()
        return self

    def stop(self) -> None:
        self._server.stop()
        self._server.server.server_close()


@dataclass
class Certificates:
    """A CA and a server certificate for `names`, as PEM files in a directory."""

    ca_pem: bytes
    cert_file: Path
    key_file: Path


def make_certificates(directory: Path, names: list[str]) -> Certificates:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "outbox test cluster CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name) for name in names]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = directory / "server.crt", directory / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return Certificates(ca.public_bytes(serialization.Encoding.PEM), cert_file, key_file)


@dataclass
class ClusterApi:
    """A Kubernetes-shaped API over TLS: GET /api/v1/pods?fieldSelector=metadata.namespace=<ns>."""

    pods: dict[str, list[str]]
    certificates: Certificates
    requests: list[str] = field(default_factory=list)

    def start(self) -> ClusterApi:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: object) -> None:
                return None

            def do_GET(self) -> None:
                api.requests.append(self.path)
                url = urlsplit(self.path)
                selector = parse_qs(url.query).get("fieldSelector", [""])[0]
                namespace = selector.removeprefix("metadata.namespace=")
                if url.path != "/api/v1/pods" or namespace not in api.pods:
                    self._send(404, {"kind": "Status", "status": "Failure", "reason": "NotFound"})
                    return
                items = [{"metadata": {"name": name, "namespace": namespace}} for name in api.pods[namespace]]
                self._send(200, {"kind": "PodList", "items": items})

            def _send(self, status: int, document: dict[str, object]) -> None:
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.certificates.cert_file, self.certificates.key_file)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def cluster_api(names: list[str], pods: dict[str, list[str]]) -> Iterator[ClusterApi]:
    with tempfile.TemporaryDirectory(prefix="outbox-cluster-") as directory:
        api = ClusterApi(pods, make_certificates(Path(directory), names)).start()
        try:
            yield api
        finally:
            api.stop()


def proxy_exchange(socket_path: Path, request: bytes, *, read_timeout: float = 5.0) -> bytes:
    """Send raw bytes to a proxy's Unix socket; everything it answers until it closes or pauses."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(read_timeout)
        client.connect(str(socket_path))
        if request:
            client.sendall(request)
        return read_all(client)


def read_all(client: socket.socket) -> bytes:
    received = b""
    try:
        while chunk := client.recv(65536):
            received += chunk
    except TimeoutError:
        pass
    return received
