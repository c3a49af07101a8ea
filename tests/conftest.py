"""Shared fixtures: every database test runs on SQLite and, where GRIDLINE_TEST_PG is set,
on PostgreSQL. Each pytest process gets a database of its own on the PostgreSQL server,
so parallel runs never see each other's rows."""

from __future__ import annotations

import os
import shutil
import sqlite3
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlmodel import SQLModel

import gridline.tables  # noqa: F401 (every table on the metadata: the truncation names them all)
from core.platform import clock
from core.platform.db import make_engine, session_scope
from core.platform.migrations import upgrade
from core.platform.settings import normalise_database_url
from core.reference.demo import load_demo
from gridline.wiring import wire
from tests.support.seaweed import s3_bucket, seaweed  # noqa: F401 (fixtures: a real S3 server)

PG_URL = os.environ.get("GRIDLINE_TEST_PG", "")
# Four pytest workers, their in-process apps and the servers they start share one PostgreSQL
# (max_connections 100): each pool keeps few idle connections (the servers inherit this).
os.environ.setdefault("GRIDLINE_DB_POOL_SIZE", "3")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _backends() -> list:
    params = [pytest.param("sqlite", id="sqlite")]
    if PG_URL:
        params.append(pytest.param("postgres", id="postgres"))
    elif IN_CI:
        raise pytest.UsageError("CI=true but GRIDLINE_TEST_PG is not set: PostgreSQL tests are required")
    return params


def pytest_collection_modifyitems(config, items) -> None:
    """A test marked ``one_database`` exercises something the database is incidental to (a
    recogniser under load, an S3 server vanishing): it runs once, on PostgreSQL where that is
    set, to keep the suite's time for what differs between the two."""
    if not PG_URL:
        return
    once = [item for item in items if item.get_closest_marker("one_database")
            and getattr(item, "callspec", None) is not None and item.callspec.params.get("engine") == "sqlite"]
    if once:
        config.hook.pytest_deselected(items=once)
        dropped = set(map(id, once))
        items[:] = [item for item in items if id(item) not in dropped]


