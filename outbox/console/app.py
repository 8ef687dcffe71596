"""The console's router and how the application installs it.

`install_console(app)` is the one line `outbox/api/app.py` needs: it includes the pages (the
approvers' pages here, the operators' from `outbox.console.operate`), serves the vendored static
assets, and adds the security headers every /console response carries (`security.py`).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from starlette.responses import FileResponse

from outbox.console import pages, signin
from outbox.console.deps import install_console_errors
from outbox.console.operate import router as operate_router
from outbox.console.security import CONSOLE_PREFIX, ConsoleSecurityHeaders
from outbox.problems import Problem

STATIC_DIR = Path(__file__).parent / "static"
# The files a browser may fetch, known at start-up: a request names one of these or gets 404,
# so no path a client sends is ever joined to a directory.
_STATIC_FILES = {path.name: path for path in STATIC_DIR.iterdir() if path.is_file()}
_MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".LICENSE": "text/plain"}

# Every console route, under /console; none of them is part of the API's OpenAPI document.
router = APIRouter()


@router.get(CONSOLE_PREFIX + "/static/{name}", name="console_static")
async def static_file(name: str) -> FileResponse:
    path = _STATIC_FILES.get(name)
    if path is None:
        raise Problem(404, "not-found", "Not found", f"The console has no static file {name!r}.")
    return FileResponse(
        path,
        media_type=_MEDIA_TYPES.get(path.suffix, "application/octet-stream") + "; charset=utf-8",
        # Assets change only with the package; an hour keeps a phone from refetching them on
        # every page without pinning an old version for long after an upgrade.
        headers={"Cache-Control": "public, max-age=3600"},
    )


router.include_router(signin.router)
router.include_router(pages.router)
router.include_router(operate_router, prefix=CONSOLE_PREFIX)


def install_console(app: FastAPI) -> None:
    """Mount the console on the application."""
    app.include_router(router, include_in_schema=False)
    install_console_errors(app)
    app.add_middleware(ConsoleSecurityHeaders)
