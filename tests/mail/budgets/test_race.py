"""500 sends race across real Celery worker processes (Redis DB 5, PostgreSQL) against an hourly
cap of 100: exactly 100 are delivered to the aiosmtpd sink, each once (Message-IDs), the other
400 are deferred to the next hour with the cap named, while a worker is restarted and Redis is
flushed mid-run. The budget lives in the database, so neither restart changes the count."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from sqlmodel import col, select

from outbox.actions.models import Action
from outbox.budgets.service import used, window_start
from outbox.config import Settings
from outbox.mail.budgets.ledger import HOUR, hour_key
from outbox.mail.models import MailDelivery
from outbox.mail.sending.dkim_signing import DkimKey, write_private_key
from outbox.mail.sending.message import message_id_for
from outbox.mail.sending.sink import MaildirSink
from outbox.runtime import Runtime
from outbox.sqltypes import utcnow
from tests.conftest import POLICIES, _truncate_postgres
from tests.mail.dns_server import LoopbackDns
from tests.mail.world import SUBDOMAIN, UNSUBSCRIBE_SECRET, message, subdomain_config, write_mail_yaml
from tests.support.agents import make_agent
from tests.support.calls import submit_call
from tests.support.processes import outbox_env, start, wait_until

pytestmark = pytest.mark.slow

REDIS_URL = "redis://127.0.0.1:6379/5"
SENDS = 500
CAP = 100


def wait_for_a_whole_window(seconds: float = 240) -> None:
    """The race must not straddle two hourly windows: start early enough in the hour."""
    now = utcnow()
    left = (window_start(now, HOUR) + HOUR - now).total_seconds()
    if left < seconds:
        time.sleep(left + 1)


class Workers:
    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        n = len(self.processes)
        process = start(
            ["worker", "--concurrency", "2", "--loglevel", "WARNING", "--hostname", f"mail{n}@%h"],
            self.env,
            self.workdir,
            self.workdir / f"worker{n}.log",
        )
        self.processes.append(process)
        return process

    def beat(self) -> subprocess.Popen[bytes]:
        process = start(["beat", "--loglevel", "WARNING"], self.env, self.workdir, self.workdir / "beat.log")
        self.processes.append(process)
        return process

    @staticmethod
    def restart_gracefully(process: subprocess.Popen[bytes]) -> None:
        """SIGTERM to Celery's main process: a warm shutdown lets running tasks finish."""
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.workdir.glob("*.log")))

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


@pytest.fixture
def race(
    postgres_server: str,
    redis_available: None,
    tmp_path: Path,
    rsa_key: DkimKey,
    start_sink: Callable[..., MaildirSink],
    dns_server: LoopbackDns,
) -> Iterator[tuple[Workers, Runtime, MaildirSink]]:
    _truncate_postgres(postgres_server)
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    client.close()
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES, policies)
    key_file = tmp_path / "keys" / "agents.key"
    write_private_key(key_file, rsa_key)
    sink = start_sink()
    write_mail_yaml(
        policies, [subdomain_config(SUBDOMAIN, key_file, sink.port, budgets={"per_hour": CAP, "per_day": 10 * CAP})]
    )
    env = outbox_env(
        OUTBOX_DATABASE_URL=postgres_server,
        OUTBOX_BROKER_URL=REDIS_URL,
        OUTBOX_POLICY_DIR=str(policies),
        OUTBOX_DATA_DIR=str(tmp_path / "data"),
        OUTBOX_UNSUBSCRIBE_SECRET=UNSUBSCRIBE_SECRET,
        OUTBOX_DNS_RESOLVER=dns_server.address,
        OUTBOX_LEASE_SECONDS="30",
        OUTBOX_SWEEP_INTERVAL_SECONDS="0.5",
        OUTBOX_REPUBLISH_AFTER_SECONDS="2",
    )
    from workers.celery_app import CeleryDispatcher, make_celery  # noqa: PLC0415 - the worker backend (Celery reads the settings at import) loads only in the tests that run it

    settings = Settings(
        database_url=postgres_server,
        broker_url=REDIS_URL,
        policy_dir=policies,
        data_dir=tmp_path / "data",
        unsubscribe_secret=UNSUBSCRIBE_SECRET,  # type: ignore[arg-type]
        policy_watch=False,
        log_json=False,
        log_level="WARNING",
    )
    celery = make_celery(REDIS_URL)
    runtime = Runtime.build(settings, CeleryDispatcher(celery))
    workers = Workers(tmp_path, env)
    yield workers, runtime, sink
    workers.stop_all()
    runtime.db.dispose()
    celery.close()


def statuses(runtime: Runtime) -> Counter[str]:
    with runtime.db.session() as session:
        return Counter(session.exec(select(Action.status)).all())


def test_500_sends_race_across_workers_against_a_cap_of_100(race: tuple[Workers, Runtime, MaildirSink]) -> None:
    workers, runtime, sink = race
    wait_for_a_whole_window()
    key = make_agent(runtime.db, "race-bot", ["mailer"])
    # Every wake-up is in Redis before any worker runs, so the flush below loses most of them.
    ids = [
        submit_call(runtime, key, "email.send", message(f"r{n}@example.net", subject=f"Race {n}")) for n in range(SENDS)
    ]
    doomed = workers.start()
    workers.start()
    workers.beat()

    # Mid-run: flush the broker (the sweeper re-publishes from the database), then restart a
    # worker (a warm shutdown: it finishes what it runs).
    assert wait_until(lambda: len(sink.messages()) >= 10, 120, interval=0.05), workers.logs()
    flushed = redis.Redis.from_url(REDIS_URL)
    flushed.flushdb()
    flushed.close()
    at_flush = statuses(runtime)
    assert at_flush["succeeded"] + at_flush["deferred"] < SENDS / 2  # really mid-run
    workers.restart_gracefully(doomed)
    workers.start()

    def settled() -> bool:
        counts = statuses(runtime)
        return counts["succeeded"] + counts["deferred"] == SENDS

    assert wait_until(settled, 240, interval=0.5), (statuses(runtime), workers.logs())

    counts = statuses(runtime)
    assert (counts["succeeded"], counts["deferred"]) == (CAP, SENDS - CAP)
    delivered = sink.messages()
    message_ids = [m.message_id for m in delivered]
    assert len(delivered) == CAP
    assert len(set(message_ids)) == CAP  # none twice
    with runtime.db.session() as session:
        succeeded = session.exec(select(Action.id).where(col(Action.status) == "succeeded")).all()
        deferred = session.exec(select(Action).where(col(Action.status) == "deferred")).all()
        assert used(session, hour_key(SUBDOMAIN), HOUR) == CAP
        assert len(session.exec(select(MailDelivery)).all()) == CAP
    assert set(message_ids) == {message_id_for(a, SUBDOMAIN) for a in succeeded}
    next_hour = window_start(utcnow(), HOUR) + HOUR
    assert {a.not_before for a in deferred} == {next_hour}
    assert all(
        f"the hourly cap of {SUBDOMAIN} ({CAP} per hour) is used up" in (a.status_reason or "") for a in deferred
    )
    assert all(a.attempts == 0 for a in deferred)
    assert set(ids) == set(succeeded) | {a.id for a in deferred}
    assert next_hour - utcnow() < timedelta(hours=1)
