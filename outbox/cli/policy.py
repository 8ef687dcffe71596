"""`outbox policy …`: policies as code. Check, test and diff a policy directory; compare servers."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from outbox.cli.policy_replay import replay
from outbox.cli.policy_shadow import shadow_app

if TYPE_CHECKING:
    from outbox.policytools.repository import RecordedCall

policy_app = typer.Typer(no_args_is_help=True, help="Policies as code: check, test, diff, status.")
policy_app.add_typer(shadow_app, name="shadow")
policy_app.command("replay")(replay)


class CheckFormat(StrEnum):
    text = "text"
    github = "github"
    json = "json"


class DiffFormat(StrEnum):
    text = "text"
    markdown = "markdown"
    json = "json"


def _default_dir(directory: Path | None) -> Path:
    if directory is not None:
        return directory
    from outbox.config import get_settings

    return get_settings().policy_dir


def _display(directory: Path) -> str:
    """The directory as the user would write it: relative to the working directory if inside."""
    resolved = directory.resolve()
    try:
        return resolved.relative_to(Path.cwd()).as_posix() or "."
    except ValueError:
        return str(resolved)


DirArg = Annotated[
    Path | None,
    typer.Argument(help="Policy directory (default: OUTBOX_POLICY_DIR, i.e. policies).", show_default=False),
]


@policy_app.command("check")
def check(
    directory: DirArg = None,
    *,
    strict: Annotated[bool, typer.Option("--strict", help="Treat warnings as errors.")] = False,
    output_format: Annotated[
        CheckFormat, typer.Option("--format", help="text, github (workflow annotations) or json.")
    ] = CheckFormat.text,
    with_db: Annotated[
        bool, typer.Option("--db", help="Also check agent names and roles against the configured database.")
    ] = False,
) -> None:
    """Load the model, rules, tools and mail configuration; report problems with file:line.

    Exits 1 on errors (and, with --strict, on warnings).
    """
    from outbox.policytools.check import KnownPrincipals, check_policy

    directory = _default_dir(directory)
    known = None
    if with_db:
        from outbox.config import get_settings
        from outbox.db import Database
        from outbox.policytools.repository import agents_and_roles

        with Database(get_settings()) as db, db.session() as session:
            agents = agents_and_roles(session)
        known = KnownPrincipals(
            agents=frozenset(name for name, _roles in agents),
            roles=frozenset(role for _name, roles in agents for role in roles),
        )
    report = check_policy(directory, known=known)
    shown = _display(directory)
    if output_format is CheckFormat.json:
        typer.echo(report.format_json())
    elif output_format is CheckFormat.github:
        annotations = report.format_github(shown, strict=strict)
        if annotations:
            typer.echo(annotations)
        typer.echo(report.format_text(shown).splitlines()[-1])
    else:
        typer.echo(report.format_text(shown))
    if report.failed(strict=strict):
        raise typer.Exit(1)


@policy_app.command("test")
def run_tests(
    directory: DirArg = None,
    *,
    junit: Annotated[Path | None, typer.Option("--junit", help="Write JUnit XML here.")] = None,
) -> None:
    """Run the cases in <DIR>/tests/*.yaml; print a table; exit 1 on any failure."""
    from outbox.policy.engine import PolicyLoadError, load_policy
    from outbox.policytools.cases import format_table, junit_xml, run_cases
    from outbox.policytools.targets import load_catalog

    directory = _default_dir(directory)
    try:
        snapshot = load_policy(directory)
    except PolicyLoadError as exc:
        typer.echo(f"{_display(directory)}: the policy does not load: {exc}", err=True)
        raise typer.Exit(1) from exc
    catalog = load_catalog(directory)
    if catalog.load_error is not None:
        typer.echo(f"{_display(directory)}: tools do not load: {catalog.load_error}", err=True)
        raise typer.Exit(1)
    results = run_cases(directory, snapshot, catalog)
    if not results:
        typer.echo(f"{_display(directory)}: no test cases (add some under tests/*.yaml)")
    else:
        typer.echo(format_table(results))
    if junit is not None:
        junit.parent.mkdir(parents=True, exist_ok=True)
        junit.write_bytes(junit_xml(results))
    if not all(r.passed for r in results):
        raise typer.Exit(1)


@policy_app.command("diff")
def diff(
    base: Annotated[str, typer.Argument(help="Base: a git revision (main, origin/main, a SHA) or a directory.")],
    head: Annotated[
        str | None, typer.Argument(help="Head: a git revision or a directory (default: the working tree).")
    ] = None,
    *,
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="The policy directory in the repository (default: OUTBOX_POLICY_DIR)."),
    ] = None,
    from_audit: Annotated[
        bool, typer.Option("--from-audit", help="Also re-decide the calls recorded in the configured database.")
    ] = False,
    since: Annotated[
        datetime | None, typer.Option(help="With --from-audit: only calls at or after this time (ISO 8601).")
    ] = None,
    fail_on_grant: Annotated[
        bool, typer.Option("--fail-on-grant", help="Exit 1 if any decision becomes more permissive.")
    ] = False,
    output_format: Annotated[DiffFormat, typer.Option("--format", help="text, markdown or json.")] = DiffFormat.text,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the report here (default: stdout).")
    ] = None,
) -> None:
    """Every decision that changes between two policy versions, with the rules on each side."""
    from outbox.policytools.diff import (
        DiffError,
        build_probes,
        diff_versions,
        format_json,
        format_markdown,
        format_text,
        load_version,
        materialize,
    )

    directory = _default_dir(directory)
    recorded = _recorded_calls(since) if from_audit else []
    try:
        with materialize(base, directory) as base_dir, materialize(head or str(directory), directory) as head_dir:
            versions = [load_version(base_dir, base), load_version(head_dir, head or "working tree")]
            probes = build_probes(versions, recorded, policy_dirs=[base_dir, head_dir])
            result = diff_versions(versions[0], versions[1], probes)
    except DiffError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    formatter = {DiffFormat.text: format_text, DiffFormat.markdown: format_markdown, DiffFormat.json: format_json}
    rendered = formatter[output_format](result)
    if output is not None:
        output.write_text(rendered if rendered.endswith("\n") else rendered + "\n", encoding="utf-8")
    else:
        typer.echo(rendered.rstrip("\n"))
    if fail_on_grant and result.grants:
        typer.echo(f"{len(result.grants)} decision(s) become more permissive", err=True)
        raise typer.Exit(1)


def _recorded_calls(since: datetime | None) -> list[RecordedCall]:
    """The calls recorded in the configured database (at or after `since`; naive means UTC)."""
    from outbox.config import get_settings
    from outbox.db import Database
    from outbox.policytools.repository import recorded_calls

    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    with Database(get_settings()) as db, db.session() as session:
        return recorded_calls(session, since=since)


@policy_app.command("status")
def status(
    server: Annotated[
        list[str], typer.Option("--server", help="Base URL of a server (repeatable), e.g. http://10.0.0.5:8000.")
    ],
    expect: Annotated[
        str | None, typer.Option(help="The version every server should run (e.g. from `outbox policy version`).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each server.")] = 5.0,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="OUTBOX_ADMIN_TOKEN",
            help="The servers' admin token (GET /v1/policy takes a key; an agent key does not see git commits).",
        ),
    ] = None,
) -> None:
    """GET /v1/policy from each server and report version skew. Exit 1 on skew, 2 if unreachable."""
    from outbox.policytools.status import SkewReport, fetch_all

    report = SkewReport(tuple(fetch_all(server, timeout=timeout, token=token)), expected=expect)
    typer.echo(report.format_text())
    if report.skewed:
        raise typer.Exit(1)
    if report.unreachable:
        raise typer.Exit(2)


@policy_app.command("version")
def version(directory: DirArg = None) -> None:
    """Print the version (content hash) a server would report for this directory."""
    from outbox.policy.engine import content_version

    directory = _default_dir(directory)
    if not directory.is_dir():
        typer.echo(f"{directory} is not a directory", err=True)
        raise typer.Exit(2)
    typer.echo(content_version(directory))
