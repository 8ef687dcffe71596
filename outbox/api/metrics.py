"""`GET /metrics`: Prometheus exposition for this API process plus the shared database state."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from outbox import metrics
from outbox.api.deps import RuntimeDep
from outbox.execution.queue_state import read_queue_state
from outbox.problems import Problem

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(request: Request, runtime: RuntimeDep) -> Response:
    """Open by default, like most exporters; set OUTBOX_METRICS_TOKEN to require a bearer token
    (the metrics name mail subdomains and tools, which some deployments keep private)."""
    token = metrics.MetricsSettings().metrics_token
    if token:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
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
