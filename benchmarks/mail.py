"""Signed sends per second through the outbox against the plain loop a user would write, side by side.

    python benchmarks/mail.py [--database sqlite|postgresql|both] [--messages 300] [--rounds 3]
                              [--concurrency 16] [--threads 4]

One SMTP sink (`outbox mail sink`, aiosmtpd writing a Maildir, its own process so that neither side
shares a GIL with it) receives every run. For each database (both by default):

- **Plain loop**: what a user writes without the outbox. Build the message (the same builder),
  `dkim.sign(message, selector, domain, pem)` with the PEM bytes per message, as dkimpy is used
  (pure-Python RSA, the key parsed on every call), and `aiosmtplib` `sendmail` over one reused
  connection, one message after the other.
- **Outbox**: `outbox serve` (uvicorn, embedded workers) with the shipped policies and its
  mail.yaml pointed at the sink, budgets set high but still charged. Each message is a
  `POST /v1/actions` for `email.send`: authenticate, idempotency, policy, action row, audit; then a
  worker builds and DKIM-signs the message, verifies its own signature, passes the gate (kill
  switches, DNS verdict, suppression list, every budget cap in one reservation), delivers with
  aiosmtplib, and records each recipient, the outcome and its audit events. The clock runs from the
  first POST to the moment the last message is in the sink's Maildir.

For each database the two alternate, plain then outbox, for `--rounds` rounds after a warm-up, so
that both see the same conditions (a shared machine's load comes and goes); each figure is the
median of its rounds, with the slowest and fastest round beside it. Printed: messages/s for both
and the ratio outbox/plain of the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosmtplib
import dkim
import httpx
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _servers import create_database, drop_database, free_port, wait_ready  # noqa: E402

from outbox.mail.sending.dkim_signing import generate_key, write_private_key  # noqa: E402
from outbox.mail.sending.message import EmailSendArgs, build_mime, message_id_for  # noqa: E402

SUBDOMAIN = "agents.mail.example.com"
SELECTOR = "agents2026"
WARMUP_MESSAGES = 30


@dataclass(frozen=True)
class Bench:
    """What every run shares: the working directory, the sink, the key and the load's shape."""

    workdir: Path
    maildir: Path
    sink_port: int
    key_file: Path
    messages: int
    rounds: int
    concurrency: int
    threads: int


@dataclass(frozen=True)
class Result:
    database: str
    plain: list[float]
    outbox: list[float]

    @property
    def ratio(self) -> float:
        return statistics.median(self.outbox) / statistics.median(self.plain)


def stored(maildir: Path) -> int:
    return sum(len(os.listdir(maildir / sub)) for sub in ("new", "cur") if (maildir / sub).is_dir())


def message_args(n: int, run: str) -> dict[str, Any]:
    return {
        "from": f"Reports <reports@{SUBDOMAIN}>",
        "to": [f"reader{n}@example.net"],
        "subject": f"Weekly report {run}-{n}",
        "text": "Hello,\n\nyour weekly report is ready: 12 items, 3 need your attention.\n\nReports\n",
        "category": "transactional",
    }


def wait_for_mail(maildir: Path, expected: int) -> None:
    deadline = time.monotonic() + 600
    while stored(maildir) < expected:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {stored(maildir)} of {expected} messages arrived")
        time.sleep(0.005)


# --- The plain loop -------------------------------------------------------------------------


async def plain_loop(bench: Bench, count: int, run: str) -> float:
    """dkimpy and aiosmtplib as documented: `dkim.sign` with the PEM per message, one connection."""
    pem = bench.key_file.read_bytes()
    messages = [EmailSendArgs.model_validate(message_args(n, run)) for n in range(count)]
    before = stored(bench.maildir)
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=bench.sink_port, local_hostname=SUBDOMAIN, start_tls=False)
    started = time.perf_counter()
    await smtp.connect()
    for n, args in enumerate(messages):
        mime = build_mime(args, message_id=message_id_for(f"plain-{run}-{n}", SUBDOMAIN), date=datetime.now(UTC))
        signature = dkim.sign(mime, SELECTOR.encode(), SUBDOMAIN.encode(), pem, canonicalize=(b"relaxed", b"relaxed"))
        await smtp.sendmail(f"bounces@{SUBDOMAIN}", args.recipients(), signature + mime)
    await smtp.quit()
    wait_for_mail(bench.maildir, before + count)
    return count / (time.perf_counter() - started)


