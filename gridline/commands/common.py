"""What every command shares: the configured database (settings and rules checked first,
each problem one line) and the one way to fail with a message."""

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
    from core.platform.rules import load_rules

    settings = get_settings()
    load_rules()
    engine = engine_from_settings(settings)
    if migrated:
        require_schema(engine)
    return engine


def fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}", soft_wrap=True)  # file:line stays copyable
    raise typer.Exit(1)
