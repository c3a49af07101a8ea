"""The schema's migrations (alembic, migrations/versions): upgrade, downgrade, the revision a
database is at. A module of its own so that only a process that migrates loads alembic."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from core.platform.db import DatabaseProblem, where

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config(None)).get_current_head()


def require_schema(engine: Engine) -> None:
    """Raise :class:`DatabaseProblem` unless the database is at the newest migration."""
    current, head = current_revision(engine), head_revision()
    if current == head:
        return
    if current is None:
        raise DatabaseProblem(f"{where(engine)} has no Gridline tables yet: run `gridline db upgrade`")
    known = {s.revision for s in ScriptDirectory.from_config(alembic_config(None)).walk_revisions()}
    if current not in known:
        raise DatabaseProblem(f"{where(engine)} is at revision {current}, which this Gridline does not know "
                              "(made by a newer version?); upgrade Gridline")
    raise DatabaseProblem(f"{where(engine)} is at revision {current}, this Gridline needs {head}: "
                          "run `gridline db upgrade`")


def alembic_config(engine: Engine):
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str) -> None:
    command.downgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
