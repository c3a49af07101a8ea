"""Readable case numbers: the local date and a per-day sequence (``2611170001``), short
enough to read out digit by digit on the phone, sortable, and unique without a global
counter row.

On PostgreSQL a number is taken by one statement committed by itself, on a connection of its
own (a small pool beside the engine's), and committed at once. Taken in the petition's
transaction, the day's counter row stayed locked until that transaction committed — after
routing, dispatch and their events — so every petition of the day waited for the one
before it, whatever the number of clients, processes or cores (bench/intake_profile.py,
bench/load.py). The price: a petition whose transaction fails after it was numbered leaves
a gap in the day's numbers; a number is still never given twice. Its commit need not reach
the disk by itself (``synchronous_commit`` off): the petition's own commit, later in the
same log, flushes it, and a number whose petition was never committed may be lost.
SQLite has one writer at a time: there the number is taken in the petition's transaction.
"""

from __future__ import annotations

import threading
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, bindparam, create_engine, event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session

from core.cases.models import CaseSequence
from core.platform.clock import utcnow


def local_day(at: datetime, tz: str) -> str:
    return at.replace(tzinfo=ZoneInfo("UTC")).astimezone(ZoneInfo(tz)).strftime("%y%m%d")


def next_case_number(session: Session, at: datetime | None = None, tz: str = "Asia/Shanghai") -> str:
    """YYMMDD + a per-day sequence of at least four digits."""
    day = local_day(at or utcnow(), tz)
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        seq = session.execute(_TAKE_SQLITE, {"day": day}).scalar_one()
        return f"{day}{seq:04d}"
    with _side_engine(getattr(bind, "engine", bind)).connect() as conn:
        seq = conn.execute(_TAKE_PG, {"day": day}).scalar_one()  # committed by itself (autocommit)
    return f"{day}{seq:04d}"


def _take(insert):  # noqa: ANN001, ANN202
    """The next number of the day given as the ``day`` parameter."""
    return (
        insert(CaseSequence)
        .values(day=bindparam("day"), last=1)
        .on_conflict_do_update(index_elements=["day"], set_={"last": CaseSequence.last + 1})
        .returning(CaseSequence.last)
    )


# Built once: the same statement for every petition (its cache key is then computed once).
_TAKE_PG, _TAKE_SQLITE = _take(pg_insert), _take(sqlite_insert)


# The numbering connections of each database, beside (never from) its engine's pool: a
# database thread holding one of the pool's connections for its petition must never wait for
# a second one from the same pool.
_SIDE_ENGINES: dict[str, Engine] = {}
_SIDE_LOCK = threading.Lock()


def _side_engine(engine: Engine) -> Engine:
    key = engine.url.render_as_string(hide_password=False)
    side = _SIDE_ENGINES.get(key)
    if side is None:
        with _SIDE_LOCK:
            side = _SIDE_ENGINES.get(key)
            if side is None:
                # Autocommit: a number is one statement, atomic by itself; BEGIN and COMMIT
                # would be two more round trips for each petition.
                # Four kept open (two were too few: with 8 clients a connection beyond the kept
                # ones was opened and closed for one number six times a second, a backend forked
                # each time; bench/load.py counts them). A number is one short statement, so
                # more than four at once is rare; the engine's own pool may be smaller (tests).
                kept = min(4, engine.pool.size()) if callable(getattr(engine.pool, "size", None)) else 2
                side = create_engine(engine.url, pool_size=kept, max_overflow=14, pool_timeout=10,
                                     pool_pre_ping=True, isolation_level="AUTOCOMMIT")
                # Set once per connection rather than once per number (a round trip each):
                # these connections take numbers and nothing else.
                event.listen(side, "connect", _commit_without_waiting_for_disk)
                _SIDE_ENGINES[key] = side
    return side


def _commit_without_waiting_for_disk(dbapi_connection, _record) -> None:  # noqa: ANN001
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit TO OFF")
    dbapi_connection.commit()
