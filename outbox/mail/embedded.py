"""Mail in the embedded server (`outbox serve` without a broker): the quickstart really delivers.

At start, for every subdomain whose relay is this machine's sink (127.0.0.1 or localhost, port
`OUTBOX_MAIL_SINK_PORT`):

- a development DKIM key is generated where mail.yaml's `key_file` says, if there is none yet
  (a subdomain whose key comes from an environment variable is left alone);
- the Maildir sink is started on that port, storing mail under `OUTBOX_MAIL_SINK_DIR`
  (`.outbox/maildir`). If the port is taken, an `outbox mail sink` started by hand is assumed.

And, in every embedded server, DNS checks run in the background at start and then every
`OUTBOX_MAIL_DNS_CHECK_INTERVAL_SECONDS` (in production the sweep task schedules them).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from outbox.mail.config import MailConfig, SubdomainConfig
from outbox.mail.dns.verdicts import check_and_store, run_due_checks
from outbox.mail.environment import key_base_dir, sink_dir
from outbox.mail.sending.dkim_signing import dkim_record_name, generate_key, write_private_key
from outbox.mail.sending.sink import MaildirSink
from outbox.mail.service import MailNotConfiguredError, mail_config
from outbox.state_files import private_directory

if TYPE_CHECKING:
    from outbox.runtime import Runtime  # annotations only: the edges hand the runtime in

log = structlog.get_logger(__name__)
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def local_sink_subdomains(config: MailConfig, port: int) -> list[SubdomainConfig]:
    return [s for s in config.subdomains if s.relay.host in LOOPBACK_HOSTS and s.relay.port == port]


def ensure_development_keys(runtime: Runtime, subdomains: list[SubdomainConfig]) -> list[str]:
    """Generate missing key files for sink-bound subdomains; return the subdomains keyed."""
    created: list[str] = []
    base = key_base_dir(runtime.settings)
    for sub in subdomains:
        if sub.dkim.key_file is None:
            continue
        path = sub.dkim.key_file if base is None else base / sub.dkim.key_file
        if path.exists():
            continue
        key = generate_key(sub.dkim.algorithm)
        private_directory(path.parent)  # the key's directory (.outbox/dkim) is 0700, the key 0600
        try:
            write_private_key(path, key)
        except FileExistsError:  # another process wrote it first
            continue
        created.append(sub.domain)
        log.info(
            "mail.dkim_key_generated",
            subdomain=sub.domain,
            path=str(path),
            record=dkim_record_name(sub.dkim.selector, sub.domain),
            value=key.txt_record(),
        )
    return created


@dataclass
class EmbeddedMail:
    sink: MaildirSink | None = None
    stop_event: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def stop(self) -> None:
        self.stop_event.set()
        if self.sink is not None:
            self.sink.stop()
            self.sink = None
        if self.thread is not None:
            self.thread.join(timeout=5)


def _periodic_dns_checks(runtime: Runtime, config: MailConfig, stop: threading.Event) -> None:
    settings = runtime.settings
    first = True
    while first or not stop.wait(settings.mail_dns_check_interval_seconds):
        try:
            if first:
                check_and_store(runtime.db, config, settings)
            else:
                run_due_checks(runtime.db, config, settings)
        except Exception:
            log.exception("mail.dns_check_failed")
        first = False


def start_embedded_mail(runtime: Runtime) -> EmbeddedMail | None:
    """Start what the embedded server runs for mail; None when mail is not configured."""
    try:
        config = mail_config(runtime)
    except MailNotConfiguredError:
        return None
    settings = runtime.settings
    embedded = EmbeddedMail()
    local = local_sink_subdomains(config, settings.mail_sink_port)
    if local:
        ensure_development_keys(runtime, local)
        if settings.mail_embedded_sink:
            try:
                embedded.sink = MaildirSink(sink_dir(settings), port=settings.mail_sink_port).start()
                log.info("mail.sink_started", port=settings.mail_sink_port, maildir=str(sink_dir(settings)))
            except OSError as exc:
                log.warning("mail.sink_not_started", port=settings.mail_sink_port, error=str(exc))
    embedded.thread = threading.Thread(
        target=_periodic_dns_checks, args=(runtime, config, embedded.stop_event), name="outbox-mail-dns", daemon=True
    )
    embedded.thread.start()
    return embedded
