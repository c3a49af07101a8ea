"""Engine, sessions and migrations. SQLite by default, PostgreSQL by URL."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, event, exc, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Session, create_engine

import core.cases.catalogue  # noqa: F401  (its session hook versions every change to the categories)
import core.places.indexes  # noqa: F401  (its session hook versions every change to the routing indexes' rows)

URL_EXAMPLES = "postgresql://USER@HOST:5432/DATABASE or sqlite:////absolute/path/gridline.sqlite3"


class DatabaseProblem(Exception):
    """The database cannot be used as configured; the message says what to do, in one line."""


def parse_database_url(url: str) -> URL:
    """The URL, checked: a form SQLAlchemy reads, a database Gridline runs on."""
    try:
        parsed = make_url(url)
    except (exc.ArgumentError, ValueError):
        raise DatabaseProblem(f"GRIDLINE_DATABASE_URL {url!r} is not a database URL; write it like {URL_EXAMPLES}") from None
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    supported = (backend == "sqlite" and driver == "pysqlite") or (backend == "postgresql" and driver == "psycopg")
    if not supported:
        raise DatabaseProblem(f"GRIDLINE_DATABASE_URL uses {parsed.drivername!r}, which Gridline does not run on; "
                              f"use PostgreSQL or SQLite: {URL_EXAMPLES}")
    return parsed


def make_engine(url: str, *, create_dir: bool = False, **kw) -> Engine:
    """An engine for ``url``. A SQLite file's directory must exist, unless ``create_dir``
    (the default database under the data directory is created with its directory)."""
    parsed = parse_database_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            folder = Path(parsed.database).parent
            if create_dir:
                folder.mkdir(parents=True, exist_ok=True)
            elif not folder.is_dir():
                raise DatabaseProblem(f"the folder {folder} of the SQLite database in GRIDLINE_DATABASE_URL does not "
                                      f"exist; create it (mkdir -p {folder}) or correct the URL")
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **kw)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # noqa: ANN001
            # WAL lets readers (console, reports) run while an intake writes.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=FULL")  # a committed petition survives a power cut
            cur.close()

        return engine
    kw.setdefault("pool_pre_ping", True)  # a restarted PostgreSQL costs one retry, not an error
    # Connections kept open while idle; up to max_overflow more while busy. A server shared by
    # many processes (instances, workers, a test run) lowers it to stay under max_connections.
    kw.setdefault("pool_size", int(os.environ.get("GRIDLINE_DB_POOL_SIZE") or 10))
    kw.setdefault("max_overflow", 20)
    return create_engine(url, **kw)


def engine_from_settings(settings, **kw) -> Engine:  # noqa: ANN001 (core.platform.settings.Settings)
    """The configured database; the default SQLite file's folder (the data directory) is made."""
    return make_engine(settings.effective_database_url, create_dir=not settings.database_url, **kw)


def where(engine_or_url: Engine | URL | str) -> str:
    """The database for a message, without its password."""
    url = engine_or_url.url if isinstance(engine_or_url, Engine) else make_url(str(engine_or_url)) \
        if isinstance(engine_or_url, str) else engine_or_url
    if url.get_backend_name() == "sqlite":
        return f"SQLite {url.database}"
    return f"PostgreSQL {url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"


