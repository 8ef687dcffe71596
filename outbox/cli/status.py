"""`outbox status`: the first thing an operator runs. Queue depth by state, the workers seen,
the policy version, and mail subdomain health, from the database (the truth every process shares)
and, when a broker is configured, a Celery ping.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import typer

from outbox.config import Settings, get_settings

if TYPE_CHECKING:
    from outbox.db import Database
    from outbox.metrics import QueueState
    from outbox.runtime import Runtime

# Workers that recorded a transition within this window count as recently active.
RECENT_WINDOW = timedelta(minutes=10)
# How far back in the audit log to look for them (by id, which is indexed).
RECENT_EVENTS = 5000


@dataclass
class StatusReport:
    database: str
    broker: str | None
    queue: dict[str, Any] | None = None
    workers: dict[str, Any] = field(default_factory=dict)
    policy: dict[str, Any] = field(default_factory=dict)
    mail: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def mask_url(url: str) -> str:
    """A connection URL without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _queue_section(state: QueueState) -> dict[str, Any]:
    return {
        "by_status": state.by_status,
        "due": state.due,
        "lag_seconds": round(state.lag_seconds, 3),
        "leases_expired": state.leases_expired,
        "awaiting_approval": state.awaiting_approval,
        "oldest_approval_seconds": round(state.oldest_approval_seconds, 3),
    }


def _recent_workers(db: Database, now: datetime) -> list[str]:
    """`host:pid` of workers that moved an action recently, from the tail of the audit log."""
    from sqlalchemy import func
    from sqlmodel import col, select

    from outbox.audit.models import AuditEvent

    with db.session() as session:
        last = session.execute(select(func.max(col(AuditEvent.id)))).scalar_one()
        if last is None:
            return []
        rows = session.execute(
            select(col(AuditEvent.actor), col(AuditEvent.created_at)).where(
                (col(AuditEvent.id) > last - RECENT_EVENTS) & col(AuditEvent.actor).startswith("worker:")
            )
        ).all()
    seen = {
        ":".join(actor.removeprefix("worker:").split(":")[:2])
        for actor, created_at in rows
        if created_at >= now - RECENT_WINDOW
    }
    return sorted(seen)


def _celery_ping(broker_url: str, timeout: float) -> dict[str, Any]:
    from workers.celery_app import make_celery

    celery = make_celery(broker_url)
    try:
        with warnings.catch_warnings():
            # Two workers sharing a node name answer as one; that is reported, not raised.
            warnings.simplefilter("ignore")
            with celery.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, timeout=max(int(timeout), 1))
                replies = celery.control.ping(timeout=timeout, connection=connection)
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}".splitlines()[0], "nodes": []}
    finally:
        celery.close()
    nodes = sorted(name for reply in replies or [] for name in reply)
    return {"ok": True, "nodes": nodes}


def _mail_section(runtime: Runtime) -> dict[str, Any]:
    try:
        import outbox.mail  # noqa: F401 - only to learn whether the mail module is installed
    except ImportError:
        return {"available": False, "note": "the mail module (outbox.mail) is not installed"}
    from outbox.metrics import BudgetUse, SubdomainHealth, read_registered

    subdomains: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    for result in read_registered(runtime):
        if result.error is not None:
            errors[result.name] = result.error
        for reading in result.readings:
            if isinstance(reading, SubdomainHealth):
                entry = subdomains.setdefault(reading.subdomain, {"budgets": {}})
                entry.update(
                    breaker_tripped=reading.breaker_tripped,
                    paused=reading.paused,
                    dns_ok=reading.dns_ok,
                    detail=reading.detail,
                )
            elif isinstance(reading, BudgetUse):
                entry = subdomains.setdefault(reading.subdomain, {"budgets": {}})
                entry["budgets"][reading.cap] = {"used": reading.used, "limit": reading.limit}
    section: dict[str, Any] = {"available": True, "subdomains": subdomains}
    if errors:
        section["errors"] = errors
    if not subdomains and not errors:
        section["note"] = (
            "the mail module reports no subdomain health (it publishes it through outbox.metrics.register_collector)"
        )
    return section


