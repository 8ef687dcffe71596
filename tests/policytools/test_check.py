"""`outbox policy check`: every problem a reviewer should see, with its file and line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from outbox.cli.main import app
from outbox.config import Settings, get_settings
from outbox.db import Database
from outbox.policytools.check import Finding, KnownPrincipals, check_policy
from outbox.policytools.targets import catalog_of, load_catalog
from outbox.toolkit.base import Target
from outbox.tools.http_request import HttpRequestTool, HttpToolConfig
from tests.conftest import POLICIES
from tests.support.agents import make_agent

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


@pytest.mark.parametrize(
    "subject",
    [
        "user:Lead <lead@example.com>",
        "user:mailto:lead@example.com",
        "user:lead@example.com\u200b",
        "user:lead\u202e@example.com",
        "slack:Jane",
        "user:two words",
    ],
)
def test_people_that_do_not_parse_as_one_identity_are_errors(tmp_path: Path, subject: str) -> None:
    directory = policy(tmp_path, f"p, {subject}, http:h:1/x, approve, allow\n")
    assert ("identity-format", 1, "error") in codes_at(findings(directory))


@pytest.mark.parametrize(
    ("subject", "canonical"),
    [
        ("user:Lead@Example.com", "user:lead@example.com"),
        ("user:\uff4c\uff45\uff41\uff44@example.com", "user:lead@example.com"),
        ("slack:u0123abc", "slack:U0123ABC"),
    ],
)
def test_people_written_in_another_form_are_named_in_the_form_they_match(
    tmp_path: Path, subject: str, canonical: str
) -> None:
    directory = policy(tmp_path, f"p, {subject}, http:h:1/x, approve, allow\n")
    found = findings(directory)
    assert ("noncanonical-identity", 1, "warning") in codes_at(found)
    assert any(canonical in f.message for f in found if f.code == "noncanonical-identity")


def test_canonical_people_are_not_reported(tmp_path: Path) -> None:
    directory = policy(
        tmp_path,
        "p, user:lead@example.com, http:h:1/x, approve, allow\np, slack:U0123ABC, http:h:1/x, approve, allow\n",
    )
    codes = {code for code, _, _ in codes_at(findings(directory))}
    assert "identity-format" not in codes
    assert "noncanonical-identity" not in codes


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
    with Database(Settings(database_url=database_url)) as db:
        make_agent(db, "crm-bot", ["http-writer"])
    result = runner.invoke(app, ["policy", "check", str(POLICIES), "--db", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert "unknown-agent" not in result.output
    assert "role:http-writer" not in result.output  # held by crm-bot and used by rules
    ghost = policy(tmp_path, (POLICIES / "rules.csv").read_text() + "p, agent:ghost, http:127.0.0.1:1/x, get, deny\n")
    result = runner.invoke(app, ["policy", "check", str(ghost), "--db"])
    assert "unknown-agent" in result.output


# --- http: objects in the canonical URL form; one decision per host ------------------------------


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("http:localhost:*/**", "http:127.0.0.1:*/**"),
        ("http:LOCALHOST:*/**", "http:127.0.0.1:*/**"),
        ("http:localhost.:8765/orders/*", "http:127.0.0.1:8765/orders/*"),
        ("http:api.localhost:*/**", "http:127.0.0.1:*/**"),
        ("http:[::1]:*/admin/**", "http:127.0.0.1:*/admin/**"),
        ("http:[0:0::1]:9/x", "http:127.0.0.1:9/x"),
        ("http:[::ffff:127.0.0.1]:*/**", "http:127.0.0.1:*/**"),
        ("http:API.Internal/v1/**", "http:api.internal/v1/**"),
        ("http:[2001:DB8::1]:8080/**", "http:[2001:db8::1]:8080/**"),
        ("http:h:0080/x", "http:h:80/x"),
        ("http:h:1/%61dmin/**", "http:h:1/admin/**"),
        ("http:h:1/orders/*/x%3f", "http:h:1/orders/*/x%3F"),
        ("http:h:1/a<b>", "http:h:1/a%3Cb%3E"),
        ("http:h:1", "http:h:1/"),
    ],
)
def test_an_http_object_not_in_canonical_form_never_matches_and_is_an_error(
    tmp_path: Path, written: str, canonical: str
) -> None:
    found = findings(policy(tmp_path, f"p, role:a, {written}, get, deny\n"))
    [finding] = [f for f in found if f.code == "noncanonical-object"]
    assert finding.severity == "error"
    assert finding.line == 1
    assert f"write {canonical!r}" in finding.message


@pytest.mark.parametrize(
    ("written", "reason"),
    [
        ("http:127.1:*/**", "four decimal numbers"),
        ("http:0x7f.0.0.1:*/**", "four decimal numbers"),
        ("http:2130706433:*/**", "four decimal numbers"),
        ("http:0.0.0.0:*/**", "not a destination"),
        ("http:user@h:1/**", "invalid label"),
        ("http:h:1//admin/**", "empty segment"),
        ("http:h:1/a/../admin", "dot segment"),
        ("http:h:1/a%2fb", "encoded slash"),
        ("http:h:1/admin;x=1/**", "';'"),
        ("http:h:1/%252e/**", "double-encoded"),
        ("http:h:1/ａdmin/**", "ASCII"),
    ],
)
def test_an_http_object_the_canonical_form_refuses_is_an_error(tmp_path: Path, written: str, reason: str) -> None:
    found = findings(policy(tmp_path, f"p, role:a, {written}, get, deny\n"))
    [finding] = [f for f in found if f.code == "noncanonical-object"]
    assert finding.severity == "error"
    assert reason in finding.message
    assert "can never match" in finding.message


@pytest.mark.parametrize(
    "written",
    [
        "http:127.0.0.1:*/**",
        "http:127.0.0.1:8765/orders/*",
        "http:*:*/**",
        "http:api.internal/v1/**",
        "http:[2001:db8::1]:8080/**",
        "http:xn--bcher-kva.example/**",
        "http:h:1/a%20b/*",
        "http:h:1/.well-known/**",
        "http:h:1/v*/orders",
        "http:h:1/**",
    ],
)
def test_canonical_http_objects_are_not_reported(tmp_path: Path, written: str) -> None:
    found = findings(policy(tmp_path, f"p, role:a, {written}, get, deny\n"))
    assert not [f for f in found if f.code in ("noncanonical-object", "alias-conflict", "regex-syntax")]


def test_the_old_shipped_localhost_rule_is_an_alias_conflict_with_the_admin_deny(tmp_path: Path) -> None:
    directory = policy(
        tmp_path,
        "g, role:http-writer, role:http-reader\n"
        "p, role:http-reader, http:127.0.0.1:*/**, get|head, allow\n"
        "p, role:http-reader, http:127.0.0.1:*/admin/**, get|head|post|put|patch|delete, deny\n"
        "p, role:http-reader, http:localhost:*/**, get|head, allow\n",
    )
    found = findings(directory)
    [conflict] = [f for f in found if f.code == "alias-conflict"]
    assert (conflict.line, conflict.severity) == (4, "error")
    assert "rules.csv:3" in conflict.message
    assert "localhost and 127.0.0.1" in conflict.message
    assert ("noncanonical-object", 4, "error") in codes_at(found)


@pytest.mark.parametrize(
    ("allow", "deny"),
    [
        ("p, role:r, http:localhost:*/admin/**, get, allow", "p, role:r, http:127.0.0.1:*/admin/**, get, deny"),
        ("p, role:r, http:[::1]:8765/**, post, allow", "p, role:r, http:127.0.0.1:8765/admin/**, post, approve"),
        ("p, role:r, http:127.0.0.1:*/**, get, allow", "p, role:r, http:localhost:*/admin/**, get, deny"),
        ("p, role:r, http:localhost:*/**, get, allow", "p, role:r, http:[::1]:*/admin/users, get, deny"),
        ("p, role:w, http:LOCALHOST.:*/**, delete, allow", "p, role:r, http:127.0.0.1:*/**, delete, approve"),
        ("p, role:r, http:api.internal/**, get, allow", "p, role:r, http:API.internal/admin/**, get, deny"),
    ],
)
def test_allowing_on_one_name_of_a_host_what_another_name_denies_is_an_error(
    tmp_path: Path, allow: str, deny: str
) -> None:
    directory = policy(tmp_path, f"g, role:w, role:r\n{allow}\n{deny}\n")
    conflicts = [f for f in findings(directory) if f.code == "alias-conflict"]
    assert [(f.line, f.severity) for f in conflicts] == [(2, "error")]
    assert "rules.csv:3" in conflicts[0].message


@pytest.mark.parametrize(
    "rules",
    [
        # Unrelated subjects: nobody holds both.
        "p, role:a, http:localhost:*/**, get, allow\np, role:b, http:127.0.0.1:*/admin/**, get, deny\n",
        # Acts that do not meet.
        "p, role:a, http:localhost:*/**, get, allow\np, role:a, http:127.0.0.1:*/admin/**, post, deny\n",
        # Paths that do not meet.
        "p, role:a, http:localhost:*/orders/**, get, allow\np, role:a, http:127.0.0.1:*/admin/**, get, deny\n",
        # Different hosts: 127.0.0.2 is not an alias of 127.0.0.1.
        "p, role:a, http:127.0.0.2:*/**, get, allow\np, role:a, http:127.0.0.1:*/admin/**, get, deny\n",
        # The same decision under both names.
        "p, role:a, http:localhost:*/admin/**, get, deny\np, role:a, http:127.0.0.1:*/admin/**, get, deny\n",
    ],
)
def test_no_alias_conflict_without_one_caller_one_act_one_object_and_two_decisions(tmp_path: Path, rules: str) -> None:
    assert not [f for f in findings(policy(tmp_path, rules)) if f.code == "alias-conflict"]


def test_a_case_insensitive_host_wants_lower_case_paths_in_its_rules(tmp_path: Path) -> None:
    directory = policy(tmp_path, "p, role:a, http:iis.internal/Admin/**, get, deny\n")
    config = HttpToolConfig.model_validate({"hosts": {"IIS.internal": {"case_insensitive_paths": True}}})
    http = HttpRequestTool(config, services=None)  # type: ignore[arg-type]
    found = check_policy(directory, catalog=catalog_of({http.name: http})).findings
    [finding] = [f for f in found if f.code == "noncanonical-object"]
    assert "write 'http:iis.internal/admin/**'" in finding.message


def test_callback_is_an_act_on_http_objects(tmp_path: Path) -> None:
    directory = policy(
        tmp_path,
        "p, role:a, http:127.0.0.1:*/hooks/**, callback, allow\np, role:a, http:127.0.0.1:*/hooks/**, calback, allow\n",
    )
    found = findings(directory)
    assert ("unknown-act", 2, "error") in codes_at(found)
    assert not [f for f in found if f.line == 1]


@pytest.mark.parametrize(
    ("rule", "warned"),
    [
        ("p, role:a, http:*:*/**, get, allow", True),
        ("p, role:a, http:*/**, get, allow", True),
        ("p, role:a, http:*.internal/v1/**, get, allow", True),
        ("p, role:a, http:10.0.0.*:8080/**, get, allow", True),
        ("p, role:a, http:*:*/admin/**, get, deny", False),
        ("p, role:a, http:*:*/**, delete, approve", False),
        ("p, role:a, http:127.0.0.1:*/**, get, allow", False),
    ],
)
def test_an_allow_on_a_wildcard_host_is_a_warning_because_dns_names_reach_internal_hosts(
    tmp_path: Path, rule: str, warned: bool
) -> None:
    found = [f for f in findings(policy(tmp_path, rule + "\n")) if f.code == "wildcard-host"]
    assert [(f.line, f.severity) for f in found] == ([(1, "warning")] if warned else [])
