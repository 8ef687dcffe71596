"""Real components for the mail tests: keys, a loopback DNS server, an SMTP sink, a mail config, and
the whole pipeline (`world`: a runtime on SQLite and PostgreSQL with mail.yaml written per test)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from outbox.api.app import create_app
from outbox.config import get_settings
from outbox.mail.config import MailConfig, parse_mail_config
from outbox.mail.sending.delivery import SmtpDelivery
from outbox.mail.sending.dkim_signing import DkimKey, generate_key, write_private_key
from outbox.mail.sending.sink import MaildirSink, SinkScript
from outbox.runtime import Runtime
from tests.mail.dns_server import LoopbackDns
from tests.mail.world import MailCli, MailWorld

SUBDOMAIN = "agents.mail.example.com"
SELECTOR = "sel2026"
SECRET = b"unsubscribe-secret-for-tests-0123456789"


@pytest.fixture(scope="session")
def rsa_key() -> DkimKey:
    return generate_key("rsa-sha256")


@pytest.fixture(scope="session")
def ed25519_key() -> DkimKey:
    return generate_key("ed25519-sha256")


@pytest.fixture(scope="session")
def _dns_server_process() -> Iterator[LoopbackDns]:
    server = LoopbackDns().start()
    yield server
    server.stop()


@pytest.fixture
def dns_server(_dns_server_process: LoopbackDns) -> LoopbackDns:
    """The loopback DNS server, with no records: each test publishes its own."""
    _dns_server_process.reset()
    return _dns_server_process


@pytest.fixture
def delivery() -> Iterator[SmtpDelivery]:
    smtp = SmtpDelivery()
    yield smtp
    smtp.close()


@pytest.fixture
def start_sink(tmp_path: Path) -> Iterator[Callable[..., MaildirSink]]:
    """Start sinks on free ports, each with its own Maildir; all are stopped after the test."""
    started: list[MaildirSink] = []

    def start(script: SinkScript | None = None, **options: Any) -> MaildirSink:
        sink = MaildirSink(tmp_path / f"maildir{len(started)}", script=script, **options).start()
        started.append(sink)
        return sink

    yield start
    for sink in started:
        sink.stop()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A self-signed certificate for 127.0.0.1: (certificate, private key, CA bundle = the cert)."""
    directory = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "outbox test relay")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "relay.crt", directory / "relay.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path, cert_path


@pytest.fixture
def server_tls_context(tls_files: tuple[Path, Path, Path]) -> ssl.SSLContext:
    cert, key, _ = tls_files
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def config_data(**subdomain: Any) -> dict[str, Any]:
    """A valid mail config as YAML would give it, with overrides for the one subdomain."""
    sub: dict[str, Any] = {
        "domain": SUBDOMAIN,
        "dkim": {"selector": SELECTOR, "algorithm": "rsa-sha256", "key_file": "keys/agents.key"},
        "relay": {"host": "127.0.0.1", "port": 2525, "starttls": False},
        "budgets": {"per_hour": 100, "per_day": 1000},
    }
    sub.update(subdomain)
    return {
        "primary_domains": ["example.com"],
        "unsubscribe": {"base_url": "https://outbox.example.com/unsubscribe"},
        "subdomains": [sub],
    }


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., MailConfig]:
    """A config whose subdomain signs with `key` (written to tmp_path/keys) and relays to `sink`."""

    def make(key: DkimKey, sink: MaildirSink | None = None, **subdomain: Any) -> MailConfig:
        key_path = tmp_path / "keys" / f"{key.algorithm}-{key.public_key_b64[:8]}.key"
        if not key_path.exists():
            write_private_key(key_path, key)
        dkim = {"selector": SELECTOR, "algorithm": key.algorithm, "key_file": str(key_path)}
        relay = {"host": "127.0.0.1", "port": sink.port if sink else 9, "starttls": False}
        return parse_mail_config(config_data(**{"dkim": dkim, "relay": relay, **subdomain}))

    return make


# --- The whole pipeline (tests/mail/world.py) ---------------------------------------------


@pytest.fixture
def world(
    policy_dir: Path,
    tmp_path: Path,
    rsa_key: DkimKey,
    start_sink: Callable[..., MaildirSink],
    dns_server: LoopbackDns,
    make_runtime: Callable[..., Runtime],
) -> MailWorld:
    key_file = tmp_path / "keys" / "agents.key"
    write_private_key(key_file, rsa_key)
    return MailWorld(policy_dir, key_file, rsa_key, start_sink(SinkScript()), dns_server, make_runtime)


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Iterator[MailCli]:
    monkeypatch.setenv("OUTBOX_LOG_JSON", "false")
    monkeypatch.setenv("OUTBOX_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("OUTBOX_POLICY_WATCH", "false")
    get_settings.cache_clear()
    yield MailCli(monkeypatch, CliRunner())
    get_settings.cache_clear()


@pytest.fixture
def api(world: MailWorld) -> Iterator[Callable[[], TestClient]]:
    """A TestClient on the world's runtime (call after `world.configure()`)."""
    clients: list[TestClient] = []

    def client() -> TestClient:
        test_client = TestClient(create_app(runtime=world.rt))
        test_client.__enter__()
        clients.append(test_client)
        return test_client

    yield client
    for test_client in clients:
        test_client.__exit__(None, None, None)
