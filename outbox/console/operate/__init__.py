"""The operators' pages of the console (actions, mail, audit, policy).

`router` is included by `outbox.console.app` under the `/console` prefix; routes added here use
the console's dependencies (`outbox.console.deps`) and templates (`outbox.console.templating`).
"""

from __future__ import annotations

from fastapi import APIRouter

from outbox.console.operate.pages import router as pages_router

router = APIRouter()
router.include_router(pages_router)
