"""``gridline db``: the database schema (alembic migrations)."""

from __future__ import annotations

import typer
from alembic import command

from core.platform.db import schema_lock
from core.platform.migrations import alembic_config, current_revision, upgrade
from gridline.commands.common import console, open_database

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)

@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    engine = open_database(migrated=False)
    with schema_lock(engine):
        upgrade(engine, revision)
    console.print(f"database at revision {current_revision(engine)}")


@db_app.command("revision")
def db_revision(message: str = typer.Option(..., "-m", "--message", help="what the migration changes")) -> None:
    """Write a new migration from the difference between the tables (gridline/tables.py) and the database."""
    engine = open_database(migrated=False)
    upgrade(engine)  # compare against the newest schema, not an old one
    command.revision(alembic_config(engine), message=message, autogenerate=True)

