"""Alembic environment: the engine is handed in by ``core.platform.migrations`` (no alembic.ini needed)."""

from alembic import context
from sqlmodel import SQLModel

import gridline.tables  # noqa: F401  (registers the tables on SQLModel.metadata)

config = context.config
engine = config.attributes.get("engine")
if engine is None:  # `alembic` run by hand: take the URL from the settings
    from core.platform.db import engine_from_settings
    from core.platform.settings import get_settings

    engine = engine_from_settings(get_settings())

with engine.connect() as connection:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # Batch migrations rebuild a table (copy, drop, rename); with foreign keys enforced
        # SQLite refuses to drop a table others point at. The pragma only works outside a
        # transaction, and is restored below; the rebuilt tables keep their constraints.
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()
    try:
        with connection.begin():
            context.configure(
                connection=connection,
                target_metadata=SQLModel.metadata,
                render_as_batch=sqlite,
                compare_type=True,
            )
            context.run_migrations()
    finally:
        if sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()
