"""The FastAPI application: routers, problem+json handlers, and the process lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.routing import Route

from outbox.actions import api as actions_api
from outbox.api import metrics, system
from outbox.api.client_input import ClientInputMiddleware
from outbox.api.errors import install_error_handlers
from outbox.api.middleware import RequestContextMiddleware
from outbox.api.openapi import install_openapi
from outbox.approvals import api as approvals_api
from outbox.config import Settings, get_settings
from outbox.console.app import install_console
from outbox.logs import configure_logging
from outbox.mail import api as mail_api
from outbox.mcp.auth import MCP_PATH, METADATA_PATH
from outbox.mcp.server import McpEndpoint
from outbox.runtime import Dispatcher, Runtime
from outbox.slack import api as slack_api


def _dispatcher_for(settings: Settings) -> Dispatcher:
    if settings.is_embedded:
        from workers.embedded import EmbeddedDispatcher

        return EmbeddedDispatcher()
    from workers.celery_app import CeleryDispatcher, make_celery

    return CeleryDispatcher(make_celery(settings.broker_url))


def _build_runtime(settings: Settings | None) -> Runtime:
    """The app's own runtime, from the settings (or the environment); a SQLite database is
    brought to the current schema first."""
    resolved = settings or get_settings()
    resolved.check_production_safety()
    configure_logging(resolved)
    if resolved.is_sqlite:
        from outbox.migrations import upgrade

        upgrade(resolved)
    return Runtime.build(resolved, _dispatcher_for(resolved))


def _mount_mcp(app: FastAPI, mcp: McpEndpoint) -> None:
    """MCP (docs/mcp.md): the endpoint answers /mcp and /mcp/ itself (no redirect between them),
    and the RFC 9728 metadata its 401 answers point to."""
    for path in (MCP_PATH, MCP_PATH + "/"):
        app.router.routes.append(Route(path, endpoint=mcp, include_in_schema=False))
    app.add_route(METADATA_PATH, mcp.metadata, methods=["GET"], include_in_schema=False)


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> FastAPI:
    """Build the app. Without a runtime, one is built at startup from the settings."""
    mcp = McpEndpoint()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        active = runtime if runtime is not None else _build_runtime(settings)
        app.state.runtime = active
        stop = threading.Event()
        from outbox.mail.embedded import start_embedded_mail
        from workers.embedded import EmbeddedDispatcher

        # Mail in the embedded server: the local sink, dev DKIM keys, DNS checks (docs/mail.md).
        embedded_mail = start_embedded_mail(active) if runtime is None and active.settings.is_embedded else None
        # Start the embedded workers unless the caller runs them already; stop what we started.
        started = isinstance(active.dispatcher, EmbeddedDispatcher) and not active.dispatcher.healthy()
        if isinstance(active.dispatcher, EmbeddedDispatcher) and started:
            active.dispatcher.start(active)
        if active.settings.policy_watch:
            active.watch_policies(stop)
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, lambda: threading.Thread(target=active.reload_policies).start())
        try:
            # The MCP server's session manager runs for exactly the app's lifetime (docs/mcp.md).
            async with mcp.serving(active):
                yield
        finally:
            stop.set()
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGHUP)
            if isinstance(active.dispatcher, EmbeddedDispatcher) and started:
                active.dispatcher.stop()
            if embedded_mail is not None:
                embedded_mail.stop()
            if runtime is None:
                active.db.dispose()

    app = FastAPI(
        title="agent-outbox",
        summary="The gate between AI agents and the real world.",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(actions_api.router)
    app.include_router(actions_api.admin_router)
    app.include_router(system.router)
    app.include_router(approvals_api.router)
    app.include_router(slack_api.router)
    app.include_router(metrics.router)
    app.include_router(mail_api.router)
    install_console(app)
    _mount_mcp(app, mcp)
    install_openapi(app)
    # Added first, so it runs inside the request context (its problems carry the request id).
    app.add_middleware(ClientInputMiddleware)
    app.add_middleware(RequestContextMiddleware)
    return app
