"""What every command shares: the configured database (settings and rules checked first,
each problem one line), the one way to fail with a message, and the note on an old name."""

from __future__ import annotations

import typer
from rich.console import Console

from core.platform.settings import get_settings

# Lazy on purpose: each command imports in its body what it runs, so `gridline --help` and a
# command load only their own modules (all of them take several times longer to import).

console = Console()


def open_database(*, migrated: bool = True):  # noqa: ANN201
    """The configured database, after checking the settings and the rules (each problem is
    one line, see ``gridline.cli.explain``). ``migrated``: refuse a database that is not at
    the newest schema, saying to run `gridline db upgrade`."""
    from core.platform.db import engine_from_settings, require_schema

    settings = get_settings()
    check_rules()
    engine = engine_from_settings(settings)
    if migrated:
        require_schema(engine)
    return engine


def check_rules() -> None:
    """Load every rules file with its deployment's override: a bad one raises ``RulesError``
    with one line naming the file and the key."""
    from core.platform.rules import load_every_file
    from ivr import config  # noqa: F401 (registers the hotline's flow files)

    load_every_file()


def deprecated(old: str, new: str) -> None:
    """Say on stderr that ``gridline <old>`` is an old name kept for one release."""
    Console(stderr=True).print(f"[yellow]warning:[/yellow] `gridline {old}` is deprecated and goes away in the "
                               f"next release: use `gridline {new}`", soft_wrap=True)


def fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}", soft_wrap=True)  # file:line stays copyable
    raise typer.Exit(1)
