"""`outbox.client` is used by agents that only pip-install the package: it must not load the server."""

from __future__ import annotations

import json
import subprocess
import sys


def test_importing_the_client_loads_no_server_module_and_no_server_dependency() -> None:
    probe = (
        "import json, sys; import outbox.client; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'outbox', 'workers', 'fastapi', 'starlette', 'sqlalchemy', 'sqlmodel', 'celery', 'mcp', 'uvicorn'})))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    loaded = json.loads(result.stdout)
    assert loaded
    # outbox.retry_after is the server's Retry-After parser, standard library only: one home.
    assert all(m in {"outbox", "outbox.retry_after"} or m.startswith("outbox.client") for m in loaded), loaded
