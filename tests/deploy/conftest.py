from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from outbox.api.app import create_app
from outbox.config import Settings
from outbox.logs import configure_logging
from outbox.runtime import Runtime

JsonLines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[JsonLines]:
    """Production logging (JSON at INFO) for one test; returns a reader of the lines written."""
    configure_logging(Settings(log_json=True, log_level="INFO"))
    capsys.readouterr()

    def read() -> list[dict[str, Any]]:
        err = capsys.readouterr().err
        return [json.loads(line) for line in err.splitlines() if line.startswith("{")]

    yield read
    configure_logging(Settings(log_json=False, log_level="WARNING"))


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime=runtime), raise_server_exceptions=False) as test_client:
        yield test_client
