"""`outbox policy test`: cases in policies/tests/*.yaml, a table, an exit status, JUnit XML."""

from __future__ import annotations

import shutil
from pathlib import Path
from xml.etree import ElementTree as ET

from typer.testing import CliRunner

from outbox.cli.main import app
from outbox.policy.engine import load_policy
from outbox.policytools.cases import run_cases
from outbox.policytools.targets import load_catalog
from tests.conftest import POLICIES

runner = CliRunner()


def with_cases(tmp_path: Path, text: str) -> Path:
    directory = tmp_path / "policies"
    shutil.copytree(POLICIES, directory)
    shutil.rmtree(directory / "tests")
    (directory / "tests").mkdir()
    (directory / "tests" / "cases.yaml").write_text(text)
    return directory


def results_for(directory: Path):  # type: ignore[no-untyped-def]
    return run_cases(directory, load_policy(directory), load_catalog(directory))


def test_the_shipped_cases_pass() -> None:
    results = results_for(POLICIES)
    assert results, "policies/tests has cases"
    failed = [(r.file, r.line, r.messages) for r in results if not r.passed]
    assert failed == []


def test_a_wrong_expectation_fails_with_the_reason_and_location(tmp_path: Path) -> None:
    directory = with_cases(
        tmp_path,
        "cases:\n"
        "  - name: readers may delete\n"
        "    agent: r\n"
        "    roles: [http-reader]\n"
        "    tool: http.request\n"
        "    args: {method: DELETE, url: 'http://127.0.0.1:8765/x'}\n"
        "    expect: allow\n",
    )
    (result,) = results_for(directory)
    assert not result.passed
    assert (result.file, result.line, result.got) == ("tests/cases.yaml", 2, "deny")
    assert "expected allow, got deny" in result.messages[0]
    assert "no rule allows it" in result.messages[0]

    cli = runner.invoke(app, ["policy", "test", str(directory), "--junit", str(tmp_path / "out" / "junit.xml")])
    assert cli.exit_code == 1
    assert "FAIL" in cli.output
    assert "tests/cases.yaml:2: readers may delete: expected allow" in cli.output
    suite = ET.parse(tmp_path / "out" / "junit.xml").getroot()
    assert suite.get("failures") == "1"
    case = suite.find("./testsuite/testcase")
    assert case is not None
    assert case.get("name") == "readers may delete"
    assert case.get("line") == "2"
    failure = case.find("failure")
    assert failure is not None
    assert "expected allow, got deny" in (failure.get("message") or "")


def test_the_deciding_rule_can_be_pinned_by_location_or_text(tmp_path: Path) -> None:
    directory = with_cases(
        tmp_path,
        "cases:\n"
        "  - {agent: r, roles: [http-reader], object: 'http:127.0.0.1:1/a', act: get, expect: allow,\n"
        "     rule: 'rules.csv:9'}\n"
        "  - {agent: r, roles: [http-reader], object: 'http:127.0.0.1:1/a', act: get, expect: allow,\n"
        "     rule: 'p,role:http-reader,  http:127.0.0.1:*/**, get|head, allow'}\n"
        "  - {agent: r, roles: [http-reader], object: 'http:127.0.0.1:1/a', act: get, expect: allow,\n"
        "     rule: 'rules.csv:13'}\n",
    )
    first, second, third = results_for(directory)
    assert first.passed
    assert second.passed
    assert not third.passed
    assert "expected rule 'rules.csv:13' to decide, but rules.csv:9" in third.messages[0]


def test_who_may_approve_is_checked_with_act_approve(tmp_path: Path) -> None:
    directory = with_cases(
        tmp_path,
        "cases:\n"
        "  - agent: w\n"
        "    roles: [http-writer]\n"
        "    targets: [{object: 'http:127.0.0.1:1/orders/1', act: delete}]\n"
        "    expect: approve\n"
        "    approvers: [user:oncall@example.com, user:nobody@example.com]\n"
        "    not_approvers: [slack:U0123ABC]\n",
    )
    (result,) = results_for(directory)
    assert not result.passed
    assert any(m.startswith("user:nobody@example.com should be allowed to approve") for m in result.messages)
    assert any(m.startswith("slack:U0123ABC should not be allowed to approve") for m in result.messages)
    assert not any("oncall" in m for m in result.messages)


def test_unknown_tools_refused_arguments_and_bad_yaml_fail_visibly(tmp_path: Path) -> None:
    directory = with_cases(
        tmp_path,
        "cases:\n"
        "  - {agent: a, tool: fax.send, args: {}, expect: deny}\n"
        "  - {agent: a, tool: http.request, args: {method: GET, url: 'ftp://x/'}, expect: deny}\n"
        "  - {agent: a, expect: deny}\n",
    )
    unknown, refused, incomplete = results_for(directory)
    assert "unknown tool 'fax.send'" in unknown.messages[0]
    assert "http.request refuses the arguments" in refused.messages[0]
    assert incomplete.line == 4
    assert "exactly one of" in incomplete.messages[0]
    (directory / "tests" / "cases.yaml").write_text("cases:\n  - {agent: a\n")
    (broken,) = results_for(directory)
    assert not broken.passed
    assert broken.file == "tests/cases.yaml"
    assert "invalid YAML" in broken.messages[0]
    repeated_key = "cases:\n  - {agent: a, agent: b, tool: x, args: {}, expect: deny}\n"
    (directory / "tests" / "cases.yaml").write_text(repeated_key)
    (repeated,) = results_for(directory)
    assert not repeated.passed
    assert repeated.line == 2
    assert "invalid YAML: duplicate key 'agent'" in repeated.messages[0]


def test_cli_passes_on_the_shipped_policies(tmp_path: Path) -> None:
    result = runner.invoke(app, ["policy", "test", str(POLICIES), "--junit", str(tmp_path / "j.xml")])
    assert result.exit_code == 0, result.output
    assert " 0 failed" in result.output
    assert ET.parse(tmp_path / "j.xml").getroot().get("failures") == "0"