def _api_policy(api: str, timeout: float, admin_token: str | None) -> dict[str, Any]:
    import httpx

    # GET /v1/policy takes a key; the operator running `outbox status` holds the admin token.
    headers = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}
    try:
        response = httpx.get(api.rstrip("/") + "/v1/policy", timeout=timeout, headers=headers)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    return {"version": body.get("version"), "git_commit": body.get("git_commit"), "loaded_at": body.get("loaded_at")}


def collect_status(settings: Settings, *, api: str | None = None, timeout: float = 2.0) -> StatusReport:
    from outbox.db import Database
    from outbox.sqltypes import utcnow

    report = StatusReport(
        database=mask_url(settings.database_url),
        broker=mask_url(settings.broker_url) if settings.broker_url else None,
    )
    now = utcnow()
    db = Database(settings)
    try:
        _check_queue(report, db, now)
        _check_broker(report, settings, timeout)
        _check_policy(report, settings)
        if api:
            _check_api(report, settings, api, timeout)
    finally:
        db.dispose()
    return report


def _check_queue(report: StatusReport, db: Database, now: datetime) -> None:
    """The queue and the workers holding leases, as the database sees them."""
    from outbox.execution.queue_state import read_queue_state

    try:
        state = read_queue_state(db, now)
        report.queue = _queue_section(state)
        report.workers["running_lease_owners"] = state.running_owners
        report.workers["recently_active"] = _recent_workers(db, now)
        if state.leases_expired:
            report.problems.append(
                f"{state.leases_expired} running action(s) have an expired lease: is the sweeper (outbox beat) running?"
            )
    except Exception as exc:
        report.problems.append(f"database unreachable or not migrated ({type(exc).__name__}); run `outbox db upgrade`")


def _check_broker(report: StatusReport, settings: Settings, timeout: float) -> None:
    """Whether a Celery worker answers through the broker (embedded mode has none to ask)."""
    if settings.broker_url:
        ping = _celery_ping(settings.broker_url, timeout)
        report.workers["celery_ping"] = ping
        if not ping["ok"]:
            report.problems.append(f"broker unreachable: {ping['error']}")
        elif not ping["nodes"]:
            report.problems.append("no Celery worker answered the ping")
    else:
        report.workers["celery_ping"] = {"ok": None, "note": "embedded mode: workers run inside `outbox serve`"}


def _check_policy(report: StatusReport, settings: Settings) -> None:
    """The local policy directory's version, and mail's readiness under it."""
    from outbox.runtime import Runtime

    try:
        runtime = Runtime.build(settings)
    except Exception as exc:
        report.policy = {"directory": str(settings.policy_dir), "error": str(exc)}
        report.problems.append(f"the policy directory does not load: {exc}")
        report.mail = {"available": None, "note": "not checked: the policy does not load"}
    else:
        try:
            snapshot = runtime.policy.current.snapshot
            report.policy = {
                "directory": str(snapshot.directory),
                "version": snapshot.version,
                "git_commit": snapshot.git_commit,
            }
            report.mail = _mail_section(runtime)
        finally:
            runtime.db.dispose()


