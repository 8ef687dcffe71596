"""DNS verdicts block a subdomain for every process; status (CLI, API, /metrics) shows usage
against every cap, the warm-up day, breaker, pause and DNS state; DKIM keys from the CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlmodel import col, select

from outbox import metrics
from outbox.actions.models import Action
from outbox.audit.models import AuditEvent
from outbox.mail.config import DkimConfig
from outbox.mail.dns.verdicts import dns_verdict
from outbox.mail.sending.dkim_signing import dkim_record_name, load_signing_key
from outbox.mail.service import dns_checks_due, mail_config, run_due_dns_checks
from outbox.sqltypes import utcnow
from tests.mail.world import (
    SUBDOMAIN,
    MailCli,
    MailWorld,
    admin_headers,
    message,
    publish_dns,
    subdomain_config,
    write_mail_yaml,
)
from tests.support.agents import make_agent
from tests.support.calls import load


def test_a_subdomain_failing_its_dns_check_is_blocked_until_a_check_passes(
    world: MailWorld, cli: MailCli, api: Callable[[], TestClient]
) -> None:
    world.configure(enforce_dns_checks=True)  # nothing is published yet
    cli.use(world.rt)

    action_id, status = world.send()

    assert status == "deferred"
    reason = load(world.rt, action_id).status_reason or ""
    assert f"{SUBDOMAIN} is blocked from sending: its DNS check failed (SPF fail: no SPF record" in reason
    assert world.sink.messages() == []
    client = api()
    [sub] = client.get("/v1/admin/mail", headers=admin_headers()).json()["subdomains"]
    assert (sub["sending"], sub["dns"]["ok"], sub["dns"]["blocked"]) == ("blocked", False, True)
    failing = cli("mail", "check-dns", ok=False)
    assert failing.exit_code == 1
    assert "FAIL: blocked from sending" in cli.printed(failing)

    publish_dns(world.dns, world.key)
    table = cli.printed(cli("mail", "check-dns"))

    assert f"{SUBDOMAIN}  ok" in table
    assert "dkim   pass" in table and "key record matches the private key" in table
    [sub] = client.get("/v1/admin/mail", headers=admin_headers()).json()["subdomains"]
    assert (sub["sending"], sub["dns"]["ok"]) == ("ok", True)
    with world.rt.db.session() as session:
        session.execute(update(Action).where(col(Action.id) == action_id).values(status="queued", not_before=None))
    assert world.run(action_id) == "succeeded"
    with world.rt.db.session() as session:
        kinds = [e for e in session.exec(select(AuditEvent.event_type)).all() if e.startswith("mail.dns")]
    assert kinds == ["mail.dns_failed", "mail.dns_passed"]


def test_a_failing_subdomain_that_does_not_enforce_its_checks_still_sends(world: MailWorld, cli: MailCli) -> None:
    world.configure()  # enforce_dns_checks: false, nothing published
    cli.use(world.rt)

    assert cli("mail", "check-dns", ok=False).exit_code == 0
    assert world.send()[1] == "succeeded"


def test_periodic_checks_are_claimed_once_per_interval_across_processes(world: MailWorld) -> None:
    publish_dns(world.dns, world.key)
    world.configure(enforce_dns_checks=True, settings={"mail_dns_check_interval_seconds": 600})
    second_process = world.build_runtime(mail_dns_check_interval_seconds=600)

    assert dns_checks_due(world.rt)
    assert run_due_dns_checks(world.rt) == 1
    assert run_due_dns_checks(second_process) == 0
    assert not dns_checks_due(second_process)
    config = mail_config(second_process)
    verdict = dns_verdict(second_process.db, config, second_process.settings, config.subdomains[0])
    assert (verdict.ok, verdict.blocks) == (True, False)


def test_status_shows_usage_against_every_cap_and_the_warm_up_day(
    world: MailWorld, cli: MailCli, api: Callable[[], TestClient]
) -> None:
    today = utcnow().date()
    world.allow_recipients_at("gmail.com")
    world.configure(
        warm_up={"start_date": today.isoformat(), "initial_daily_cap": 10, "daily_growth_factor": 2.0},
        recipient_domain_hourly={"gmail.com": 5},
        per_recipient_daily=1,
        per_agent_daily=50,
    )
    world.send(message(["a@gmail.com", "b@example.net"]))
    cli.use(world.rt)

    body = api().get("/v1/admin/mail", headers=admin_headers()).json()
    [sub] = body["subdomains"]
    caps = {c["kind"]: (c["used"], c["limit"]) for c in sub["caps"]}
    assert caps == {"hour": (2, 1000), "day": (2, 10)}
    assert sub["warm_up"] == {"start_date": today.isoformat(), "day": 1, "daily_cap_today": 10, "full_daily_cap": 10000}
    assert [(c["name"], c["used"], c["limit"]) for c in sub["recipient_domains"]] == [
        ("hourly cap for recipients at gmail.com", 1, 5)
    ]
    assert [(c["name"], c["used"]) for c in sub["agents"]] == [("daily cap of agent mailer-bot", 2)]
    assert sub["recipients_at_daily_cap"] == 2
    assert sub["breaker"]["sent"] == 2 and sub["breaker"]["tripped"] is False

    text = cli.printed(cli("mail", "status"))
    assert f"{SUBDOMAIN}  [ok]" in text
    assert "warm-up     day 1" in text
    assert "2 / 10     warm-up daily cap" in text
    as_json = json.loads(cli.printed(cli("mail", "status", "--json")))
    assert as_json["subdomains"][0]["caps"] == sub["caps"]

    exposition = metrics.render_metrics(world.rt).decode()
    assert f'outbox_mail_budget_used{{cap="day",subdomain="{SUBDOMAIN}"}} 2.0' in exposition
    assert f'outbox_mail_budget_limit{{cap="day",subdomain="{SUBDOMAIN}"}} 10.0' in exposition
    assert f'outbox_mail_paused{{subdomain="{SUBDOMAIN}"}} 0.0' in exposition


def test_dkim_keygen_writes_the_key_where_mail_yaml_says_and_prints_the_record(
    world: MailWorld, cli: MailCli, tmp_path: Path
) -> None:
    keys = tmp_path / "keydir"
    config = subdomain_config(SUBDOMAIN, Path("dkim/new.key"), world.sink.port)
    write_mail_yaml(world.policy_dir, [config])
    world.runtime = world.build_runtime(dkim_key_dir=keys)
    cli.use(world.rt)
    cli.env.setenv("OUTBOX_DKIM_KEY_DIR", str(keys))

    printed = cli.printed(cli("mail", "dkim-keygen", "--subdomain", SUBDOMAIN))
    again = cli("mail", "dkim-keygen", "--subdomain", SUBDOMAIN, ok=False)
    record = cli.printed(cli("mail", "dkim-record"))

    key = load_signing_key(DkimConfig(selector="sel2026", key_file=keys / "dkim/new.key"))
    assert (keys / "dkim/new.key").stat().st_mode & 0o777 == 0o600
    expected = f'{dkim_record_name("sel2026", SUBDOMAIN)}. IN TXT "{key.txt_record()[:255]}"'
    assert printed.startswith(expected)
    assert record == printed
    assert again.exit_code == 1
    world.agent_key = make_agent(world.rt.db, "k-bot", ["mailer"])
    assert world.send()[1] == "succeeded"  # the new key signs
