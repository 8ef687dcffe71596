"""`outbox policy diff`: every decision that changes, with the rules on each side."""

from __future__ import annotations

import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from outbox.cli.main import app
from outbox.config import get_settings
from outbox.policytools.diff import build_probes, diff_versions, format_markdown, load_version
from outbox.runtime import Runtime
from tests.conftest import POLICIES
from tests.support.agents import make_agent
from tests.support.calls import submit_call

runner = CliRunner()


def copy_policies(target: Path) -> Path:
    shutil.copytree(POLICIES, target)
    return target


def edit(directory: Path, old: str, new: str) -> None:
    path = directory / "rules.csv"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def diff_dirs(base: Path, head: Path, *, exhaustive: bool = False):  # type: ignore[no-untyped-def]
    versions = [load_version(base, "base"), load_version(head, "head")]
    probes = build_probes(versions, policy_dirs=[base, head])
    return diff_versions(versions[0], versions[1], probes, exhaustive=exhaustive)


def test_a_narrowed_deny_shows_up_as_grants_with_the_rules_on_each_side(tmp_path: Path) -> None:
    base, head = copy_policies(tmp_path / "base"), copy_policies(tmp_path / "head")
    edit(head, "admin/**, get|head|post|put|patch|delete, deny", "admin/**, post|put|patch|delete, deny")
    result = diff_dirs(base, head)
    changed = {(c.subject.principal, c.target.act, c.kind) for c in result.changes}
    assert ("role:http-reader", "get", "grant") in changed
    assert ("role:http-writer", "head", "grant") in changed
    assert all(c.target.object.startswith("http:127.0.0.1:") and "/admin/" in c.target.object for c in result.changes)
    change = next(c for c in result.changes if c.subject.principal == "role:http-reader" and c.target.act == "get")
    assert (change.before.effect, change.after.effect) == ("deny", "allow")
    assert change.before.rule is not None
    assert "admin/**, get|head|post|put|patch|delete, deny" in change.before.rule.text
    assert change.after.rule is not None
    assert "get|head, allow" in change.after.rule.text
    assert any(o.startswith("case tests/http.yaml:") for c in result.changes for o in c.origins)


def test_no_change_means_an_empty_diff(tmp_path: Path) -> None:
    base, head = copy_policies(tmp_path / "base"), copy_policies(tmp_path / "head")
    (head / "rules.csv").write_text((head / "rules.csv").read_text() + "\n# a comment only\n")
    result = diff_dirs(base, head)
    assert result.changes == []
    assert result.base_version != result.head_version
    assert "No decision changes" in format_markdown(result)


def test_role_hierarchy_changes_reach_every_member(tmp_path: Path) -> None:
    base, head = copy_policies(tmp_path / "base"), copy_policies(tmp_path / "head")
    edit(head, "g, role:http-writer, role:http-reader\n", "")
    result = diff_dirs(base, head)
    lost = {(c.subject.principal, c.target.act) for c in result.changes if c.kind == "restrict"}
    assert ("role:http-writer", "get") in lost
    assert not any(c.subject.principal == "role:http-reader" for c in result.changes)


@pytest.mark.parametrize("seed", range(8))
def test_pruning_finds_exactly_what_evaluating_everything_finds(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    base, head = copy_policies(tmp_path / "base"), copy_policies(tmp_path / "head")
    lines = (head / "rules.csv").read_text().splitlines()
    rules = [i for i, line in enumerate(lines) if line.startswith(("p,", "g,"))]
    for index in rng.sample(rules, 2):
        lines[index] = ""
    lines.append(
        rng.choice(
            [
                "p, role:http-reader, http:127.0.0.1:*/orders/*, delete, allow",
                "p, role:http-writer, http:localhost:*/**, post, approve",
                "g, role:approver-http, role:http-writer",
                "p, agent:crm-bot, http:127.0.0.1:8765/**, *, deny",
            ]
        )
    )
    (head / "rules.csv").write_text("\n".join(lines) + "\n")
    pruned = diff_dirs(base, head)
    full = diff_dirs(base, head, exhaustive=True)
    assert pruned.evaluated <= full.evaluated
    key = lambda c: (c.subject, c.target, c.before.effect, c.after.effect)  # noqa: E731
    assert sorted(map(key, pruned.changes), key=str) == sorted(map(key, full.changes), key=str)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository whose policies/ has two commits: the shipped one, then a wider grant."""
    root = tmp_path / "repo"
    copy_policies(root / "policies")

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    git("-c", "user.email=t@example.com", "-c", "user.name=t", "add", ".")
    git("-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-q", "-m", "base")
    edit(root / "policies", "http:127.0.0.1:*/**, delete, approve", "http:127.0.0.1:*/**, delete, allow")
    git("-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-q", "-am", "wider")
    return root


def test_git_revisions_are_diffed_and_grants_can_fail_the_run(repo: Path) -> None:
    policies = str(repo / "policies")
    result = runner.invoke(app, ["policy", "diff", "HEAD~1", "HEAD", "--dir", policies])
    assert result.exit_code == 0, result.output
    assert "GRANT    role:http-writer delete http:127.0.0.1:{any}/{any}: approve → allow" in result.output
    failing = runner.invoke(app, ["policy", "diff", "HEAD~1", "--dir", policies, "--fail-on-grant"])
    assert failing.exit_code == 1
    reverse = runner.invoke(app, ["policy", "diff", "HEAD", "HEAD~1", "--dir", policies, "--fail-on-grant"])
    assert reverse.exit_code == 0, reverse.output
    assert "RESTRICT" in reverse.output


def test_markdown_for_a_pull_request_comment(repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "diff.md"
    result = runner.invoke(
        app, ["policy", "diff", "HEAD~1", "--dir", str(repo / "policies"), "--format", "markdown", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert text.startswith("### Policy diff: `HEAD~1` → `working tree`")
    assert "| ⚠️ grant | `role:http-writer` | `delete` |" in text
    assert "`p, role:http-writer, http:127.0.0.1:*/**, delete, approve`" in text


def test_an_unknown_revision_is_a_clear_error(repo: Path) -> None:
    result = runner.invoke(app, ["policy", "diff", "no-such-branch", "--dir", str(repo / "policies")])
    assert result.exit_code == 2
    assert "neither a directory nor a git revision" in result.output


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, database_url: str) -> Iterator[None]:
    monkeypatch.setenv("OUTBOX_DATABASE_URL", database_url)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.usefixtures("cli_env")
def test_recorded_calls_are_re_decided_with_the_agents_real_roles(
    runtime: Runtime, policy_dir: Path, tmp_path: Path
) -> None:
    key = make_agent(runtime.db, "crm-bot", ["http-writer"])
    submit_call(runtime, key, "http.request", {"method": "DELETE", "url": "http://127.0.0.1:8765/orders/7"})
    head = copy_policies(tmp_path / "head")
    edit(head, "http:127.0.0.1:*/**, delete, approve", "http:127.0.0.1:*/**, delete, deny")
    result = runner.invoke(app, ["policy", "diff", str(policy_dir), str(head), "--from-audit", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert '"subject": "agent:crm-bot"' in result.output
    assert '"object": "http:127.0.0.1:8765/orders/7"' in result.output
    assert '"audit"' in result.output