def _check_api(report: StatusReport, settings: Settings, api: str, timeout: float) -> None:
    """The policy version the API at `api` serves, against the local one."""
    token = settings.admin_token.get_secret_value() if settings.admin_token else None
    served = _api_policy(api, timeout, token)
    report.policy["api"] = {"url": api, **served}
    if "error" in served:
        report.problems.append(f"the API at {api} did not answer: {served['error']}")
    elif report.policy.get("version") and served.get("version") != report.policy["version"]:
        report.problems.append(
            f"policy skew: the API serves {served.get('version')}, the local directory is {report.policy['version']}"
        )


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def render_text(report: StatusReport) -> str:
    lines = [f"database  {report.database}", f"broker    {report.broker or '(none: embedded mode)'}", ""]
    lines.append("queue")
    if report.queue is None:
        lines.append("  (unavailable)")
    else:
        q = report.queue
        lines.append(
            f"  due now {q['due']}, oldest waiting {_age(q['lag_seconds'])}; "
            f"awaiting approval {q['awaiting_approval']}"
            + (f" (oldest {_age(q['oldest_approval_seconds'])})" if q["awaiting_approval"] else "")
        )
        for status, count in q["by_status"].items():
            lines.append(f"  {status:<18} {count:>8}")
    lines += ["", "workers"]
    ping = report.workers.get("celery_ping", {})
    if ping.get("ok") is None:
        lines.append(f"  {ping.get('note', '')}")
    elif ping.get("ok"):
        nodes = ping["nodes"]
        lines.append(f"  celery ping: {len(nodes)} answered" + (f" ({', '.join(nodes)})" if nodes else ""))
    else:
        lines.append(f"  celery ping: failed ({ping.get('error')})")
    if "running_lease_owners" in report.workers:
        owners = report.workers["running_lease_owners"]
        lines.append(f"  holding running actions: {len(owners)}" + (f" ({', '.join(owners)})" if owners else ""))
        recent = report.workers["recently_active"]
        lines.append(
            f"  active in the last {int(RECENT_WINDOW.total_seconds() // 60)} min: {len(recent)}"
            + (f" ({', '.join(recent)})" if recent else "")
        )
    lines += ["", "policy"]
    if "error" in report.policy:
        lines.append(f"  {report.policy['directory']}: does not load: {report.policy['error']}")
    else:
        commit = report.policy.get("git_commit")
        version = f"{report.policy.get('version')}" + (f" (git {commit})" if commit else "")
        lines.append(f"  {report.policy.get('directory')}: {version}")
    if "api" in report.policy:
        served = report.policy["api"]
        lines.append(f"  {served['url']}: {served.get('version') or served.get('error')}")
    lines += ["", "mail subdomains"]
    mail = report.mail
    if not mail.get("subdomains"):
        lines.append(f"  {mail.get('note', 'none reported')}")
    for name, entry in sorted(mail.get("subdomains", {}).items()):
        state = "BREAKER TRIPPED" if entry.get("breaker_tripped") else "breaker ok"
        state += ", PAUSED" if entry.get("paused") else ", sending"
        if entry.get("dns_ok") is not None:
            state += ", dns ok" if entry["dns_ok"] else ", DNS FAILING"
        budgets = ", ".join(f"{cap} {b['used']}/{b['limit']}" for cap, b in sorted(entry["budgets"].items()))
        detail = f" — {entry['detail']}" if entry.get("detail") else ""
        lines.append(f"  {name}: {state}" + (f"; {budgets}" if budgets else "") + detail)
    for name, error in mail.get("errors", {}).items():
        lines.append(f"  collector {name} failed: {error}")
    if report.problems:
        lines += ["", "problems"]
        lines += [f"  - {problem}" for problem in report.problems]
    return "\n".join(lines)


def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
    api: Annotated[
        str | None,
        typer.Option(help="Also ask a running API which policy version it serves, e.g. http://127.0.0.1:8000."),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the broker ping and the API.")] = 2.0,
) -> None:
    """Queue depth by state, workers seen, policy version, mail subdomain health.

    Exits 1 when the database cannot be read, 0 otherwise (problems are listed).
    """
    report = collect_status(get_settings(), api=api, timeout=timeout)
    if as_json:
        typer.echo(json.dumps(report.__dict__, indent=2, default=str))
    else:
        typer.echo(render_text(report))
    if report.queue is None:
        raise typer.Exit(1)
