"""The categories, their SLA hours and the departments, read once per process instead of on
every petition.

Intake reads categories several times per petition (the code a channel names, the
department and the deadlines of dispatch, the keywords of a suggestion, a duplicate's
radius) and names the department in the staff message; they change a few times a year.
Each process keeps one immutable copy per database, invalidated the way the routing
indexes are (``core.places.indexes``): every flush that adds, changes or deletes a
category, an SLA row or a department bumps the ``reference`` version row in the same
transaction (a session hook, so no writer can forget it). The end of that transaction
drops this process's copy at once; another process sees the version move within
``[indexes] check_seconds``. A session that has changed them and not committed yet reads
the tables itself, so it sees its own change.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event, insert, select, update
from sqlalchemy.orm import Session

from core.cases.models import Category, Urgency
from core.deadlines.models import CategorySla
from core.people.models import Department
from core.places.models import IndexVersion
from core.platform.clock import utcnow
from core.platform.rules import load_rules

REFERENCE = "reference"  # the IndexVersion row of these tables
WATCHED = (Category, CategorySla, Department)
_CHANGED = "gridline_reference_changed"  # session.info: the databases this transaction changed


@dataclass(frozen=True)
class CategoryRef:
    """A category as intake reads it (the ``Category`` row's fields, never written back)."""

    id: int
    code: str
    name: str
    department_id: int | None
    keywords: tuple[str, ...]
    duplicate_radius_m: float
    duplicate_window_hours: float
    active: bool


@dataclass(frozen=True)
class DepartmentRef:
    """A department as a message names it (no phone: callers needing it read the row)."""

    id: int
    code: str
    name: str


@dataclass(frozen=True)
class Catalogue:
    version: int
    by_code: dict[str, CategoryRef]
    by_id: dict[int, CategoryRef]
    sla: dict[tuple[int, Urgency], tuple[float, float]]  # (category, urgency) → (response, resolution) hours
    departments: dict[int, DepartmentRef]

    @property
    def active(self) -> list[CategoryRef]:
        return [c for c in self.by_id.values() if c.active]


def _key(bind: Any) -> str:
    engine = bind.engine if hasattr(bind, "engine") else bind
    return engine.url.render_as_string(hide_password=True)


def _version(session: Session) -> int:
    value = session.execute(select(IndexVersion.version).where(IndexVersion.name == REFERENCE)).scalar()
    return int(value or 0)


def _build(session: Session) -> Catalogue:
    version = _version(session)  # first: the copy holds at least this version's changes
    refs = [CategoryRef(c.id, c.code, c.name, c.department_id, tuple(c.keywords or ()), c.duplicate_radius_m,
                        c.duplicate_window_hours, c.active)
            for c in session.execute(select(Category).order_by(Category.id)).scalars()]
    sla = {(s.category_id, Urgency(s.urgency)): (s.response_hours, s.resolution_hours)
           for s in session.execute(select(CategorySla)).scalars()}
    departments = {d.id: DepartmentRef(d.id, d.code, d.name)
                   for d in session.execute(select(Department)).scalars()}
    return Catalogue(version, {c.code: c for c in refs}, {c.id: c for c in refs}, sla, departments)


@dataclass
class _Entry:
    snapshot: Catalogue
    checked_at: float


class CatalogueCache:
    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self.builds = 0  # copies read from the database (tests, the benchmark)

    def get(self, session: Session) -> Catalogue:
        key = _key(session.get_bind())
        if key in session.info.get(_CHANGED, ()):  # our own uncommitted change: read it as it is
            return _build(session)
        entry = self._entries.get(key)
        now = time.monotonic()
        if entry is not None:
            if now - entry.checked_at < float(load_rules()["indexes"]["check_seconds"]):
                return entry.snapshot
            if _version(session) == entry.snapshot.version:
                entry.checked_at = now
                return entry.snapshot
        snapshot = _build(session)
        with self._lock:
            self._entries[key] = _Entry(snapshot, now)
            self.builds += 1
        return snapshot

    def drop(self, keys: set[str]) -> None:
        with self._lock:
            for key in keys:
                self._entries.pop(key, None)

    def clear(self) -> None:
        """Forget every copy (a test database that was emptied)."""
        with self._lock:
            self._entries.clear()


CACHE = CatalogueCache()


def catalogue(session: Session) -> Catalogue:
    return CACHE.get(session)


def category(session: Session, code: str) -> CategoryRef | None:
    return CACHE.get(session).by_code.get(code)


def category_by_id(session: Session, category_id: int) -> CategoryRef | None:
    return CACHE.get(session).by_id.get(category_id)


def sla_hours(session: Session, category_id: int, urgency: Urgency | str) -> tuple[float, float] | None:
    """(response, resolution) hours of the category's SLA row for ``urgency``, or None."""
    return CACHE.get(session).sla.get((category_id, Urgency(urgency)))


def department(session: Session, department_id: int) -> DepartmentRef | None:
    return CACHE.get(session).departments.get(department_id)


def invalidate() -> None:
    CACHE.clear()


def changed(session: Session) -> None:
    """Bump the version in the caller's transaction (done for every ORM flush of a watched
    row; call it after bulk SQL that bypasses the ORM)."""
    conn = session.connection()
    bumped = conn.execute(update(IndexVersion).where(IndexVersion.name == REFERENCE)
                          .values(version=IndexVersion.version + 1, changed_at=utcnow())).rowcount
    if not bumped:  # a database whose row was removed (a truncated test database)
        conn.execute(insert(IndexVersion).values(name=REFERENCE, version=1, changed_at=utcnow()))
    session.info.setdefault(_CHANGED, set()).add(_key(session.get_bind()))


@event.listens_for(Session, "before_flush")
def _bump_on_watched_changes(session: Session, _context: Any, _instances: Any) -> None:
    for obj in (*session.new, *session.dirty, *session.deleted):
        if isinstance(obj, WATCHED):
            changed(session)
            return


@event.listens_for(Session, "after_transaction_end")
def _drop_after_local_change(session: Session, transaction: Any) -> None:
    # After the transaction itself (a savepoint's end fires this too, and after_commit);
    # a rolled-back change drops the copy as well, which costs one read.
    if transaction.parent is None:
        keys = session.info.pop(_CHANGED, None)
        if keys:
            CACHE.drop(keys)