def explain_error(error: BaseException, database: Engine | str | None = None) -> str | None:
    """A one-line explanation, with what to do, of a database error; ``None`` if it is not one."""
    if isinstance(error, DatabaseProblem):
        return str(error)
    if not isinstance(error, exc.DBAPIError | exc.NoSuchModuleError | exc.ArgumentError):
        return None
    try:
        at = where(database) if database is not None else "the database"
    except Exception:  # an unparsable URL is explained elsewhere
        at = "the database"
    raw = str(getattr(error, "orig", None) or error)
    first = " ".join(raw.strip().splitlines()[0].split()) if raw.strip() else type(error).__name__
    low = raw.lower()
    if "no such table" in low or ("relation" in low and "does not exist" in low):
        return f"{at} has no Gridline tables (or older ones): run `gridline db upgrade`"
    if "role" in low and "does not exist" in low:
        return (f"{at}: {first}; create the role (README: Using PostgreSQL) or put an existing user in "
                "GRIDLINE_DATABASE_URL")
    if "database" in low and "does not exist" in low:
        return f"{at}: {first}; create it with createdb (README: Using PostgreSQL)"
    if "password authentication failed" in low or "no password supplied" in low:
        return f"{at}: {first}; check the user and password in GRIDLINE_DATABASE_URL"
    if "connection refused" in low or "could not connect" in low or "timeout expired" in low \
            or "could not translate host name" in low or "name or service not known" in low:
        return f"cannot reach {at}: {first}. Is the server running, and is GRIDLINE_DATABASE_URL right?"
    if "unable to open database file" in low:
        return f"cannot open {at}: check that its folder exists and is writable"
    if isinstance(error, exc.OperationalError | exc.InterfaceError):
        return f"{at}: {first}"
    return None




def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def plan_with(session: Session, **settings: str) -> None:
    """PostgreSQL planner settings for the rest of this transaction (``SET LOCAL``), for a
    query whose needs the defaults misjudge; SQLite has none and is left alone. The values
    are the code's own, never a person's input."""
    if is_postgres(session.get_bind()):
        for name, value in settings.items():
            session.execute(text(f"SET LOCAL {name} = {value}"))


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back when it raises."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


_KEPT = "gridline_kept"  # session.info: rows held for the transaction (``keep``)


def keep(session: Session, row: object) -> None:
    """Hold ``row`` until the transaction ends. The session's identity map holds rows only
    weakly: a row read once and dropped (a grid checked to exist, the caller's resident) is
    read from the database again by the next ``session.get`` of the same transaction."""
    session.info.setdefault(_KEPT, []).append(row)


@event.listens_for(OrmSession, "after_transaction_end")
def _let_go(session: OrmSession, transaction: object) -> None:
    if getattr(transaction, "parent", None) is None:  # the transaction, not a savepoint inside it
        session.info.pop(_KEPT, None)


@contextmanager
def savepoint(session: Session) -> Iterator[None]:
    """A SAVEPOINT inside the session's transaction, rolled back alone when its block raises.
    pysqlite opens no transaction before the first write, and a SAVEPOINT outside one is a
    transaction of its own whose RELEASE commits at once: a later failure in the session
    could not take the block's writes back. On SQLite a real transaction is begun first
    (IMMEDIATE: these blocks write, and waiting for the write lock here cannot fail later)."""
    connection = session.connection()
    if connection.dialect.name == "sqlite" and not connection.connection.dbapi_connection.in_transaction:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    with session.begin_nested():
        yield


# The key of the session-level advisory lock that serialises schema changes and the demo load
# across every instance on one PostgreSQL (any constant; "gridline" in ASCII).
SCHEMA_LOCK_KEY = 0x6772_6964_6C69_6E65


@contextmanager
def schema_lock(engine: Engine) -> Iterator[None]:
    """Held while the schema is upgraded and the demo loaded, so instances started at the
    same moment take turns: the first migrates, the others find the schema at its head.
    A PostgreSQL session-level advisory lock on a connection of its own (released by the
    server if the process dies); for a SQLite file, a lock on a file beside it (released by
    the kernel if the process dies)."""
    if not is_postgres(engine):
        database = engine.url.database
        if not database or database == ":memory:":
            yield
            return
        with open(f"{database}.schema-lock", "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)
        return
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
        conn.commit()  # the lock is the session's, not the transaction's
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": SCHEMA_LOCK_KEY})
            conn.commit()





def has_tables(engine: Engine) -> bool:
    return inspect(engine).has_table("case")
