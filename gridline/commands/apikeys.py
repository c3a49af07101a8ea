"""``gridline apikeys add|list|disable``: keys for systems that file requests through Open311."""

from __future__ import annotations

import typer

from core.errors import DomainError
from core.people import apikeys
from core.platform.clock import local_text, zone_label
from core.platform.db import session_scope
from gridline.commands import terminal
from gridline.commands.common import console, fail, open_database

apikeys_app = typer.Typer(help="Keys for other systems filing requests through Open311 (/open311/v2/).",
                          no_args_is_help=True)


@apikeys_app.command("add")
def add(name: str = typer.Argument(..., help="who the key is for, e.g. city-12345")) -> None:
    """Make a key. It is printed once: only its hash is kept."""
    try:
        with session_scope(open_database()) as session:
            _, key = apikeys.add_key(session, name, actor="cli")
    except DomainError as exc:
        fail(exc.message)
    console.print(f"API key for {name} (shown only now; Gridline keeps only its hash):")
    print(key, flush=True)


@apikeys_app.command("list")
def list_keys() -> None:
    """The keys, their first characters and when they were last used (the district's local time)."""
    table = terminal.table("name", "starts with", f"created ({zone_label()})", f"last used ({zone_label()})", "state")
    with session_scope(open_database()) as session:
        for row in apikeys.list_keys(session):
            table.add_row(row.name, row.prefix + "…", local_text(row.created_at, label=False),
                          local_text(row.last_used_at, label=False) if row.last_used_at else "—",
                          "disabled" if row.disabled_at else "active")
    console.print(table)


@apikeys_app.command("disable")
def disable(name: str = typer.Argument(...)) -> None:
    """Refuse the key from now on."""
    try:
        with session_scope(open_database()) as session:
            apikeys.disable_key(session, name, actor="cli")
    except DomainError as exc:
        fail(exc.message)
    console.print(f"disabled the key {name}")
