"""`GET /metrics`: Prometheus exposition for this API process plus the shared database state."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from outbox import metrics
from outbox.api.deps import RuntimeDep
from outbox.api.security import MetricsToken, token_matches
from outbox.execution.queue_state import read_queue_state
from outbox.problems import Problem

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(credentials: MetricsToken, runtime: RuntimeDep) -> Response:
    """Open by default, like most exporters; set OUTBOX_METRICS_TOKEN to require a bearer token
    (the metrics name mail subdomains and tools, which some deployments keep private)."""
    token = metrics.MetricsSettings().metrics_token
    if token and not token_matches(credentials, token):
        raise Problem(
            401,
            "unauthorized",
            "Unauthorized",
            "This server requires a token to read its metrics.",
            hint="Configure the scraper with `authorization: {credentials: <OUTBOX_METRICS_TOKEN>}`.",
            headers={"WWW-Authenticate": 'Bearer realm="agent-outbox metrics"'},
        )
    # The collectors query the database: keep them off the event loop.
    body = await run_in_threadpool(metrics.render_metrics, runtime, read_queue_state)
    return Response(body, media_type=metrics.CONTENT_TYPE_LATEST)
