"""`outbox sandbox check`: which isolation works on this machine, and each profile's claims."""

from __future__ import annotations

import typer

from outbox.config import get_settings

sandbox_app = typer.Typer(no_args_is_help=True, help="The sandbox command tools run in.")


@sandbox_app.command("check")
def check() -> None:
    """Probe bubblewrap, each namespace and each profile's claims; exit 1 when commands could not
    run sandboxed or a profile's claim does not hold."""
    from outbox.commands import SandboxConfigurationError, check_isolation
    from outbox.commands.provider import sandbox_settings

    settings = get_settings()
    try:
        configured = sandbox_settings(settings)
    except SandboxConfigurationError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    report = check_isolation(configured)
    rows = report.rows()
    width = max(len(name) for name, _status, _detail in rows)
    for name, status, detail in rows:
        typer.echo(f"{name:<{width}}  {status:<5}  {detail}")
    if report.sandbox_available:
        typer.echo("commands run sandboxed")
        for name in sorted(report.unavailable_profiles):
            typer.echo(f"tools of profile {name!r} are unavailable (see above)")
        if not report.claims_hold:
            typer.echo("a profile's isolation claim does not hold: its tools refuse to run (fail closed)", err=True)
            raise typer.Exit(1)
        return
    if settings.allow_unsandboxed:
        typer.echo("sandbox unavailable: commands run UNSANDBOXED (OUTBOX_ALLOW_UNSANDBOXED=true, development only)")
        return
    typer.echo("sandbox unavailable: command tools are refused (fail closed)", err=True)
    raise typer.Exit(1)
