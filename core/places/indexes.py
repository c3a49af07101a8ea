"""The one cache of routing indexes: the micro grids' polygons (``GridLocator``), the
gazetteer and the working calendar, built from the database and shared by the process.

One invalidation path, which reaches every process that shares the database: every flush
that adds, changes or deletes a grid, a gazetteer entry, a household or a calendar day
bumps the ``IndexVersion`` row in the same transaction (a session hook, so no writer can
forget it; ``changed`` is there for bulk SQL that bypasses the ORM). A process asks for the
version at most every ``[indexes] check_seconds`` (one primary-key read) and, when it
moved, rebuilds in a background thread while requests go on with the indexes they have;
the new ones are swapped in when complete. Only a process with no indexes yet (cold)
builds on the request path, once. A commit in this process that bumped the version starts
the rebuild at once.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import Engine, event, insert, select, update
from sqlalchemy.orm import Session
from sqlmodel import Session as ModelSession

from core.deadlines.calendar import WorkingCalendar, default_working_hours
from core.deadlines.models import CalendarDay
from core.places.models import GazetteerEntry, Grid, Household, IndexVersion
from core.places.routing import Gazetteer, GridLocator
from core.platform.clock import utcnow
from core.platform.retry import transient
from core.platform.rules import load_rules
from core.platform.settings import get_settings

log = logging.getLogger(__name__)

ROUTING = "routing"
# Rows whose change makes the indexes stale.
WATCHED = (Grid, GazetteerEntry, Household, CalendarDay)


# -- the version row ----------------------------------------------------------------------


def changed(session: Session) -> None:
    """Bump the version in the caller's transaction (done for every ORM flush of a watched
    row; call it after bulk SQL that bypasses the ORM)."""
    conn = session.connection()
    bumped = conn.execute(
        update(IndexVersion).where(IndexVersion.name == ROUTING)
        .values(version=IndexVersion.version + 1, changed_at=utcnow())
    ).rowcount
    if not bumped:  # a database whose row was removed (a truncated test database)
        conn.execute(insert(IndexVersion).values(name=ROUTING, version=1, changed_at=utcnow()))
    session.info.setdefault("gridline_index_changed", set()).add(_key(session.get_bind()))


def current_version(session: Session) -> int:
    value = session.execute(select(IndexVersion.version).where(IndexVersion.name == ROUTING)).scalar()
    return int(value or 0)


@event.listens_for(Session, "before_flush")
def _bump_on_watched_changes(session: Session, _context: Any, _instances: Any) -> None:
    for obj in (*session.new, *session.dirty, *session.deleted):
        if isinstance(obj, WATCHED):
            changed(session)
            return


@event.listens_for(Session, "after_commit")
def _rebuild_after_local_change(session: Session) -> None:
    keys = session.info.pop("gridline_index_changed", None)
    if keys:
        CACHE.mark_stale(keys)


@event.listens_for(Session, "after_rollback")
def _forget_rolled_back_change(session: Session) -> None:
    session.info.pop("gridline_index_changed", None)


# -- the snapshot ----------------------------------------------------------------------------


@dataclass
class RoutingIndexes:
    """One consistent build of the indexes at ``version``. Never changed after it is built
    (views at another threshold and calendars per time zone are derived and memoised)."""

    version: int
    locator: Any  # core.places.routing.GridLocator
    gazetteer: Any  # core.places.routing.Gazetteer
    calendar_days: dict[date, bool]
    built_ms: float
    _views: dict[float, Any] = field(default_factory=dict, repr=False)
    _calendars: dict[tuple, Any] = field(default_factory=dict, repr=False)

    def gazetteer_at(self, min_confidence: float) -> Any:
        """The same gazetteer answering only above ``min_confidence`` (the hotline asks
        for surer matches than the chat); shares every entry, costs nothing to make."""
        if min_confidence == self.gazetteer.min_confidence:
            return self.gazetteer
        view = self._views.get(min_confidence)
        if view is None:
            view = copy.copy(self.gazetteer)
            view.min_confidence = min_confidence
            self._views[min_confidence] = view
        return view

    def calendar(self, tz: str) -> Any:
        """The working calendar (rules' working hours) in the district's time zone."""

        hours = tuple(default_working_hours())
        cal = self._calendars.get((tz, hours))
        if cal is None:
            cal = self._calendars[(tz, hours)] = WorkingCalendar(self.calendar_days, hours=hours, tz=tz)
        return cal


def build(session: Session) -> RoutingIndexes:
    """Read the version first, then the rows: the indexes hold at least that version's changes."""

    started = time.perf_counter()
    version = current_version(session)
    locator, gazetteer = GridLocator.from_session(session), Gazetteer.from_session(session)
    days = {d: bool(w) for d, w in session.execute(select(CalendarDay.day, CalendarDay.is_working)).all()}
    snapshot = RoutingIndexes(version, locator, gazetteer, days, 0.0)
    try:
        snapshot.calendar(get_settings().timezone)  # the one every dispatch needs
    except Exception:  # settings problems are reported where they are loaded
        log.debug("calendar not prepared", exc_info=True)
    snapshot.built_ms = (time.perf_counter() - started) * 1000
    return snapshot


# -- the cache ---------------------------------------------------------------------------------


def _key(bind: Any) -> str:
    engine = bind.engine if hasattr(bind, "engine") else bind
    return engine.url.render_as_string(hide_password=True)


@dataclass
class _Entry:
    engine: Engine
    snapshot: RoutingIndexes | None = None
    checked_at: float = 0.0
    stale: bool = False  # this process changed the rows; check at the next request
    rebuilding: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)  # the cold build