def pytest_terminal_summary(terminalreporter) -> None:
    """Say so when the PostgreSQL half of the suite was not collected."""
    if not PG_URL:
        terminalreporter.write_line(
            "PostgreSQL tests not collected: GRIDLINE_TEST_PG is not set "
            "(e.g. GRIDLINE_TEST_PG=postgresql://postgres@127.0.0.1:5432/test); only SQLite ran.",
            yellow=True,
        )


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A fresh database on the test server for this pytest process, dropped at the end."""
    if not PG_URL:
        pytest.skip("GRIDLINE_TEST_PG not set")
    admin = make_engine(normalise_database_url(PG_URL), isolation_level="AUTOCOMMIT", pool_size=1)
    name = f"gridline_t_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # a missing server is a failure in CI, a skip on a laptop
        if IN_CI:
            raise
        pytest.skip(f"PostgreSQL at {PG_URL} unavailable: {exc}")
    url = make_url(normalise_database_url(PG_URL)).set(database=name)
    yield url.render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def pg_engine(pg_server_url) -> Iterator[Engine]:
    engine = make_engine(pg_server_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("dbtemplate") / "template.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return str(path)


_OWNED_SEQUENCES: dict[str, list[str]] = {}


def _owned_sequences(conn) -> list[str]:
    """The sequences of the tables' identity and serial columns: those TRUNCATE ... RESTART
    IDENTITY resets (a sequence of its own keeps counting across tests, as it always has)."""
    return list(conn.execute(text(
        "SELECT quote_ident(n.nspname) || '.' || quote_ident(s.relname) FROM pg_class s "
        "JOIN pg_namespace n ON n.oid = s.relnamespace "
        "JOIN pg_depend d ON d.objid = s.oid AND d.deptype IN ('a', 'i') "
        "JOIN pg_class t ON t.oid = d.refobjid WHERE s.relkind = 'S' AND t.relname = ANY(:tables)"),
        {"tables": [t.name for t in SQLModel.metadata.sorted_tables]}).scalars())


def _empty_all(engine: Engine) -> None:
    """Every table emptied and its ids started again, as TRUNCATE ... RESTART IDENTITY does.
    TRUNCATE gives every table and index new files: about 0.4 s of the server's CPU a test,
    where deleting the few rows a test left takes milliseconds. The tables are locked as
    TRUNCATE locks them, so a transaction still open elsewhere is waited for all the same."""
    tables = SQLModel.metadata.sorted_tables
    key = engine.url.render_as_string(hide_password=True)
    with engine.begin() as conn:
        if key not in _OWNED_SEQUENCES:
            _OWNED_SEQUENCES[key] = _owned_sequences(conn)
        names = ", ".join(f'"{t.name}"' for t in tables)
        statements = [f"LOCK TABLE {names} IN ACCESS EXCLUSIVE MODE"]
        statements += [f'DELETE FROM "{t.name}"' for t in reversed(tables)]  # who refers to a row goes first
        statements += [f"ALTER SEQUENCE {name} RESTART" for name in _OWNED_SEQUENCES[key]]
        conn.exec_driver_sql("; ".join(statements))


@pytest.fixture(params=_backends())
def engine(request, tmp_path) -> Iterator[Engine]:
    """A migrated, empty database: SQLite (a copy of a migrated template) or PostgreSQL."""
    # The process caches routing indexes and the calendar per database URL; the PostgreSQL
    # URL is the same for every test, its rows are not.
    from core.cases.intake import invalidate_routing
    from core.deadlines.sla import invalidate_calendars

    invalidate_routing()
    invalidate_calendars()
    if request.param == "sqlite":
        path = tmp_path / "gridline.sqlite3"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        eng = make_engine(f"sqlite:///{path}")
        yield eng
        eng.dispose()
    else:
        eng = request.getfixturevalue("pg_engine")
        _empty_all(eng)
        yield eng


def _sqlite_demo(engine: Engine, template: str) -> None:
    # The backup API writes through a connection, so it is safe whatever the engine holds open.
    source = sqlite3.connect(template)
    target = engine.raw_connection()
    try:
        source.backup(target.driver_connection)
    finally:
        target.close()
        source.close()


def _pg_demo_rows(engine: Engine) -> tuple[list[tuple[str, bytes]], list[tuple[str, int]]]:
    """Each table's rows (COPY's binary format) and the sequences' places after one real
    ``load_demo`` into the emptied database."""
    _empty_all(engine)
    with session_scope(engine) as s:
        load_demo(s)
    raw = engine.raw_connection()
    try:
        cur = raw.driver_connection.cursor()
        tables = []
        for table in SQLModel.metadata.sorted_tables:
            with cur.copy(f'COPY "{table.name}" TO STDOUT (FORMAT BINARY)') as copy:
                data = b"".join(bytes(block) for block in copy)
            cur.execute(f'SELECT count(*) FROM "{table.name}"')
            if cur.fetchone()[0]:
                tables.append((table.name, data))
        raw.driver_connection.commit()
    finally:
        raw.close()
    with engine.connect() as conn:
        sequences = []
        for name in _owned_sequences(conn):
            value, called = conn.execute(text(f"SELECT last_value, is_called FROM {name}")).one()
            if called:
                sequences.append((name, value))
    _empty_all(engine)
    return tables, sequences


def _pg_demo(engine: Engine, rows: tuple[list[tuple[str, bytes]], list[tuple[str, int]]]) -> None:
    tables, sequences = rows
    raw = engine.raw_connection()
    try:
        cur = raw.driver_connection.cursor()
        for name, data in tables:  # parents first: the foreign keys are checked as they are
            with cur.copy(f'COPY "{name}" FROM STDIN (FORMAT BINARY)') as copy:
                copy.write(data)
        for name, value in sequences:
            cur.execute("SELECT setval(%s, %s)", (name, value))
        raw.driver_connection.commit()
    finally:
        raw.close()


_PG_DEMO: dict[str, tuple] = {}


@pytest.fixture(scope="session")
def sqlite_demo_template(sqlite_template, tmp_path_factory) -> str:
    """The migrated template with the demo district loaded into it, once per process."""
    path = tmp_path_factory.mktemp("demotemplate") / "demo.sqlite3"
    shutil.copy(sqlite_template, path)
    eng = make_engine(f"sqlite:///{path}")
    with session_scope(eng) as s:
        load_demo(s)
    eng.dispose()
    return str(path)


@pytest.fixture
def demo_district(request, engine) -> Engine:
    """The test's empty database holding the demo district (``core.reference.demo``). It is
    loaded for real once per process and database kind, then copied in: the same rows and the
    same next ids as a ``load_demo`` here (its three timestamps, a resident's ``created_at``,
    the audit row's and the index versions', read the time of that one load). Loading it
    took most of a test's own time."""
    from core.cases.intake import invalidate_routing
    from core.deadlines.sla import invalidate_calendars

    if engine.dialect.name == "sqlite":
        _sqlite_demo(engine, request.getfixturevalue("sqlite_demo_template"))
    else:
        key = engine.url.render_as_string(hide_password=True)
        if key not in _PG_DEMO:
            _PG_DEMO[key] = _pg_demo_rows(engine)
        _pg_demo(engine, _PG_DEMO[key])
    # as a load_demo's commit would: this process forgets what it read of the empty database
    invalidate_routing()
    invalidate_calendars()
    return engine


@pytest.fixture
def session(engine):
    with session_scope(engine) as s:
        yield s


@pytest.fixture(scope="session", autouse=True)
def _subscribers_wired() -> None:
    """What follows a case change (SMS, chat notices, staff messages), wired as every entry
    point wires it."""
    wire()


@pytest.fixture(autouse=True)
def _unfrozen_clock():
    yield
    clock.freeze(None)


@pytest.fixture
def override(tmp_path, monkeypatch):
    """A deployment's rules file: ``override(text)`` writes it, points GRIDLINE_RULES at it
    and reloads the rules; ``override(text, "GRIDLINE_FLOW")`` does the same for a sibling
    (GRIDLINE_CATEGORIES, GRIDLINE_FLOW, GRIDLINE_SURVEY_FLOW). The packaged files are back
    after the test."""
    from core.platform import rules

    used: set[str] = set()

    def write(text: str, variable: str = rules.RULES_ENV):
        path = tmp_path / ("district-rules.toml" if variable == rules.RULES_ENV else f"district-{variable.lower()}.toml")
        path.write_text(text, "utf-8")
        monkeypatch.setenv(variable, str(path))
        used.add(variable)
        rules.reload_rules()
        return path

    yield write
    for variable in used:
        monkeypatch.delenv(variable, raising=False)
    rules.reload_rules()
