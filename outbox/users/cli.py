"""`outbox users …`: the people who sign in to the web console.

Whoever can run this CLI can write the database, so these commands are not authenticated; they
are audited with the actor `cli`.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from outbox.cli.context import cli_database
from outbox.errors import DomainError
from outbox.users.models import Role
from outbox.users.passwords import password_problem
from outbox.users.schemas import UserOut
from outbox.users.service import add_user, disable_user, list_users, set_password

users_app = typer.Typer(no_args_is_help=True, help="Console users: add, passwd, list, disable.")

CLI_ACTOR = "cli"


def _fail(error: DomainError) -> typer.Exit:
    typer.echo(f"error: {error.detail}", err=True)
    if error.hint:
        typer.echo(f"hint: {error.hint}", err=True)
    return typer.Exit(1)


def _line(user: UserOut) -> str:
    state = "disabled" if user.disabled else "enabled"
    password = "password" if user.has_password else "no password"
    return f"{user.email:<40} {user.role.value:<9} {state:<9} {password:<12} {user.created_at:%Y-%m-%d %H:%M}"


@users_app.command("add")
def add_command(
    email: Annotated[str, typer.Argument(help="The person's e-mail address (their identity user:EMAIL).")],
    role: Annotated[Role, typer.Option(help="approver decides approvals; operator also runs the mail controls.")] = (
        Role.APPROVER
    ),
) -> None:
    """Add a console user; for an existing one, enable it and set its role. Set a password with
    `users passwd`."""
    try:
        with cli_database() as db:
            user = add_user(db, email, role=role, actor=CLI_ACTOR)
    except DomainError as exc:
        raise _fail(exc) from exc
    typer.echo(f"{user.identity} is a console {user.role.value}")
    if not user.has_password:
        typer.echo(f"set a password with: outbox users passwd {user.email}  (or sign in through the proxy)")


def _read_password() -> str:
    if not sys.stdin.isatty():
        # One line from a pipe or file; the trailing newline is not part of the password.
        return sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    while True:
        password: str = typer.prompt("New password", hide_input=True, confirmation_prompt=True)
        problem = password_problem(password)
        if problem is None:
            return password
        typer.echo(f"error: {problem}", err=True)


@users_app.command("passwd")
def passwd_command(
    email: Annotated[str, typer.Argument(help="The console user's e-mail address.")],
) -> None:
    """Set a user's password: prompted twice on a terminal, else one line read from stdin.
    Ends the user's sessions."""
    password = _read_password()
    try:
        with cli_database() as db:
            user = set_password(db, email, password, actor=CLI_ACTOR)
    except DomainError as exc:
        raise _fail(exc) from exc
    typer.echo(f"password set for {user.identity}")


@users_app.command("list")
def list_command(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List console users."""
    with cli_database() as db:
        users = list_users(db)
    if as_json:
        for user in users:
            typer.echo(user.model_dump_json())
        return
    typer.echo(f"{'EMAIL':<40} {'ROLE':<9} {'STATE':<9} {'PASSWORD':<12} CREATED")
    for user in users:
        typer.echo(_line(user))


@users_app.command("disable")
def disable_command(
    email: Annotated[str, typer.Argument(help="The console user's e-mail address.")],
) -> None:
    """Disable a console user and end their sessions (`users add` enables them again)."""
    try:
        with cli_database() as db:
            user = disable_user(db, email, actor=CLI_ACTOR)
    except DomainError as exc:
        raise _fail(exc) from exc
    typer.echo(f"{user.identity} is disabled")