class IndexCache:
    """Per database (by URL), the current snapshot; see the module's docstring."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self.rebuilds = 0  # background rebuilds started (for tests and the benchmark)

    def _entry(self, engine: Engine) -> _Entry:
        key = _key(engine)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry(engine)
            return entry

    def get(self, session: Session) -> RoutingIndexes:
        """The indexes for the session's database; a version check reuses its connection."""
        return self._get(self._entry(session.get_bind()), session)

    def for_engine(self, engine: Engine) -> RoutingIndexes:
        """The same, opening a short session only when a check or a cold build is due."""
        return self._get(self._entry(engine), None)

    def _get(self, entry: _Entry, session: Session | None) -> RoutingIndexes:
        snapshot = entry.snapshot
        if snapshot is None:
            return self._cold(entry, session)
        now = time.monotonic()
        if entry.stale or now - entry.checked_at >= _check_seconds():
            entry.checked_at, entry.stale = now, False
            try:
                version = current_version(session) if session is not None else self._read_version(entry.engine)
            except Exception as exc:  # the database is restarting: keep routing with what we have
                if session is not None and transient(exc):
                    # ... but not on the caller's own session: its connection is lost and its
                    # transaction with it (the case it wrote too). Swallowed, the next statement
                    # raised PendingRollbackError, which no retry recognised: the hotline told
                    # the caller 系统繁忙 (tests/gridline/test_chaos.py). Raised, the caller's
                    # work is tried again on a new connection.
                    raise
                log.warning("could not read the routing index version", exc_info=True)
                return snapshot
            if version != snapshot.version:
                self._rebuild_in_background(entry)
        return snapshot

    @staticmethod
    def _read_version(engine: Engine) -> int:
        with ModelSession(engine) as session:
            return current_version(session)

    def _cold(self, entry: _Entry, session: Session | None) -> RoutingIndexes:
        with entry.lock:  # concurrent first requests build once
            if entry.snapshot is None:
                if session is not None:
                    entry.snapshot = build(session)
                else:
                    with ModelSession(entry.engine) as own:
                        entry.snapshot = build(own)
                entry.checked_at = time.monotonic()
                log.info("routing indexes built (version %d, %.0f ms)", entry.snapshot.version, entry.snapshot.built_ms)
            return entry.snapshot

    def _rebuild_in_background(self, entry: _Entry) -> None:
        with self._lock:
            if entry.rebuilding:
                return
            entry.rebuilding = True
            self.rebuilds += 1

        def rebuild() -> None:
            try:
                with ModelSession(entry.engine) as session:
                    fresh = build(session)
                if entry.snapshot is None or fresh.version != entry.snapshot.version:
                    entry.snapshot = fresh  # the swap: one reference assignment
                    log.info("routing indexes rebuilt (version %d, %.0f ms)", fresh.version, fresh.built_ms)
            except Exception:
                log.exception("rebuilding the routing indexes failed; the previous ones stay in use")
            finally:
                entry.rebuilding = False
                entry.checked_at = time.monotonic()

        threading.Thread(target=rebuild, name="gridline-index-rebuild", daemon=True).start()

    def mark_stale(self, keys: set[str]) -> None:
        """This process committed a change: rebuild now, in the background."""
        with self._lock:
            entries = [self._entries[k] for k in keys if k in self._entries]
        for entry in entries:
            if entry.snapshot is not None:
                entry.stale = True
                self._rebuild_in_background(entry)

    def refresh(self, engine: Engine) -> RoutingIndexes:
        """Build now and swap, on the caller's thread (start-up warming, the benchmark)."""
        entry = self._entry(engine)
        with ModelSession(engine) as session:
            entry.snapshot = build(session)
        entry.checked_at = time.monotonic()
        return entry.snapshot

    def current(self, engine: Engine) -> RoutingIndexes | None:
        """The snapshot held now, without checking or building anything."""
        return self._entry(engine).snapshot

    def wait_idle(self, engine: Engine, timeout: float = 30.0) -> RoutingIndexes | None:
        """Wait until no background rebuild is running (tests, the benchmark)."""
        entry = self._entry(engine)
        deadline = time.monotonic() + timeout
        while entry.rebuilding and time.monotonic() < deadline:
            time.sleep(0.005)
        return entry.snapshot

    def clear(self) -> None:
        """Forget every snapshot of this process (a test database that was emptied)."""
        with self._lock:
            self._entries.clear()


def _check_seconds() -> float:
    return float(load_rules()["indexes"]["check_seconds"])


CACHE = IndexCache()


def routing_indexes(session: Session) -> RoutingIndexes:
    return CACHE.get(session)


def indexes_for(engine: Engine) -> RoutingIndexes:
    return CACHE.for_engine(engine)


def invalidate() -> None:
    CACHE.clear()
