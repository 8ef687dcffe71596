"""Fixtures for the console's browser tests: one server per module and backend, one Chromium."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright
from sqlalchemy import create_engine, text

from outbox.config import Settings
from outbox.migrations import upgrade
from tests.conftest import PG_ADMIN_URL
from tests.console.e2e.harness import CHROMIUM, CHROMIUM_ARGS, ConsoleServer, PageWatch


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def console_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleServer]:
    """A running `outbox serve` on a fresh database; its users and agents are the module's to make."""
    workdir = tmp_path_factory.mktemp(f"console-{request.param}")
    if request.param == "sqlite":
        server = ConsoleServer(workdir, f"sqlite:///{workdir / 'outbox.db'}")
        upgrade(Settings(database_url=server.database_url))
        yield from _running(server)
        return
    # Skips, or fails under OUTBOX_TEST_REQUIRE_POSTGRES=1, when PostgreSQL is unreachable.
    request.getfixturevalue("postgres_server")
    name = f"outbox_console_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        server = ConsoleServer(workdir, PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}")
        upgrade(Settings(database_url=server.database_url))
        yield from _running(server)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _running(server: ConsoleServer) -> Iterator[ConsoleServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


# Module scope, not session: while Playwright's sync driver is open it holds an asyncio loop
# running in the main thread, and any later test that runs a loop of its own there would fail.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield chromium
    chromium.close()


@pytest.fixture
def watch() -> PageWatch:
    return PageWatch()


@pytest.fixture
def page(browser: Browser, watch: PageWatch) -> Iterator[Page]:
    """A fresh browser context (no cookies) with every error and failed request recorded."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    # Forms that ask "are you sure?" (deny, pause) are answered yes, as the person clicking means it.
    opened.on("dialog", lambda dialog: dialog.accept())
    watch.attach(opened)
    yield opened
    context.close()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    return tmp_path / "screenshots"
