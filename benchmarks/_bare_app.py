"""The baseline for benchmarks/gate.py: a bare FastAPI endpoint that parses the same JSON body and
answers 202, served by the same uvicorn in the same way."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

app = FastAPI()


@app.post("/v1/actions")
async def bare(request: Request) -> JSONResponse:
    body: dict[str, Any] = await request.json()
    return JSONResponse({"id": uuid.uuid4().hex, "status": "queued", "tool": body.get("tool")}, status_code=202)


@app.get("/readyz")
def ready() -> dict[str, str]:
    return {"status": "ready"}
