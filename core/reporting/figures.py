"""Figures managers read: response, closure, on-time and satisfaction rates (三率) by grid,
category or worker over a period. Queries over the cases (which carry their answered
surveys' counts), never reconstructions; the grouping to a grid level folds micro grids
into their ancestors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func
from sqlmodel import Session, select

from core.cases.models import Case, CaseStatus, Category
from core.people.models import Worker
from core.places.models import Grid, GridLevel
from core.platform.i18n import CORE, DEFAULT

GROUPINGS = ("district", "street", "community", "area", "micro", "category", "worker")


@dataclass
class Rates:
    key: str
    name: str
    received: int = 0
    dispatched: int = 0
    responded_on_time: int = 0
    closed: int = 0
    reported_done: int = 0
    resolved_on_time: int = 0
    surveyed: int = 0
    satisfied: int = 0
    extra: dict = field(default_factory=dict)

    @staticmethod
    def _ratio(a: int, b: int) -> float | None:
        return round(a / b, 4) if b else None

    @property
    def response_rate(self) -> float | None:
        """响应率: dispatched cases accepted within the response deadline."""
        return self._ratio(self.responded_on_time, self.dispatched)

    @property
    def closure_rate(self) -> float | None:
        """办结率: cases received in the period that are closed."""
        return self._ratio(self.closed, self.received)

    @property
    def on_time_rate(self) -> float | None:
        """按期办结率: reported done within the resolution deadline."""
        return self._ratio(self.resolved_on_time, self.reported_done)

    @property
    def satisfaction_rate(self) -> float | None:
        """满意率: answered surveys that said satisfied or basically satisfied."""
        return self._ratio(self.satisfied, self.surveyed)

    def add(self, other: Rates) -> None:
        # Spelled out: the dashboard adds up thousands of these per page.
        self.received += other.received
        self.dispatched += other.dispatched
        self.responded_on_time += other.responded_on_time
        self.closed += other.closed
        self.reported_done += other.reported_done
        self.resolved_on_time += other.resolved_on_time
        self.surveyed += other.surveyed
        self.satisfied += other.satisfied


def _ancestor_map(session: Session, level: GridLevel) -> dict[int, Grid]:
    """grid id -> its ancestor at ``level`` (grids above that level map to nothing)."""
    grids = {g.id: g for g in session.exec(select(Grid)).all()}
    out: dict[int, Grid] = {}
    for gid, grid in grids.items():
        node: Grid | None = grid
        while node is not None and node.level != level:
            node = grids.get(node.parent_id) if node.parent_id else None
        if node is not None:
            out[gid] = node
    return out


def raw_rates(session: Session, start: datetime, end: datetime, keys: Sequence, *,
              where: Sequence = ()) -> dict[tuple, Rates]:
    """The counts behind the rates of the cases received in [start, end) (naive UTC), per
    combination of ``keys`` (columns of ``Case``): one pass over the period's cases, however
    many ways the caller then folds them. The answered surveys are counted on each case
    (``Case.surveys_answered``/``surveys_satisfied``, kept with the Survey rows). ``where``:
    more conditions on ``Case`` (a category, a grid and the grids below it, a reader's scope)."""
    stmt = (
        select(
            *keys,
            func.count().filter(Case.status != CaseStatus.merged),
            func.count().filter(Case.dispatched_at.is_not(None) | Case.responded_on_time.is_not(None)),
            func.count().filter(Case.responded_on_time.is_(True)),
            func.count().filter(Case.status == CaseStatus.closed),
            func.count(Case.resolved_on_time),
            func.count().filter(Case.resolved_on_time.is_(True)),
            func.sum(Case.surveys_answered),
            func.sum(Case.surveys_satisfied),
        )
        .where(Case.created_at >= start, Case.created_at < end, *where)
        .group_by(*keys)
    )
    n = len(keys)
    per_key: dict[tuple, Rates] = {}
    for row in session.connection().execute(stmt).all():  # plain rows: thousands per dashboard
        key = tuple(row[:n])
        received, dispatched, responded, closed, reported, resolved, surveyed, satisfied = row[n:]
        per_key[key] = Rates("", "", received or 0, dispatched or 0, responded or 0, closed or 0,
                             reported or 0, resolved or 0, int(surveyed or 0), int(satisfied or 0))
    return per_key


def rates(session: Session, start: datetime, end: datetime, group_by: str = "community", *,
          where: Sequence = (), language: str = DEFAULT) -> list[Rates]:
    """Rates of the cases received in [start, end) (naive UTC), one row per group. ``where``:
    more conditions on ``Case`` (a category, a grid and the grids below it, a reader's scope)."""
    if group_by not in GROUPINGS:
        raise ValueError(f"group_by must be one of {GROUPINGS}")
    key_col = {"category": Case.category_id, "worker": Case.worker_id}.get(group_by, Case.grid_id)
    per_key = {key[0]: row for key, row in raw_rates(session, start, end, (key_col,), where=where).items()}
    return fold(session, per_key, group_by, language)


def fold(session: Session, per_key: dict, group_by: str, language: str = DEFAULT) -> list[Rates]:
    """Counts per category id, worker id or grid id, as named rows of ``group_by`` (grids
    folded into their ancestor at that level); the row of cases without one (``-``) is named
    in ``language`` (``report.*`` of the core catalogue)."""
    if group_by == "category":
        names = {c.id: (c.code, c.name) for c in session.exec(select(Category)).all()}
        return _fold(per_key, lambda k: names.get(k, ("-", CORE.t(language, "report.uncategorised"))))
    if group_by == "worker":
        names = {w.id: (w.code, w.name) for w in session.exec(select(Worker)).all()}
        return _fold(per_key, lambda k: names.get(k, ("-", CORE.t(language, "report.undispatched"))))
    ancestors = _ancestor_map(session, GridLevel(group_by))
    unplaced = ("-", CORE.t(language, "report.unplaced"))
    return _fold(per_key, lambda k: (ancestors[k].code, ancestors[k].name) if k in ancestors else unplaced)


def project(per_key: dict[tuple, Rates], index: int) -> dict:
    """Counts per combination of keys, added up per one of the keys."""
    out: dict = {}
    for key, row in per_key.items():
        out.setdefault(key[index], Rates(str(key[index]), "")).add(row)
    return out


def _fold(per_key: dict, label) -> list[Rates]:  # noqa: ANN001
    out: dict[str, Rates] = {}
    for key, row in per_key.items():
        code, name = label(key)
        out.setdefault(code, Rates(code, name)).add(row)
    return sorted(out.values(), key=lambda r: r.key)


def totals(rows: list[Rates], language: str = DEFAULT) -> Rates:
    total = Rates("*", CORE.t(language, "report.total"))
    for row in rows:
        total.add(row)
    return total