# --- The outbox -----------------------------------------------------------------------------


def prepare_policies(root: Path, bench: Bench) -> None:
    """The shipped policies, the subdomain relayed to the sink and out of the way of the clock."""
    shutil.copytree(REPO / "policies", root / "policies")
    path = root / "policies" / "mail.yaml"
    config = yaml.safe_load(path.read_text())
    for sub in config["subdomains"]:
        if sub["domain"] == SUBDOMAIN:
            sub["relay"]["port"] = bench.sink_port
            sub["dkim"]["selector"] = SELECTOR
            sub["dkim"]["key_file"] = str(bench.key_file)
            sub["budgets"] = {"per_hour": 10_000_000, "per_day": 10_000_000}
            for option in ("send_window", "warm_up", "per_recipient_daily", "per_agent_daily"):
                sub.pop(option, None)
            sub.pop("recipient_domain_hourly", None)
            sub["default_recipient_domain_hourly"] = None
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def server_environment(bench: Bench) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOX_")}
    env.update(
        {
            "OUTBOX_LOG_LEVEL": "WARNING",
            "OUTBOX_POLICY_WATCH": "false",
            "OUTBOX_EMBEDDED_WORKER_THREADS": str(bench.threads),
            "OUTBOX_MAIL_EMBEDDED_SINK": "false",
            "OUTBOX_DNS_RESOLVER": "127.0.0.1:9",  # no DNS traffic: the subdomain does not enforce checks
            "OUTBOX_DNS_TIMEOUT_SECONDS": "0.2",
            "PYTHONPATH": str(REPO),
        }
    )
    return env


def outbox_cli(*args: str, env: dict[str, str], cwd: Path) -> str:
    command = [sys.executable, "-m", "outbox.cli.main", *args]
    done = subprocess.run(command, env=env, cwd=cwd, check=True, capture_output=True, text=True)
    return done.stdout.strip()


@contextlib.contextmanager
def running_outbox(bench: Bench, database: str) -> Iterator[tuple[str, str]]:
    """`outbox serve` on a fresh database; yields its URL and a `mailer` agent's API key."""
    root = bench.workdir / database
    root.mkdir()
    prepare_policies(root, bench)
    env = server_environment(bench)
    database_url = None
    if database == "postgresql":
        database_url = create_database("outbox_mail_bench")
        env["OUTBOX_DATABASE_URL"] = database_url
        outbox_cli("db", "upgrade", env=env, cwd=root)
    server = None
    try:
        api_key = outbox_cli("agents", "create", "bench", "--role", "mailer", env=env, cwd=root)
        port = free_port()
        serve = [sys.executable, "-m", "outbox.cli.main", "serve", "--port", str(port)]
        server = subprocess.Popen(serve, env=env, cwd=root)
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, server)
        yield url, api_key
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        if database_url is not None:
            drop_database(database_url)


async def submit_all(url: str, api_key: str, count: int, concurrency: int, run: str) -> int:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(count):
        queue.put_nowait(n)
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def one_client() -> None:
            nonlocal errors
            while not queue.empty():
                n = queue.get_nowait()
                response = await client.post(
                    "/v1/actions",
                    json={"tool": "email.send", "args": message_args(n, run)},
                    headers={"Authorization": f"Bearer {api_key}", "Idempotency-Key": f"{run}-{n}"},
                )
                if response.status_code != 202:
                    errors += 1
                    print(f"  submit {n}: {response.status_code} {response.text[:200]}", file=sys.stderr)

        await asyncio.gather(*(one_client() for _ in range(concurrency)))
    return errors


