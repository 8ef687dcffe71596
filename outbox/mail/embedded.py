"""Mail in the embedded server (`outbox serve` without a broker): the quickstart really delivers.

At start, for every subdomain whose relay is this machine's sink (127.0.0.1 or localhost, port
`OUTBOX_MAIL_SINK_PORT`; every `development` subdomain is one):

- a development DKIM key is generated where mail.yaml's `key_file` says, if there is none yet
  (a subdomain whose key comes from an environment variable is left alone);
- the Maildir sink is started on that port, storing mail under `OUTBOX_MAIL_SINK_DIR`
  (`.outbox/maildir`). `outbox serve` has checked that the port is free before anything started.

DNS checks run in the background at start and then every `OUTBOX_MAIL_DNS_CHECK_INTERVAL_SECONDS`
(in production the sweep task schedules them), for the subdomains that can send from here: never a
development subdomain, nor one whose DKIM key this process does not have (its verdict would fail on
that alone). What runs is said in one log line, `mail.embedded_started`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from outbox.config import Settings
from outbox.mail.config import SINK_HOST, MailConfig, SubdomainConfig, is_loopback_host
from outbox.mail.dns.verdicts import check_and_store, checked_subdomains, run_due_checks
from outbox.mail.environment import key_base_dir, sink_dir
from outbox.mail.sending.dkim_signing import (
    DkimKeyError,
    dkim_record_name,
    generate_key,
    load_signing_key,
    write_private_key,
)
from outbox.mail.sending.sink import MaildirSink
from outbox.mail.service import MailNotConfiguredError, mail_config
from outbox.state_files import private_directory

if TYPE_CHECKING:
    from outbox.runtime import Runtime  # annotations only: the edges hand the runtime in

log = structlog.get_logger(__name__)


def local_sink_subdomains(config: MailConfig, port: int) -> list[SubdomainConfig]:
    return [s for s in config.subdomains if is_loopback_host(s.relay.host) and s.relay.port == port]


def runs_sink(config: MailConfig, settings: Settings) -> bool:
    """Whether the embedded server starts the sink: a subdomain relays to it, and it is not off."""
    return settings.mail_embedded_sink and bool(local_sink_subdomains(config, settings.mail_sink_port))


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
        # A development subdomain's record is never published: the key only signs mail for the sink.
        record = {} if sub.development else {"record": dkim_record_name(sub.dkim.selector, sub.domain)}
        log.info("mail.dkim_key_generated", subdomain=sub.domain, path=str(path), **record)
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


def _periodic_dns_checks(
    runtime: Runtime, config: MailConfig, subdomains: list[SubdomainConfig], stop: threading.Event
) -> None:
    settings = runtime.settings
    first = True
    while first or not stop.wait(settings.mail_dns_check_interval_seconds):
        try:
            if first:
                check_and_store(runtime.db, config, settings, subdomains)
            else:
                run_due_checks(runtime.db, config, settings, subdomains=subdomains)
        except Exception:
            log.exception("mail.dns_check_failed")
        first = False


def _dns_checked_here(config: MailConfig, settings: Settings) -> tuple[list[SubdomainConfig], dict[str, str]]:
    """The subdomains this server checks, and why each other non-development one is not."""
    checked: list[SubdomainConfig] = []
    skipped: dict[str, str] = {}
    for sub in checked_subdomains(config):
        try:
            load_signing_key(sub.dkim, key_base_dir(settings))
        except DkimKeyError as exc:
            skipped[sub.domain] = f"cannot send from here: {exc}"
            continue
        checked.append(sub)
    return checked, skipped


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
    if runs_sink(config, settings):
        try:
            embedded.sink = MaildirSink(sink_dir(settings), port=settings.mail_sink_port).start()
        except OSError as exc:
            # `outbox serve` checked the port; a caller of create_app may not have.
            log.warning("mail.sink_not_started", port=settings.mail_sink_port, error=str(exc))
    checked, skipped = _dns_checked_here(config, settings)
    development = [s.domain for s in config.development_subdomains()]
    log.info(
        "mail.embedded_started",
        sink=f"{SINK_HOST}:{settings.mail_sink_port}" if embedded.sink is not None else None,
        maildir=str(sink_dir(settings)) if embedded.sink is not None else None,
        development_subdomains=development,
        development="sink only, DNS checks off" if development else None,
        dns_checked=[s.domain for s in checked],
        dns_not_checked=skipped or None,
    )
    if checked:
        embedded.thread = threading.Thread(
            target=_periodic_dns_checks,
            args=(runtime, config, checked, embedded.stop_event),
            name="outbox-mail-dns",
            daemon=True,
        )
        embedded.thread.start()
    return embedded
