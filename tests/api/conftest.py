from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from outbox.api.app import create_app
from outbox.runtime import Runtime
from tests.support.agents import make_agent


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime=runtime), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def writer_key(runtime: Runtime) -> str:
    return make_agent(runtime.db, "writer-bot", ["http-writer"])


@pytest.fixture
def reader_key(runtime: Runtime) -> str:
    return make_agent(runtime.db, "reader-bot", ["http-reader"])
