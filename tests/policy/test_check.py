"""`outbox policy check`: every problem a reviewer should see, with its file and line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from outbox.cli.main import app
from outbox.config import get_settings
from outbox.policy.check import Finding, KnownPrincipals, check_policy
from outbox.policy.targets import catalog_of, load_catalog
from outbox.tools.base import Target
from outbox.tools.http_request import HttpRequestTool, HttpToolConfig
from tests.conftest import POLICIES

MODEL = (POLICIES / "model.conf").read_text()


class FakeMailTool:
    """Stands for `email.send`: sends from one configured subdomain."""

    name: ClassVar[str] = "email.send"
    description: ClassVar[str] = "send mail"

    def args_schema(self) -> dict[str, Any]:
        return {}

    def parse_args(self, raw: dict[str, Any]) -> BaseModel:
        raise NotImplementedError

    def targets(self, args: BaseModel) -> list[Target]:
        return []

    def execute(self, ctx: Any, args: BaseModel) -> Any:
        raise NotImplementedError

    def target_patterns(self) -> list[Target]:
        return [Target("mail:agents.mail.example.com/{recipient}", "send")]


class OpaqueTool(FakeMailTool):
    """A tool that does not declare its targets."""

    name: ClassVar[str] = "opaque.tool"
    target_patterns = None  # type: ignore[assignment]


def catalog(*extra: Any) -> Any:
    http = HttpRequestTool(HttpToolConfig(), services=None)  # type: ignore[arg-type]
    return catalog_of({tool.name: tool for tool in (http, *extra)})


def policy(tmp_path: Path, rules: str, model: str = MODEL) -> Path:
    directory = tmp_path / "p"
    directory.mkdir(exist_ok=True)
    (directory / "model.conf").write_text(model)
    (directory / "rules.csv").write_text(rules)
    return directory


def findings(directory: Path, *tools: Any, known: KnownPrincipals | None = None) -> list[Finding]:
    return check_policy(directory, catalog=catalog(FakeMailTool(), *tools), known=known).findings


def codes_at(found: list[Finding]) -> set[tuple[str, int | None, str]]:
    return {(f.code, f.line, f.severity) for f in found}


def test_the_shipped_policies_are_clean_even_in_strict_mode() -> None:
    catalog = load_catalog(POLICIES)
    report = check_policy(POLICIES, catalog=catalog)
    # A tool that does not (yet) declare target_patterns() makes its rules uncheckable, which is
    # reported; everything else must be clean.
    tolerated = {"tool-targets-unknown", "unknown-tool"} if catalog.undescribed else set()
    assert [f for f in report.findings if f.code not in tolerated] == [], report.format_text("policies")
    assert not report.failed(strict=not catalog.undescribed)
    assert report.rules > 0
    assert "http.request" in report.tools


def test_every_syntax_error_is_reported_with_its_line(tmp_path: Path) -> None:
    directory = policy(
        tmp_path,
        "p, role:a, http:h/x, get, allow\n"
        "p, role:a, http:h/x, get\n"
        "# a comment\n"
        "p, role:a, http:h/x, get, maybe\n"
        "x, role:a, role:b\n",
    )
    found = findings(directory)
    assert {(f.code, f.file, f.line) for f in found if f.severity == "error"} == {
        ("syntax", "rules.csv", 2),
        ("syntax", "rules.csv", 4),
        ("syntax", "rules.csv", 5),
    }
    assert "4 fields" in next(f.message for f in found if f.line == 2)


def test_prefix_and_unanchored_matching_functions_in_the_model_are_errors(tmp_path: Path) -> None:
    loose = MODEL.replace("objectMatch(r.obj, p.obj)", "keyMatch(r.obj, p.obj)").replace(
        "actMatch(r.act, p.act)", "regexMatch(r.act, p.act)"
    )
    found = findings(policy(tmp_path, "p, role:a, http:h/x, get, allow\n", loose))
    matcher_line = next(n for n, line in enumerate(loose.splitlines(), 1) if line.startswith("m ="))
    assert ("loose-matcher", matcher_line, "error") in codes_at(found)
    assert {f.message.split()[0] for f in found if f.code == "loose-matcher"} == {"keyMatch", "regexMatch"}
    assert ("model-nonstandard", matcher_line, "warning") in codes_at(found)


def test_references_to_unknown_tools_subdomains_and_acts_are_errors(tmp_path: Path) -> None:
    directory = policy(
        tmp_path,
        "p, role:a, smtp:agents.mail.example.com/*, send, approve\n"
        "p, role:a, mail:marketing.example.com/*@example.org, send, approve\n"
        "p, role:a, mail:agents.mail.example.com/*@example.org, sned, approve\n"
        "p, role:a, mail:agents.mail.example.com/*@example.org, send, approve\n"
        "p, role:a, http:127.0.0.1:8765/orders, approve, approve\n",
    )
    found = codes_at(findings(directory))
    assert ("unknown-tool", 1, "error") in found
    assert ("unknown-object", 2, "error") in found
    assert ("unknown-act", 3, "error") in found
    assert not {f for f in found if f[1] in (4, 5)}


def test_a_tool_that_does_not_declare_its_targets_downgrades_unknown_references_to_warnings(
    tmp_path: Path,
) -> None:
    directory = policy(tmp_path, "p, role:a, k8s:prod/namespace/web, delete, approve\n")
    found = findings(directory, OpaqueTool())
    assert ("unknown-tool", 1, "warning") in codes_at(found)
    assert any(f.code == "tool-targets-unknown" and "opaque.tool" in f.message for f in found)


def test_an_allow_fully_covered_by_a_broader_deny_for_the_same_subject_is_shadowed(tmp_path: Path) -> None:
    directory = policy(
        tmp_path,
        "p, role:ops, http:h:1/admin/**, get|post, deny\n"
        "p, role:ops, http:h:1/admin/users, get, allow\n"
        "p, role:ops, http:h:1/admin/users/*, get|delete, allow\n",
    )
    found = findings(directory)
    shadowed = {f.line: f.message for f in found if f.code == "shadowed"}
    assert "never takes effect" in shadowed[2]
    assert "rules.csv:1" in shadowed[2]
    assert "act(s) get" in shadowed[3]  # delete is still granted: only partly shadowed


def test_shadowing_follows_the_role_hierarchy(tmp_path: Path) -> None:
    directory = policy(
        tmp_path,
        "g, role:writer, role:reader\n"
        "p, role:reader, http:h:1/**, delete, deny\n"
        "p, role:writer, http:h:1/orders/*, delete, approve\n"
        "p, role:reader, http:h:1/orders/*, delete, approve\n",
    )
    found = codes_at(findings(directory))
    assert ("shadowed", 3, "warning") in found
    assert ("shadowed", 4, "warning") in found


def test_redundant_and_duplicate_rules_are_warnings(tmp_path: Path) -> None:
    directory = policy(
        tmp_path,
        "p, role:a, http:h:1/**, get, allow\n"
        "p, role:a, http:h:1/orders/*, get, allow\n"
        "p, role:a, http:h:1/**, get, allow\n",
    )
    found = findings(directory)
    assert ("redundant", 2, "warning") in codes_at(found)
    assert any(f.code == "duplicate" and f.line == 3 and "rules.csv:1" in f.message for f in found)


def test_wildcard_allows_on_destructive_acts_are_risky_grants(tmp_path: Path) -> None:
    directory = policy(
        tmp_path,
        "p, role:a, http:h:1/orders/**, delete, allow\n"
        "p, role:a, mail:agents.mail.example.com/*, send, allow\n"
        "p, role:a, http:h:1/orders/*, *, allow\n"
        "p, role:a, http:h:1/orders/**, delete, approve\n"
        "p, role:a, mail:agents.mail.example.com/*@example.org, send, allow\n"
        "p, role:a, http:h:1/orders/**, get, allow\n",
    )
    risky = {f.line for f in findings(directory) if f.code == "risky-grant"}
    assert risky == {1, 2, 3}


def test_overbroad_and_regex_looking_patterns_are_warnings(tmp_path: Path) -> None:
    directory = policy(
        tmp_path,
        "p, role:a, **, get, deny\n"
        "p, role:a, *:h:1/**, get, approve\n"
        "p, role:a, http:h:1/.*, get, deny\n"
        "p, role:a, http:h:1/**/x, get, deny\n"
        "p, role:a, http:h:1/{id}, get, deny\n",
    )
    found = codes_at(findings(directory))
    assert ("overbroad-pattern", 1, "warning") in found
    assert ("overbroad-pattern", 2, "warning") in found
    assert ("regex-syntax", 3, "warning") in found
    assert ("misplaced-globstar", 4, "warning") in found
    assert ("template-in-rule", 5, "warning") in found


def test_subjects_must_be_identities_or_roles(tmp_path: Path) -> None:
    directory = policy(
        tmp_path,
        "p, *, http:h:1/x, get, deny\n"
        "p, crm-bot, http:h:1/x, get, deny\n"
        "p, slack:Jane Doe, http:h:1/x, approve, allow\n"
        "p, agent:CRM Bot, http:h:1/x, get, deny\n"
        "g, agent:crm-bot, ops\n",
    )
    found = codes_at(findings(directory))
    assert ("subject-pattern", 1, "error") in found
    assert ("subject-kind", 2, "error") in found
    assert ("identity-format", 3, "error") in found
    assert ("identity-format", 4, "error") in found
    assert ("g-parent", 5, "error") in found


def test_roles_without_rules_and_people_without_roles_are_reported(tmp_path: Path) -> None:
    directory = policy(
        tmp_path,
        "g, agent:crm-bot, role:wirter\n"
        "g, user:alice, role:approver\n"
        "p, role:approver, http:h:1/**, approve, allow\n"
        "p, user:bob, http:h:1/**, approve, allow\n",
    )
    found = codes_at(findings(directory))
    assert ("unknown-role", 1, "warning") in found
    assert ("unknown-identity", 4, "warning") in found
    assert not any(code == "unknown-role" and line == 2 for code, line, _ in found)


def test_with_the_database_unknown_agents_and_unused_roles_are_reported(tmp_path: Path) -> None:
    directory = policy(tmp_path, "p, agent:ghost, http:h:1/x, get, deny\np, role:a, http:h:1/x, get, deny\n")
    known = KnownPrincipals(agents=frozenset({"agent:crm-bot"}), roles=frozenset({"role:a", "role:forgotten"}))
    found = findings(directory, known=known)
    assert ("unknown-agent", 1, "warning") in codes_at(found)
    assert any(f.code == "unused-role" and "role:forgotten" in f.message for f in found)


def test_unreadable_test_cases_are_syntax_errors(tmp_path: Path) -> None:
    directory = policy(tmp_path, "p, role:a, http:h:1/x, get, deny\n")
    (directory / "tests").mkdir()
    (directory / "tests" / "bad.yaml").write_text(
        "cases:\n  - agent: a\n    expect: perhaps\n    object: x\n    act: y\n"
    )
    found = findings(directory)
    assert any(f.code == "syntax" and f.file == "tests/bad.yaml" and f.line == 2 for f in found)


runner = CliRunner()


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, database_url: str) -> Iterator[None]:
    monkeypatch.setenv("OUTBOX_DATABASE_URL", database_url)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_cli_exit_status_follows_errors_and_strict(tmp_path: Path) -> None:
    clean = runner.invoke(app, ["policy", "check", str(POLICIES)])
    assert clean.exit_code == 0, clean.output
    assert "0 error(s)" in clean.output

    warned = policy(tmp_path, "p, role:a, http:h:1/**, delete, allow\n")
    assert runner.invoke(app, ["policy", "check", str(warned)]).exit_code == 0
    strict = runner.invoke(app, ["policy", "check", str(warned), "--strict"])
    assert strict.exit_code == 1
    assert "rules.csv:1: warning: [risky-grant]" in strict.output

    (warned / "rules.csv").write_text("p, role:a\n")
    broken = runner.invoke(app, ["policy", "check", str(warned), "--format", "github"])
    assert broken.exit_code == 1
    assert "::error file=" in broken.output
    assert "rules.csv,line=1,title=syntax::" in broken.output


@pytest.mark.usefixtures("cli_env")
def test_cli_check_with_the_database(tmp_path: Path, database_url: str) -> None:
    from outbox.config import Settings
    from outbox.db import Database
    from tests.support.agents import make_agent

    with Database(Settings(database_url=database_url)) as db:
        make_agent(db, "crm-bot", ["http-writer"])
    result = runner.invoke(app, ["policy", "check", str(POLICIES), "--db", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert "unknown-agent" not in result.output
    assert "role:http-writer" not in result.output  # held by crm-bot and used by rules
    ghost = policy(tmp_path, (POLICIES / "rules.csv").read_text() + "p, agent:ghost, http:127.0.0.1:1/x, get, deny\n")
    result = runner.invoke(app, ["policy", "check", str(ghost), "--db"])
    assert "unknown-agent" in result.output
