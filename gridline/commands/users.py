"""``gridline users``: console accounts (add, list, disable, enable, password) and login
throttles (throttles, unthrottle)."""

from __future__ import annotations

import sys

import typer
from sqlmodel import select

from console.auth import add_user, login_policy, set_disabled, set_password
from console.models import ConsoleUser, ConsoleUserGrid
from console.throttle import clear, current_throttles
from core.errors import DomainError
from core.people.models import Department, Worker
from core.places.models import Grid
from core.platform.clock import local_text, zone_label
from core.platform.db import session_scope
from gridline.commands.common import console, fail, open_database

users_app = typer.Typer(help="Console accounts.", no_args_is_help=True)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    return password


@users_app.command("add")
def add(
    name: str = typer.Argument(..., help="the login name"),
    role: str = typer.Option(..., help="admin, operator, supervisor, worker, department or viewer"),
    grid: list[str] = typer.Option([], "--grid", help="a grid code the account answers for (repeatable)"),
    worker: str = typer.Option(None, "--worker", help="the worker code of a worker account"),
    department: str = typer.Option(None, "--department", help="the department code of a department account"),
    language: str = typer.Option("zh", help="a console language: zh, en or one added as console/locales/<lang>.toml"),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="read the password from standard input"),
) -> None:
    """Create a console account (asks for the password twice, or reads it with --password-stdin)."""
    engine = open_database()
    password = _read_password(password_stdin)
    try:
        with session_scope(engine) as session:
            user = add_user(session, name, password, role, grid_codes=grid, worker_code=worker,
                            department_code=department, language=language, actor="cli")
    except DomainError as exc:
        fail(exc.message)
    console.print(f"user {user.name} ({user.role}) created")


@users_app.command("list")
def list_users() -> None:
    """Every console account with its role, scope and last login."""
    lines = [f"name\trole\tworker\tdepartment\tgrids\tdisabled\tlast login ({zone_label()})"]
    with session_scope(open_database()) as session:
        for user in session.exec(select(ConsoleUser).order_by(ConsoleUser.name)).all():
            grids = session.exec(select(Grid.code).join(ConsoleUserGrid, ConsoleUserGrid.grid_id == Grid.id)
                                 .where(ConsoleUserGrid.user_id == user.id)).all()
            worker = session.get(Worker, user.worker_id) if user.worker_id else None
            dept = session.get(Department, user.department_id) if user.department_id else None
            lines.append("\t".join((user.name, user.role, worker.code if worker else "", dept.code if dept else "",
                                    " ".join(grids), "yes" if user.disabled else "",
                                    local_text(user.last_login_at, label=False))))
    print("\n".join(lines))  # one account a line, tab-separated: easy to read and to grep


def _toggle(name: str, disabled: bool) -> None:
    try:
        with session_scope(open_database()) as session:
            set_disabled(session, name, disabled, actor="cli")
    except DomainError as exc:
        fail(exc.message)
    console.print(f"user {name} {'disabled (logged out everywhere)' if disabled else 'enabled'}")


@users_app.command("disable")
def disable(name: str) -> None:
    """Lock an account out; its sessions end at once."""
    _toggle(name, True)


@users_app.command("enable")
def enable(name: str) -> None:
    """Let a disabled account log in again."""
    _toggle(name, False)


@users_app.command("password")
def password(
    name: str,
    password_stdin: bool = typer.Option(False, "--password-stdin", help="read the password from standard input"),
) -> None:
    """Set a new password; the account's sessions end."""
    engine = open_database()
    new = _read_password(password_stdin)
    try:
        with session_scope(engine) as session:
            set_password(session, name, new, actor="cli")
    except DomainError as exc:
        fail(exc.message)
    console.print(f"password of {name} changed")


@users_app.command("throttles")
def throttles() -> None:
    """The login throttles that make someone wait now (as on the console's users page)."""
    lines = [f"kind\taccount\taddress\tfailures\twait until ({zone_label()})"]
    with session_scope(open_database()) as session:
        for th in current_throttles(session, login_policy()):
            lines.append("\t".join((th.kind, th.account or "*", th.address or "*", str(th.failures),
                                    local_text(th.wait_until, "%Y-%m-%d %H:%M:%S", label=False))))
    print("\n".join(lines))


@users_app.command("unthrottle")
def unthrottle(
    account: str = typer.Option(None, "--account", help="the account whose failures to forget (default: any)"),
    address: str = typer.Option(None, "--address", help="the address whose failures to forget (default: any)"),
) -> None:
    """Forget the failed logins of an account, an address, or the two together (audited)."""
    if not account and not address:
        fail("name --account, --address or both")
    with session_scope(open_database()) as session:
        clear(session, account=account or None, address=address or None, actor="cli", remote=None)
    console.print(f"failed logins of {account or 'any account'} from {address or 'any address'} forgotten")
