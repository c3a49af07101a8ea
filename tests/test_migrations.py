"""Migrations from an empty database, on both databases, match the models exactly."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlmodel import SQLModel

import core.models  # noqa: F401
from core.db import current_revision, downgrade, make_engine, upgrade


@pytest.fixture(params=["sqlite", "postgres"])
def empty_engine(request, tmp_path):
    if request.param == "sqlite":
        eng = make_engine(f"sqlite:///{tmp_path / 'empty.sqlite3'}")
        yield eng
        eng.dispose()
        return
    shared = request.getfixturevalue("pg_engine")  # the suite's migrated engine on this database
    eng = make_engine(request.getfixturevalue("pg_server_url"))
    with eng.begin() as conn:  # this test owns the schema: start from nothing
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    yield eng
    with eng.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    eng.dispose()
    upgrade(shared)  # leave the database migrated for the tests that follow


def test_upgrade_from_empty_matches_models_and_downgrades(empty_engine):
    upgrade(empty_engine)
    assert current_revision(empty_engine) is not None
    with empty_engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == [], f"models and migrations disagree: {diff}"
    downgrade(empty_engine, "base")
    assert set(inspect(empty_engine).get_table_names()) <= {"alembic_version"}
    upgrade(empty_engine)  # and up again: nothing left behind by the downgrade
    assert inspect(empty_engine).has_table("case")
