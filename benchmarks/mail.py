"""End-to-end signed sends per second through the outbox, against a plain sign-and-send loop.

    python benchmarks/mail.py [--messages 300] [--concurrency 16] [--threads 4] [--database sqlite|postgresql]

One aiosmtpd Maildir sink, started by this script, receives both runs.

- **Pipeline**: `outbox serve` (uvicorn, embedded workers) with the shipped policies, its mail.yaml
  pointed at the sink with budgets out of the way. Each message is a `POST /v1/actions` for
  `email.send` by an agent with the `mailer` role: authenticate, validate, idempotency, Casbin,
  commit and audit; then a worker claims it, builds and DKIM-signs the message, verifies its own
  signature, asks the gate (kill switches, DNS verdict, suppression list, every budget cap in one
  reservation), delivers with aiosmtplib, records each recipient and the outcome. The clock runs
  from the first POST to the moment the last message is in the sink's Maildir.
- **Plain loop**: the same messages built with the same code, signed with dkimpy with the same
  key, sent with aiosmtplib over one reused connection, one after the other.

Printed: sends per second for both, and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _servers import create_database, drop_database, free_port, wait_ready  # noqa: E402

from outbox.mail.config import DkimConfig  # noqa: E402
from outbox.mail.sending.dkim_signing import generate_key, load_signing_key, sign_message, write_private_key  # noqa: E402
from outbox.mail.sending.message import EmailSendArgs, build_mime, message_id_for  # noqa: E402
from outbox.mail.sending.sink import MaildirSink  # noqa: E402

SUBDOMAIN = "agents.mail.example.com"
SELECTOR = "agents2026"


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


def prepare_policies(workdir: Path, sink_port: int, key_file: Path) -> None:
    shutil.copytree(REPO / "policies", workdir / "policies")
    path = workdir / "policies" / "mail.yaml"
    config = yaml.safe_load(path.read_text())
    for sub in config["subdomains"]:
        if sub["domain"] == SUBDOMAIN:
            sub["relay"]["port"] = sink_port
            sub["dkim"]["key_file"] = str(key_file)
            sub["budgets"] = {"per_hour": 10_000_000, "per_day": 10_000_000}
            for option in ("send_window", "warm_up", "per_recipient_daily", "per_agent_daily"):
                sub.pop(option, None)
            sub.pop("recipient_domain_hourly", None)
            sub["default_recipient_domain_hourly"] = None
    path.write_text(yaml.safe_dump(config, sort_keys=False))


async def submit_all(url: str, key: str, count: int, concurrency: int, run: str) -> int:
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
                    headers={"Authorization": f"Bearer {key}", "Idempotency-Key": f"{run}-{n}"},
                )
                if response.status_code != 202:
                    errors += 1
                    print(f"  submit {n}: {response.status_code} {response.text[:200]}", file=sys.stderr)

        await asyncio.gather(*(one_client() for _ in range(concurrency)))
    return errors


def pipeline_run(url: str, key: str, maildir: Path, count: int, concurrency: int, run: str) -> float:
    before = stored(maildir)
    started = time.perf_counter()
    errors = asyncio.run(submit_all(url, key, count, concurrency, run))
    if errors:
        raise SystemExit(f"{errors} submissions failed")
    deadline = time.monotonic() + 600
    while stored(maildir) < before + count:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {stored(maildir) - before} of {count} messages arrived")
        time.sleep(0.01)
    return count / (time.perf_counter() - started)


async def plain_loop(key_file: Path, sink_port: int, count: int, run: str) -> float:
    key = load_signing_key(DkimConfig(selector=SELECTOR, key_file=key_file))
    messages = [EmailSendArgs.model_validate(message_args(n, run)) for n in range(count)]
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=sink_port, local_hostname=SUBDOMAIN, start_tls=False)
    started = time.perf_counter()
    await smtp.connect()
    for n, args in enumerate(messages):
        mime = build_mime(args, message_id=message_id_for(f"plain-{run}-{n}", SUBDOMAIN), date=datetime.now(UTC))
        signed = sign_message(mime, key=key, selector=SELECTOR, domain=SUBDOMAIN)
        await smtp.sendmail(f"bounces@{SUBDOMAIN}", args.recipients(), signed)
    await smtp.quit()
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=300, help="messages per run")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent submitting clients")
    parser.add_argument("--threads", type=int, default=4, help="embedded worker threads")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="outbox-mail-bench-"))
    maildir = workdir / "maildir"
    sink = MaildirSink(maildir, port=free_port()).start()
    key_file = workdir / "dkim" / "agents.key"
    write_private_key(key_file, generate_key("rsa-sha256"))
    prepare_policies(workdir, sink.port, key_file)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOX_")}
    env.update(
        {
            "OUTBOX_LOG_LEVEL": "WARNING",
            "OUTBOX_POLICY_WATCH": "false",
            "OUTBOX_EMBEDDED_WORKER_THREADS": str(args.threads),
            "OUTBOX_MAIL_EMBEDDED_SINK": "false",
            "OUTBOX_DNS_RESOLVER": "127.0.0.1:9",  # no DNS traffic: the subdomain does not enforce checks
            "OUTBOX_DNS_TIMEOUT_SECONDS": "0.2",
            "PYTHONPATH": str(REPO),
        }
    )
    database_url = None
    if args.database == "postgresql":
        database_url = create_database("outbox_mail_bench")
        env["OUTBOX_DATABASE_URL"] = database_url
        upgrade = [sys.executable, "-m", "outbox.cli.main", "db", "upgrade"]
        subprocess.run(upgrade, env=env, cwd=workdir, check=True, capture_output=True)
    key = subprocess.run(
        [sys.executable, "-m", "outbox.cli.main", "agents", "create", "bench", "--role", "mailer"],
        env=env,
        cwd=workdir,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()

    port = free_port()
    serve = [sys.executable, "-m", "outbox.cli.main", "serve", "--port", str(port)]
    server = subprocess.Popen(serve, env=env, cwd=workdir)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, server)
        print(
            f"database: {args.database}; {args.messages} messages per run; {args.concurrency} submitting clients; "
            f"{args.threads} embedded worker threads; RSA-2048 DKIM; one local aiosmtpd sink\n"
        )
        pipeline_run(url, key, maildir, min(30, args.messages), args.concurrency, "warmup")
        asyncio.run(plain_loop(key_file, sink.port, min(30, args.messages), "warmup"))
        plain = asyncio.run(plain_loop(key_file, sink.port, args.messages, "plain"))
        gated = pipeline_run(url, key, maildir, args.messages, args.concurrency, "outbox")
        print(f"{'plain loop (dkimpy + aiosmtplib)':<40} {plain:>8.1f} sends/s")
        print(f"{'outbox (submit -> delivered at sink)':<40} {gated:>8.1f} sends/s")
        print()
        print(f"ratio outbox/plain: {gated / plain:.3f}  ({plain / gated:.1f}x slower)")
    finally:
        server.terminate()
        server.wait(timeout=30)
        sink.stop()
        if database_url is not None:
            drop_database(database_url)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
