"""What every command shares: the configured database (settings and rules checked first,
each problem one line, what follows a change of a case wired), the one way to fail with a
message, the explanation of a known problem instead of a traceback, and the note on an old
name."""

from __future__ import annotations

import getpass

import typer

import ivr.config  # noqa: F401 (registers the hotline's flow files, so that check_rules loads them too)
from core.platform.db import engine_from_settings, explain_error
from core.platform.media import MediaSettingInvalid
from core.platform.migrations import require_schema
from core.platform.rules import RulesError, load_every_file
from core.platform.settings import SettingsInvalid, get_settings
from gridline.commands.terminal import make_console
from gridline.wiring import wire

console = make_console()

# `cases list` and `grids households` print at most this many rows at once.
MAX_ROWS = 1000


def open_database(*, migrated: bool = True):  # noqa: ANN201
    """The configured database, after checking the settings and the rules (each problem is
    one line, see :func:`explain`). ``migrated``: refuse a database that is not at the newest
    schema, saying to run `gridline db upgrade`. A command changes cases only through the
    database it opens here, so what follows a change is wired here first."""
    wire()
    settings = get_settings()
    check_rules()
    engine = engine_from_settings(settings)
    if migrated:
        require_schema(engine)
    return engine


def check_rules() -> None:
    """Load every rules file with its deployment's override: a bad one raises ``RulesError``
    with one line naming the file and the key."""
    load_every_file()


def explain(error: BaseException) -> str | None:
    """What a person should read instead of a traceback: one line that says what is wrong
    and what to do, for the problems of configuration, database and files that a
    newcomer meets. ``None`` for anything else (a bug keeps its traceback)."""
    if isinstance(error, SettingsInvalid | RulesError | MediaSettingInvalid):
        return str(error)
    try:
        database = get_settings().effective_database_url
    except SettingsInvalid:
        database = None
    message = explain_error(error, database)
    if message is not None:
        return message
    if isinstance(error, OSError) and error.filename:
        return f"cannot use {error.filename}: {error.strerror or error}"
    return None


def cli_actor() -> str:
    """Who the audit trail names for a command: the login name."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no login name in a bare container
        return "cli"


def deprecated(old: str, new: str) -> None:
    """Say on stderr that ``gridline <old>`` is an old name kept for one release."""
    make_console(stderr=True).print(f"[yellow]warning:[/yellow] `gridline {old}` is deprecated and goes away in the "
                               f"next release: use `gridline {new}`", soft_wrap=True)


def fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}", soft_wrap=True)  # file:line stays copyable
    raise typer.Exit(1)