def outbox_run(bench: Bench, url: str, api_key: str, count: int, run: str) -> float:
    before = stored(bench.maildir)
    started = time.perf_counter()
    errors = asyncio.run(submit_all(url, api_key, count, bench.concurrency, run))
    if errors:
        raise SystemExit(f"{errors} submissions failed")
    wait_for_mail(bench.maildir, before + count)
    return count / (time.perf_counter() - started)


def measure(bench: Bench, database: str) -> Result:
    with running_outbox(bench, database) as (url, api_key):
        warmup = min(WARMUP_MESSAGES, bench.messages)
        outbox_run(bench, url, api_key, warmup, f"{database}-warmup")
        asyncio.run(plain_loop(bench, warmup, f"{database}-warmup"))
        plain: list[float] = []
        gated: list[float] = []
        for n in range(bench.rounds):
            plain.append(asyncio.run(plain_loop(bench, bench.messages, f"{database}-plain{n}")))
            gated.append(outbox_run(bench, url, api_key, bench.messages, f"{database}-outbox{n}"))
    return Result(database, plain, gated)


# --- One command ----------------------------------------------------------------------------


@contextlib.contextmanager
def running_sink(maildir: Path, port: int) -> Iterator[None]:
    command = [sys.executable, "-m", "outbox.cli.main", "mail", "sink", "--port", str(port), "--dir", str(maildir)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OUTBOX_LOG_LEVEL": "WARNING"}
    sink = subprocess.Popen(command, env=env, cwd=maildir.parent, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            with contextlib.suppress(OSError):
                asyncio.run(_probe_smtp(port))
                break
            time.sleep(0.05)
        else:
            raise SystemExit("the SMTP sink did not start")
        yield
    finally:
        sink.terminate()
        sink.wait(timeout=30)


async def _probe_smtp(port: int) -> None:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=1)
    await smtp.connect()
    await smtp.quit()


def _figure(rates: list[float]) -> str:
    """The median messages/s, with the slowest and fastest round."""
    return f"{statistics.median(rates):6.1f} msg/s ({min(rates):.0f}-{max(rates):.0f})"


def report(bench: Bench, results: list[Result]) -> None:
    print(
        f"{bench.messages} messages per round, {bench.rounds} rounds (median, slowest-fastest); outbox: "
        f"{bench.concurrency} submitting clients, {bench.threads} embedded worker threads; RSA-2048 DKIM; "
        "one aiosmtpd Maildir sink (own process)\n"
    )
    print(f"{'database':<12} {'plain dkimpy + aiosmtplib':<26} {'outbox pipeline':<26} outbox/plain")
    for result in results:
        print(f"{result.database:<12} {_figure(result.plain):<26} {_figure(result.outbox):<26} {result.ratio:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--messages", type=int, default=300, help="messages per round and side")
    parser.add_argument("--rounds", type=int, default=3, help="alternating plain/outbox rounds per database")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent submitting clients")
    parser.add_argument("--threads", type=int, default=4, help="embedded worker threads")
    args = parser.parse_args()
    databases = ["sqlite", "postgresql"] if args.database == "both" else [args.database]

    workdir = Path(tempfile.mkdtemp(prefix="outbox-mail-bench-"))
    bench = Bench(
        workdir=workdir,
        maildir=workdir / "maildir",
        sink_port=free_port(),
        key_file=workdir / "dkim" / "agents.key",
        messages=args.messages,
        rounds=args.rounds,
        concurrency=args.concurrency,
        threads=args.threads,
    )
    write_private_key(bench.key_file, generate_key("rsa-sha256"))
    try:
        with running_sink(bench.maildir, bench.sink_port):
            results = [measure(bench, database) for database in databases]
        report(bench, results)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
