"""Agents and keys: created by the CLI, shown once, stored hashed, revoked at once."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from outbox.agents.models import Agent, ApiKey
from outbox.agents.service import AgentError, authenticate, create_agent
from outbox.cli.main import app
from outbox.config import get_settings
from outbox.runtime import Runtime


@pytest.fixture
def cli(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("OUTBOX_DATABASE_URL", runtime.settings.database_url)
    monkeypatch.setenv("OUTBOX_LOG_LEVEL", "WARNING")
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_create_prints_the_key_once_and_stores_only_its_hash(cli: CliRunner, runtime: Runtime) -> None:
    result = cli.invoke(app, ["agents", "create", "crm-bot", "--role", "http-reader", "--role", "role:mailer"])
    assert result.exit_code == 0, result.output
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("obx_")
    with runtime.db.session() as session:
        agent = session.exec(select(Agent).where(Agent.name == "crm-bot")).one()
        stored = session.exec(select(ApiKey).where(ApiKey.agent_id == agent.id)).one()
        assert agent.roles == ["role:http-reader", "role:mailer"]
        assert stored.key_hash == hashlib.sha256(key.encode()).hexdigest()
        assert key not in stored.model_dump_json()
        authenticated = authenticate(session, key)
    assert authenticated is not None
    assert authenticated.principal == "agent:crm-bot"

    listing = cli.invoke(app, ["agents", "list"])
    assert "crm-bot" in listing.stdout
    assert key not in listing.stdout


def test_revoke_stops_the_key_at_once(cli: CliRunner, runtime: Runtime) -> None:
    key = cli.invoke(app, ["agents", "create", "old-bot", "--role", "http-reader"]).stdout.strip().splitlines()[-1]
    assert cli.invoke(app, ["agents", "revoke", "old-bot"]).exit_code == 0
    with runtime.db.session() as session:
        assert authenticate(session, key) is None
    assert "revoked" in cli.invoke(app, ["agents", "list"]).stdout


def test_names_and_roles_are_validated_and_names_never_reused(runtime: Runtime) -> None:
    with runtime.db.session() as session:
        create_agent(session, "unique-bot", ["reader"], actor="test")
    for name, roles in [
        ("unique-bot", ["reader"]),
        ("Bad Name", ["reader"]),
        ("x" * 80, ["reader"]),
        ("ok", ["bad role!"]),
    ]:
        with pytest.raises(AgentError), runtime.db.session() as session:
            create_agent(session, name, roles, actor="test")


def test_unknown_revoke_is_an_error_with_exit_code_1(cli: CliRunner) -> None:
    result = cli.invoke(app, ["agents", "revoke", "ghost"])
    assert result.exit_code == 1
    assert "no agent named 'ghost'" in result.output


def test_keys_that_are_not_ours_never_authenticate(runtime: Runtime) -> None:
    with runtime.db.session() as session:
        assert authenticate(session, "") is None
        assert authenticate(session, "Bearer obx_") is None
        assert authenticate(session, "obx_" + "a" * 500) is None
