"""What managers read: the dashboard's figures and the weekly, monthly and quarterly
reports (周汇总、月通报、季考核). The one module of these queries: the console's dashboard,
its report downloads, ``gridline report`` and the tests all read figures from here.

Reports are queries over cases, events and surveys, never reconstructions. The rates are
``core.reporting.figures`` (one definition of each rate); this module adds the period arithmetic, the
filters (category, a grid and the grids below it, the reader's scope), volumes, the daily
trend, open and overdue cases per grid, channel shares, the lists a report carries
(overdue, escalated, repeated complaints), the quarterly worker scores (``core.reporting.scores``) and,
for a reader who sees the whole district, the hotline's service figures (``core.reporting.hotline``).

Periods are local calendar periods of the district (``2026-W48``, ``2026-11``, ``2026Q4``);
times in the database are naive UTC. Figures of a period count the cases **received** in it
(the same cohort as ``core.reporting.figures``); open and overdue cases are counted as of now.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy import case as when
from sqlalchemy import func
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, select

from core.cases.models import (
    CLOSED_PREDICATE,
    OPEN_STATUSES,
    RECEIVED_PREDICATE,
    Case,
    CaseEvent,
    CaseStatus,
    Category,
)
from core.errors import InvalidInput
from core.people.models import Resident, Worker, WorkerGrid
from core.places.models import Grid, GridLevel, Household
from core.platform.clock import utcnow
from core.platform.db import plan_with
from core.platform.i18n import CORE, DEFAULT
from core.platform.rules import load_rules
from core.reporting import figures, hotline
from core.reporting.figures import Rates
from core.reporting.hotline import HotlineFigures
from core.reporting.scores import WorkerScore, parse_quarter, scores_between

KINDS = ("weekly", "monthly", "quarterly")
PERIOD_OF_KIND = {"weekly": "week", "monthly": "month", "quarterly": "quarter"}
LEVELS = tuple(level.value for level in GridLevel)
# A clock runs in these statuses; past its deadline the case is overdue.
RUNNING = (CaseStatus.dispatched, CaseStatus.accepted, CaseStatus.in_progress)
TREND_DAYS = 90


def report_rules() -> dict:
    return load_rules()["reports"]


# ---- periods ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """A local calendar period [start, end) of the district: a week, month, quarter or a
    range of days."""

    kind: str  # week, month, quarter, days
    start: date
    end: date  # exclusive

    @property
    def label(self) -> str:
        if self.kind == "week":
            year, week, _ = self.start.isocalendar()
            return f"{year}-W{week:02d}"
        if self.kind == "month":
            return f"{self.start:%Y-%m}"
        if self.kind == "quarter":
            return f"{self.start.year}Q{(self.start.month - 1) // 3 + 1}"
        return f"{self.start.isoformat()}..{(self.end - timedelta(days=1)).isoformat()}"

    def label_words(self, language: str = DEFAULT) -> str:
        """The period as a title says it (``report.period.*`` of the core catalogue)."""
        last = self.end - timedelta(days=1)
        if self.kind == "week":
            year, week, _ = self.start.isocalendar()
            return CORE.t(language, "report.period.week", year=year, week=week, start_month=self.start.month,
                          start_day=self.start.day, end_month=last.month, end_day=last.day)
        if self.kind == "month":
            return CORE.t(language, "report.period.month", year=self.start.year, month=self.start.month)
        if self.kind == "quarter":
            name = CORE.get(language, "report.quarter_names")[(self.start.month - 1) // 3]
            return CORE.t(language, "report.period.quarter", year=self.start.year, quarter_name=name)
        return CORE.t(language, "report.period.days", start=self.start.isoformat(), end=last.isoformat())

    def previous(self) -> Period:
        if self.kind == "week":
            return Period("week", self.start - timedelta(days=7), self.start)
        if self.kind == "month":
            prev = (self.start - timedelta(days=1)).replace(day=1)
            return Period("month", prev, self.start)
        if self.kind == "quarter":
            prev_start = _add_months(self.start, -3)
            return Period("quarter", prev_start, self.start)
        length = self.end - self.start
        return Period("days", self.start - length, self.start)

    def bounds(self, tz: str) -> tuple[datetime, datetime]:
        """[start, end) as naive UTC, the way times are stored."""
        return local_midnight(self.start, tz), local_midnight(self.end, tz)

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    @property
    def last(self) -> date:
        """The last day in the period."""
        return self.end - timedelta(days=1)


def _add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def local_midnight(day: date, tz: str) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(tz)).astimezone(UTC).replace(tzinfo=None)


def local_today(tz: str, now: datetime | None = None) -> date:
    return (now or utcnow()).replace(tzinfo=UTC).astimezone(ZoneInfo(tz)).date()


_WEEK = re.compile(r"(\d{4})-?W(\d{1,2})", re.I)
_MONTH = re.compile(r"(\d{4})-(\d{1,2})")
_QUARTER = re.compile(r"(\d{4})\s*-?\s*Q([1-4])", re.I)
_DAYS = re.compile(r"(\d{4}-\d{2}-\d{2})\s*\.\.\s*(\d{4}-\d{2}-\d{2})")


def parse_period(text: str) -> Period:
    """``2026-W48`` (ISO week), ``2026-11``, ``2026Q4`` or ``2026-11-01..2026-11-15`` (days,
    both included)."""
    raw = (text or "").strip()
    try:
        if m := _WEEK.fullmatch(raw):
            start = date.fromisocalendar(int(m.group(1)), int(m.group(2)), 1)
            return Period("week", start, start + timedelta(days=7))
        if m := _QUARTER.fullmatch(raw):
            start, end = parse_quarter(f"{m.group(1)}Q{m.group(2)}")
            return Period("quarter", start, end)
        if m := _MONTH.fullmatch(raw):
            start = date(int(m.group(1)), int(m.group(2)), 1)
            return Period("month", start, _add_months(start, 1))
        if m := _DAYS.fullmatch(raw):
            first, last = date.fromisoformat(m.group(1)), date.fromisoformat(m.group(2))
            if last < first or (last - first).days > 366:
                raise ValueError("a range of 1 to 367 days")
            return Period("days", first, last + timedelta(days=1))
    except ValueError as exc:
        raise InvalidInput(f"not a period: {raw!r} ({exc})", code="period.invalid", text=raw) from None
    raise InvalidInput(f"not a period: {raw!r}: write a week 2026-W48, a month 2026-11, a quarter 2026Q4 "
                       f"or days 2026-11-01..2026-11-15", code="period.invalid", text=raw)


def current_period(kind: str, today: date) -> Period:
    """The week, month or quarter ``today`` is in."""
    if kind == "week":
        start = today - timedelta(days=today.weekday())
        return Period("week", start, start + timedelta(days=7))
    if kind == "month":
        start = today.replace(day=1)
        return Period("month", start, _add_months(start, 1))
    if kind == "quarter":
        start = date(today.year, 3 * ((today.month - 1) // 3) + 1, 1)
        return Period("quarter", start, _add_months(start, 3))
    raise InvalidInput(f"no period kind {kind!r} (week, month, quarter)",
                       code="period.unknown_kind", kind=kind)


def last_complete(kind: str, today: date) -> Period:
    """The last whole week, month or quarter before ``today``: what a report is usually about."""
    return current_period(kind, today).previous()


def partial_until(period: Period, today: date) -> date | None:
    """``today`` when ``period`` is still running (a partial period, counted up to now: 截至
    today), else None."""
    return today if period.start <= today < period.end else None


def until_words(until: date | None, language: str = DEFAULT) -> str:
    """"截至12月6日" for a partial period, "" for a whole one."""
    return "" if until is None else CORE.t(language, "report.period.until", month=until.month, day=until.day)


def comparable_previous(period: Period, today: date) -> Period:
    """What ``period`` is compared with: the previous period, or for a partial one the same
    days of it (the first N days, N the days counted so far; never past its end)."""
    previous = period.previous()
    until = partial_until(period, today)
    if until is None:
        return previous
    counted = (until - period.start).days + 1
    return Period("days", previous.start, min(previous.end, previous.start + timedelta(days=counted)))


def period_for_report(kind: str, text: str | None, today: date) -> Period:
    """The period of a ``weekly|monthly|quarterly`` report: as written, or the last whole one."""
    if kind not in KINDS:
        raise InvalidInput(f"no report {kind!r} (one of {', '.join(KINDS)})",
                           code="report.unknown_kind", kind=kind)
    if not text:
        return last_complete(PERIOD_OF_KIND[kind], today)
    period = parse_period(text)
    if period.kind != PERIOD_OF_KIND[kind]:
        raise InvalidInput(f"a {kind} report takes a {PERIOD_OF_KIND[kind]} "
                           f"({ {'weekly': '2026-W48', 'monthly': '2026-11', 'quarterly': '2026Q4'}[kind] }), "
                           f"not {text!r}", code="report.period_mismatch", kind=kind, text=text)
    return period


# ---- what is counted ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """What a reader may count. ``cases``: a condition on ``Case`` (the console's
    ``case_scope``; None = every case). ``worker_ids``: whose scores they see (None = all)."""

    cases: ColumnElement[bool] | None = None
    worker_ids: frozenset[int] | None = None
    label: str = ""


EVERYTHING = Scope()


@dataclass(frozen=True)
class Filters:
    """The dashboard's and a report's choices: grid level of the breakdown, a category, a grid
    (with every grid below it)."""

    level: str = "community"
    category: Category | None = None
    grid: Grid | None = None
    grid_ids: frozenset[int] | None = None

    def conditions(self, scope: Scope) -> list[ColumnElement[bool]]:
        out: list[ColumnElement[bool]] = []
        if self.category is not None:
            out.append(Case.category_id == self.category.id)
        if self.grid_ids is not None:
            out.append(Case.grid_id.in_(sorted(self.grid_ids)))
        if scope.cases is not None:
            out.append(scope.cases)
        return out


def grid_tree(session: Session) -> dict[int, Grid]:
    return {g.id: g for g in session.exec(select(Grid)).all()}


def descendants(grids: dict[int, Grid], root_ids: set[int]) -> frozenset[int]:
    children: dict[int | None, list[int]] = {}
    for g in grids.values():
        children.setdefault(g.parent_id, []).append(g.id)
    out, stack = set(), list(root_ids)
    while stack:
        gid = stack.pop()
        if gid not in out:
            out.add(gid)
            stack.extend(children.get(gid, ()))
    return frozenset(out)


def make_filters(session: Session, *, level: str | None = None, category_code: str | None = None,
                 grid_code: str | None = None) -> Filters:
    """Filters from what a person typed; a bad value is an ``InvalidInput`` naming it."""
    category = grid = None
    grid_ids = None
    if category_code:
        category = session.exec(select(Category).where(Category.code == category_code.strip())).first()
        if category is None:
            raise InvalidInput(f"no category {category_code!r}",
                               code="category.not_found", category=category_code)
    if grid_code:
        grid = session.exec(select(Grid).where(Grid.code == grid_code.strip())).first()
        if grid is None:
            raise InvalidInput(f"no grid {grid_code!r}", code="grid.not_found", grid=grid_code)
        grid_ids = descendants(grid_tree(session), {grid.id})
    if level is None:
        level = _level_below(grid.level) if grid is not None else report_rules()["grid_level"]
    if level not in LEVELS:
        raise InvalidInput(f"no grid level {level!r} (one of {', '.join(LEVELS)})",
                           code="report.unknown_level", level=level)
    return Filters(level=level, category=category, grid=grid, grid_ids=grid_ids)


def _level_below(level: GridLevel) -> str:
    order = [lv.value for lv in GridLevel]  # district, street, community, area, micro
    i = order.index(level.value)
    return order[min(i + 1, len(order) - 1)]


def workers_of_grids(session: Session, grid_ids: frozenset[int]) -> frozenset[int]:
    rows = session.exec(select(WorkerGrid.worker_id).where(WorkerGrid.grid_id.in_(sorted(grid_ids)))).all()
    return frozenset(rows)


# ---- figures ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ratio:
    numerator: int
    denominator: int

    @property
    def value(self) -> float | None:
        return round(self.numerator / self.denominator, 4) if self.denominator else None


def rate_ratios(r: Rates) -> dict[str, Ratio]:
    """The four rates with what they are made of (one definition: ``core.reporting.figures.Rates``)."""
    return {
        "response": Ratio(r.responded_on_time, r.dispatched),
        "closure": Ratio(r.closed, r.received),
        "on_time": Ratio(r.resolved_on_time, r.reported_done),
        "satisfaction": Ratio(r.satisfied, r.surveyed),
    }


RATE_NAMES = ("response", "closure", "on_time", "satisfaction")


@dataclass
class Count:
    code: str
    name: str
    value: int


@dataclass
class GridLoad:
    code: str
    name: str
    open: int = 0
    overdue: int = 0


@dataclass
class TrendDay:
    day: date
    received: int = 0
    closed: int = 0


@dataclass
class Dashboard:
    period: Period
    filters: Filters
    totals: Rates
    rates: dict[str, Ratio]
    by_category: list[Count]
    by_grid: list[Count]
    trend: list[TrendDay]
    most_open: list[GridLoad]
    most_overdue: list[GridLoad]
    channels: list[Count]
    as_of: datetime
    until: date | None = None  # a partial period: counted up to this day (today)
    # The hotline's service figures of the period (core.reporting.hotline): for a reader who
    # sees every case (the calls are the district's, not a grid's), else None.
    hotline: HotlineFigures | None = None


@dataclass(frozen=True)
class DaySeries:
    """A count per day: of the cases whose ``column`` falls in the day and that meet the
    per-day index's predicate (``core.cases.models``), as SQL text parsed once."""

    column: str
    predicate: sa.TextClause


RECEIVED = DaySeries("created_at", sa.text(RECEIVED_PREDICATE))
CLOSED = DaySeries("closed_at", sa.text(CLOSED_PREDICATE))


def _per_day(session: Session, series: DaySeries, first: date, end: date, conditions: Sequence,
             tz: str) -> dict[date, int]:
    """Cases per local day in [first, end). For everything (no filter, no scope) one count per
    day, each a range of a narrow partial index, in one query. A filter or a reader's scope
    cannot be answered from those indexes: then one pass over the wide covering index,
    grouped by local day, costs less than planning a count per day."""
    days = [first + timedelta(days=i) for i in range((end - first).days)]
    if not days:
        return {}
    column = getattr(Case, series.column)
    if conditions:
        start_utc, end_utc = local_midnight(first, tz), local_midnight(end, tz)
        day = _local_day(session, column, tz, start_utc)
        return {_as_date(d): n for d, n in session.exec(
            select(day, func.count()).where(column >= start_utc, column < end_utc, series.predicate, *conditions)
            .group_by(day)).all()}
    bounds = [local_midnight(d, tz) for d in [*days, end]]
    counts = [select(func.count()).select_from(Case)
              .where(column >= lo, column < hi, series.predicate).scalar_subquery()
              for lo, hi in zip(bounds, bounds[1:], strict=False)]
    return {d: n for d, n in zip(days, session.exec(select(*counts)).one(), strict=True) if n}


def _local_day(session: Session, column, tz: str, at: datetime):  # noqa: ANN001, ANN202
    """The local calendar day of a stored (naive UTC) time. Districts in China keep one
    offset all year (no daylight saving), so the offset at the start is exact."""
    offset_s = int(ZoneInfo(tz).utcoffset(at).total_seconds())
    if session.get_bind().dialect.name == "sqlite":
        return func.date(column, f"{offset_s:+d} seconds")
    return sa.cast(column + timedelta(seconds=offset_s), sa.Date)


def _as_date(value) -> date:  # noqa: ANN001
    return date.fromisoformat(value) if isinstance(value, str) else value


def received_per_day(session: Session, first: date, end: date, conditions: Sequence, tz: str) -> dict[date, int]:
    """Cases received per local day in [first, end) (days with none left out)."""
    return _per_day(session, RECEIVED, first, end, conditions, tz)


def closed_per_day(session: Session, first: date, end: date, conditions: Sequence, tz: str) -> dict[date, int]:
    """Cases closed per local day in [first, end) (days with none left out)."""
    return _per_day(session, CLOSED, first, end, conditions, tz)


def trend_days(first: date, end: date, received: dict[date, int], closed: dict[date, int]) -> list[TrendDay]:
    days = (first + timedelta(days=i) for i in range((end - first).days))
    return [TrendDay(d, received.get(d, 0), closed.get(d, 0)) for d in days]


def trend(session: Session, first: date, end: date, conditions: Sequence, tz: str) -> list[TrendDay]:
    """Cases received and cases closed per local day in [first, end)."""
    return trend_days(first, end, received_per_day(session, first, end, conditions, tz),
                      closed_per_day(session, first, end, conditions, tz))


def overdue_condition(as_of: datetime) -> ColumnElement[bool]:
    """A running clock past its deadline: not accepted by the response deadline, or not
    reported done by the resolution deadline."""
    return sa.and_(Case.status.in_(RUNNING), sa.or_(
        sa.and_(Case.status == CaseStatus.dispatched, Case.response_due < as_of),
        Case.resolution_due < as_of))


def _ancestor_at(grids: dict[int, Grid], level: str) -> dict[int, Grid]:
    out: dict[int, Grid] = {}
    for gid, grid in grids.items():
        node: Grid | None = grid
        while node is not None and node.level.value != level:
            node = grids.get(node.parent_id) if node.parent_id else None
        if node is not None:
            out[gid] = node
    return out


UNPLACED = "-"  # the code of the row of cases without a grid; its name: ``report.unplaced``


def grid_loads(session: Session, level: str, conditions: Sequence, as_of: datetime,
               language: str = DEFAULT) -> list[GridLoad]:
    """Open and overdue cases now, per grid of ``level`` (cases with no grid: ``-``)."""
    overdue = overdue_condition(as_of)
    rows = session.exec(
        select(Case.grid_id, func.count(), func.sum(when((overdue, 1), else_=0)))
        .where(Case.status.in_(sorted(OPEN_STATUSES)), *conditions)
        .group_by(Case.grid_id)
    ).all()
    ancestors = _ancestor_at(grid_tree(session), level)
    out: dict[str, GridLoad] = {}
    for grid_id, n_open, n_overdue in rows:
        code, name = ((ancestors[grid_id].code, ancestors[grid_id].name) if grid_id in ancestors
                      else (UNPLACED, CORE.t(language, "report.unplaced")))
        load = out.setdefault(code, GridLoad(code, name))
        load.open += n_open or 0
        load.overdue += int(n_overdue or 0)
    return list(out.values())


def channel_counts(session: Session, start: datetime, end: datetime, conditions: Sequence) -> list[Count]:
    rows = session.exec(
        select(Case.channel, func.count())
        .where(Case.created_at >= start, Case.created_at < end, Case.status != CaseStatus.merged, *conditions)
        .group_by(Case.channel)
    ).all()
    counts = [Count(getattr(ch, "value", ch), getattr(ch, "value", ch), n) for ch, n in rows]
    return sorted(counts, key=lambda c: (-c.value, c.code))


@dataclass(frozen=True)
class DashboardAsk:
    """What a dashboard is asked for, with the conditions it counts under."""

    period: Period
    filters: Filters
    conditions: tuple
    tz: str
    as_of: datetime
    top: int = 10
    language: str = DEFAULT  # of the names of rows without a category or grid
    hotline: bool = False  # the hotline's service figures too (a reader who sees everything)

    @property
    def trend_span(self) -> tuple[date, date]:
        """The trend's days: the last ``TREND_DAYS`` up to the period's end or today."""
        end = min(self.period.end, local_today(self.tz, self.as_of) + timedelta(days=1))
        return end - timedelta(days=TREND_DAYS), end


def dashboard_ask(period: Period, filters: Filters, *, scope: Scope = EVERYTHING, tz: str = "Asia/Shanghai",
                  as_of: datetime | None = None, top: int = 10, language: str = DEFAULT) -> DashboardAsk:
    return DashboardAsk(period, filters, tuple(filters.conditions(scope)), tz, as_of or utcnow(), top, language,
                        hotline=scope.cases is None)


# The dashboard's four queries, in two lanes of about equal cost: the console runs the lanes
# at once, on two connections (two cores' worth of work), so a page costs about one lane
# rather than the sum. More lanes than that only made the parts compete for the same cores.

def dashboard_rates(session: Session, ask: DashboardAsk) -> dict:
    """One pass over the period's cases, folded three ways: by category (and the totals), by
    grid of the chosen level, by channel."""
    # The parts run side by side (the console), one core each: parallel workers for this scan
    # would only take the cores the other parts are using, at a cost in all.
    plan_with(session, max_parallel_workers_per_gather="0")
    start, end = ask.period.bounds(ask.tz)
    raw = figures.raw_rates(session, start, end, (Case.category_id, Case.grid_id, Case.channel),
                            where=ask.conditions)
    by_category = figures.fold(session, figures.project(raw, 0), "category", ask.language)
    totals = figures.totals(by_category, ask.language)
    return {
        "totals": totals, "rates": rate_ratios(totals), "by_category": _counts(by_category),
        "by_grid": _counts(figures.fold(session, figures.project(raw, 1), ask.filters.level, ask.language)),
        "channels": sorted((Count(getattr(ch, "value", ch), getattr(ch, "value", ch), r.received)
                            for ch, r in figures.project(raw, 2).items() if r.received),
                           key=lambda c: (-c.value, c.code)),
    }


def dashboard_received(session: Session, ask: DashboardAsk) -> dict:
    return {"received_per_day": received_per_day(session, *ask.trend_span, ask.conditions, ask.tz)}


def dashboard_closed(session: Session, ask: DashboardAsk) -> dict:
    return {"closed_per_day": closed_per_day(session, *ask.trend_span, ask.conditions, ask.tz)}


def dashboard_hotline(session: Session, ask: DashboardAsk) -> dict:
    """The hotline's service figures of the period, per local day (one grouped pass over the
    period's inbound calls)."""
    if not ask.hotline:
        return {"hotline": None}
    start, end = ask.period.bounds(ask.tz)
    return {"hotline": hotline.hotline_figures(session, start, end, ask.tz, grains=("day",))}


def dashboard_loads(session: Session, ask: DashboardAsk) -> dict:
    loads = grid_loads(session, ask.filters.level, ask.conditions, ask.as_of, ask.language)
    return {
        "most_open": sorted((x for x in loads if x.open), key=lambda x: (-x.open, x.code))[:ask.top],
        "most_overdue": sorted((x for x in loads if x.overdue), key=lambda x: (-x.overdue, x.code))[:ask.top],
    }


DASHBOARD_PARTS = (dashboard_rates, dashboard_received, dashboard_closed, dashboard_loads, dashboard_hotline)
DASHBOARD_LANES = ((dashboard_rates, dashboard_loads), (dashboard_received, dashboard_closed, dashboard_hotline))


def dashboard_lane(session: Session, ask: DashboardAsk, parts: Sequence) -> list[dict]:
    return [part(session, ask) for part in parts]


def assemble_dashboard(ask: DashboardAsk, parts: Sequence[dict]) -> Dashboard:
    got: dict = {}
    for part in parts:
        got.update(part)
    return Dashboard(
        period=ask.period, filters=ask.filters, totals=got["totals"], rates=got["rates"],
        by_category=got["by_category"], by_grid=got["by_grid"],
        trend=trend_days(*ask.trend_span, got["received_per_day"], got["closed_per_day"]),
        most_open=got["most_open"], most_overdue=got["most_overdue"], channels=got["channels"], as_of=ask.as_of,
        until=partial_until(ask.period, local_today(ask.tz, ask.as_of)), hotline=got.get("hotline"),
    )


def dashboard(session: Session, period: Period, filters: Filters, *, scope: Scope = EVERYTHING,
              tz: str = "Asia/Shanghai", as_of: datetime | None = None, top: int = 10) -> Dashboard:
    """Everything ``/console/dashboard`` shows, for ``period`` and the filters, within ``scope``
    (its parts one after another, in one session)."""
    ask = dashboard_ask(period, filters, scope=scope, tz=tz, as_of=as_of, top=top)
    return assemble_dashboard(ask, dashboard_lane(session, ask, DASHBOARD_PARTS))


def _counts(rows: list[Rates]) -> list[Count]:
    return sorted((Count(r.key, r.name, r.received) for r in rows if r.received),
                  key=lambda c: (-c.value, c.code))


# ---- reports ------------------------------------------------------------------------------------


@dataclass
class Compared:
    """A group's rates this period and the period before."""

    code: str
    name: str
    this: Rates
    previous: Rates


@dataclass
class CaseLine:
    number: str
    created_at: datetime
    category: str
    grid: str
    status: str
    due: datetime | None = None
    detail: str = ""
    count: int = 0


@dataclass
class Repeat:
    category: str
    place: str
    grid: str
    count: int
    numbers: list[str] = field(default_factory=list)


@dataclass
class Report:
    kind: str
    period: Period
    previous: Period
    filters: Filters
    place: str  # the district, or the grid the report is about
    title: str
    generated_at: datetime
    totals: Rates
    totals_previous: Rates
    by_grid: list[Compared]
    by_category: list[Compared]
    overdue: list[CaseLine]
    overdue_total: int
    escalated: list[CaseLine]
    escalated_total: int
    repeats: list[Repeat]
    repeats_total: int
    scores: list[WorkerScore]
    scores_period: Period
    trend: list[TrendDay]
    channels: list[Count]
    list_limit: int
    scope_label: str = ""
    until: date | None = None  # a partial period: counted up to this day; compared with the same days before
    # The hotline's service figures (core.reporting.hotline), per local day and hour: in a
    # report of the whole district read by someone who sees every case, else None.
    hotline: HotlineFigures | None = None

    @property
    def rates(self) -> dict[str, Ratio]:
        return rate_ratios(self.totals)

    @property
    def rates_previous(self) -> dict[str, Ratio]:
        return rate_ratios(self.totals_previous)


def _compare(this: list[Rates], previous: list[Rates]) -> list[Compared]:
    prev = {r.key: r for r in previous}
    out = [Compared(r.key, r.name, r, prev.pop(r.key, Rates(r.key, r.name))) for r in this]
    out += [Compared(r.key, r.name, Rates(r.key, r.name), r) for r in prev.values()]
    return sorted(out, key=lambda c: (c.code == UNPLACED, c.code))


def _names(session: Session) -> tuple[dict[int, Category], dict[int, Grid]]:
    return ({c.id: c for c in session.exec(select(Category)).all()}, grid_tree(session))


def _line(case_row, categories, grids, language: str = DEFAULT, **extra) -> CaseLine:  # noqa: ANN001
    number, created, category_id, grid_id, status = case_row[:5]
    return CaseLine(number=number, created_at=created,
                    category=(categories[category_id].name if category_id in categories
                              else CORE.t(language, "report.uncategorised")),
                    grid=grids[grid_id].name if grid_id in grids else CORE.t(language, "report.unplaced"),
                    status=getattr(status, "value", status), **extra)


def overdue_cases(session: Session, start: datetime, end: datetime, conditions: Sequence, as_of: datetime,
                  limit: int, language: str = DEFAULT) -> tuple[list[CaseLine], int]:
    """Cases received in the period that missed a deadline: accepted late, reported done late,
    or running past a deadline now. Oldest first."""
    late = sa.or_(Case.responded_on_time.is_(False), Case.resolved_on_time.is_(False), overdue_condition(as_of))
    cohort = [Case.created_at >= start, Case.created_at < end, Case.status != CaseStatus.merged, late, *conditions]
    total = session.exec(select(func.count()).select_from(Case).where(*cohort)).one()
    rows = session.exec(
        select(Case.number, Case.created_at, Case.category_id, Case.grid_id, Case.status, Case.resolution_due,
               Case.responded_on_time, Case.resolved_on_time)
        .where(*cohort).order_by(Case.created_at, Case.id).limit(limit)
    ).all()
    categories, grids = _names(session)
    out = []
    for row in rows:
        what = []
        if row[6] is False:
            what.append("response_late")
        if row[7] is False:
            what.append("resolution_late")
        if row[7] is None and row[4] in RUNNING:
            what.append("running_overdue")
        out.append(_line(row, categories, grids, language, due=row[5], detail=",".join(what)))
    return out, total


def escalated_cases(session: Session, start: datetime, end: datetime, conditions: Sequence,
                    limit: int, language: str = DEFAULT) -> tuple[list[CaseLine], int]:
    """Cases escalated (升级) inside the period, from their ``escalate`` events; most
    escalations first."""
    escalations = (
        select(CaseEvent.case_id, func.count().label("n"))
        .where(CaseEvent.action == "escalate", CaseEvent.at >= start, CaseEvent.at < end)
        .group_by(CaseEvent.case_id).subquery()
    )
    base = select(Case.number, Case.created_at, Case.category_id, Case.grid_id, Case.status,
                  Case.resolution_due, Case.owner_level, escalations.c.n).join(
        escalations, escalations.c.case_id == Case.id).where(*conditions)
    total = session.exec(select(func.count()).select_from(base.subquery())).one()
    rows = session.exec(base.order_by(escalations.c.n.desc(), Case.created_at, Case.id).limit(limit)).all()
    categories, grids = _names(session)
    return [_line(row, categories, grids, language, due=row[5], detail=getattr(row[6], "value", row[6]) or "",
                  count=row[7]) for row in rows], total


def repeated_complaints(session: Session, start: datetime, end: datetime, conditions: Sequence,
                        limit: int, language: str = DEFAULT) -> tuple[list[Repeat], int]:
    """Places that raised the same category at least twice in the period (重复投诉). A place
    is the resident's registered household, else the address given; cases with neither, and
    confidential cases, are not counted."""
    # Literal prefixes written into the SQL (not bound): PostgreSQL must see the same
    # expression in SELECT and GROUP BY.
    place = func.coalesce(
        sa.literal_column("'h:'", sa.String) + sa.cast(Resident.household_id, sa.String),
        sa.literal_column("'a:'", sa.String) + Case.address_text,
    )
    # A confidential case (保密) is left out: its place is the resident's home, which says who they are.
    cohort = [Case.created_at >= start, Case.created_at < end, Case.status != CaseStatus.merged,
              Case.category_id.is_not(None), Case.confidential == sa.false(), *conditions]
    # The first ``limit`` groups and, on each row, how many groups there are in all.
    top = (
        select(Case.category_id, place.label("place"), func.count().label("n"), func.count().over().label("total"))
        .select_from(Case).outerjoin(Resident, Resident.id == Case.resident_id)
        .where(*cohort, place.is_not(None))
        .group_by(Case.category_id, place).having(func.count() >= 2)
        .order_by(sa.text("n DESC"), Case.category_id, place).limit(limit)
    )
    rows = session.exec(top).all()
    if not rows:
        return [], 0
    groups, total = [(cat, key, n) for cat, key, n, _ in rows], rows[0][3]
    keys = [(cat, key) for cat, key, _ in groups]
    # Their cases: the period's cases joined to those groups (one pass, not a lookup per group).
    chosen = top.subquery("chosen")
    members: dict[tuple, list[tuple[str, int | None]]] = {}
    for number, cat, key, grid_id in session.exec(
        select(Case.number, Case.category_id, place, Case.grid_id)
        .select_from(Case).outerjoin(Resident, Resident.id == Case.resident_id)
        .join(chosen, (chosen.c.category_id == Case.category_id) & (chosen.c.place == place))
        .where(*cohort)
        .order_by(Case.created_at, Case.id)
    ).all():
        members.setdefault((cat, key), []).append((number, grid_id))
    households = {h.id: h.address for h in session.exec(select(Household).where(
        Household.id.in_([int(k[2:]) for _, k in keys if k.startswith("h:")] or [-1]))).all()}
    categories, grids = _names(session)
    out = []
    for cat, key, n in groups:
        found = members.get((cat, key), [])
        grid_id = next((g for _, g in found if g is not None), None)
        label = households.get(int(key[2:]), key[2:]) if key.startswith("h:") else key[2:]
        out.append(Repeat(category=categories[cat].name if cat in categories else str(cat), place=label,
                          grid=grids[grid_id].name if grid_id in grids else CORE.t(language, "report.unplaced"), count=n,
                          numbers=[num for num, _ in found]))
    return out, total


def worker_scores(session: Session, period: Period, scope: Scope, filters: Filters, tz: str,
                  as_of: datetime) -> list[WorkerScore]:
    """The 70/30 scores (``core.reporting.scores``) of the period, of the workers the reader may see."""
    start, end = period.bounds(tz)
    rows = scores_between(session, start, end, as_of=as_of)
    allowed = scope.worker_ids
    if filters.grid_ids is not None:
        in_grids = workers_of_grids(session, filters.grid_ids)
        allowed = in_grids if allowed is None else allowed & in_grids
    if allowed is None:
        return rows

    codes = set(session.exec(select(Worker.code).where(Worker.id.in_(sorted(allowed) or [-1]))).all())
    return [r for r in rows if r.code in codes]


def scores_period(kind: str, period: Period) -> Period:
    """Whose scores a report carries: a quarterly report its quarter; a weekly or monthly one
    the quarter so far, up to the end of the period (季度考核 is a quarter's)."""
    if kind == "quarterly":
        return period
    quarter = current_period("quarter", period.start)
    return Period("days", quarter.start, period.end)


def district_name(session: Session) -> str:
    root = session.exec(select(Grid).where(Grid.level == GridLevel.district).order_by(Grid.id)).first()
    return root.name if root is not None else ""


def report(session: Session, kind: str, period: Period, filters: Filters, *, scope: Scope = EVERYTHING,
           tz: str = "Asia/Shanghai", as_of: datetime | None = None, language: str = DEFAULT) -> Report:
    """A weekly, monthly or quarterly report: the rates by grid and category against the
    previous period, overdue and escalated cases, repeated complaints, worker scores. Its
    title and the names of rows without a category or grid are in ``language``."""
    if kind not in KINDS:
        raise InvalidInput(f"no report {kind!r} (one of {', '.join(KINDS)})",
                           code="report.unknown_kind", kind=kind)
    as_of = as_of or utcnow()
    limit = int(report_rules()["list_limit"])
    today = local_today(tz, as_of)
    until = partial_until(period, today)
    previous = comparable_previous(period, today)
    start, end = period.bounds(tz)
    prev_start, prev_end = previous.bounds(tz)
    conds = filters.conditions(scope)
    keys = (Case.category_id, Case.grid_id)
    this, before = (figures.raw_rates(session, a, b, keys, where=conds)
                    for a, b in ((start, end), (prev_start, prev_end)))
    grid_this, grid_prev = (figures.fold(session, figures.project(raw, 1), filters.level, language)
                            for raw in (this, before))
    cat_this, cat_prev = (figures.fold(session, figures.project(raw, 0), "category", language)
                          for raw in (this, before))
    overdue, overdue_total = overdue_cases(session, start, end, conds, as_of, limit, language)
    escalated, escalated_total = escalated_cases(session, start, end, conds, limit, language)
    repeats, repeats_total = repeated_complaints(session, start, end, conds, limit, language)
    scored = scores_period(kind, period)
    place = filters.grid.name if filters.grid is not None else district_name(session)
    title = CORE.t(language, "report.title", place=place, period=period.label_words(language),
                   kind=CORE.t(language, f"report.kind.{kind}"))
    if until is not None:
        title = CORE.t(language, "report.partial_title", title=title, until=until_words(until, language))
    return Report(
        kind=kind, period=period, previous=previous, filters=filters, place=place, title=title,
        generated_at=as_of,
        totals=figures.totals(cat_this, language), totals_previous=figures.totals(cat_prev, language),
        by_grid=_compare(grid_this, grid_prev), by_category=_compare(cat_this, cat_prev),
        overdue=overdue, overdue_total=overdue_total,
        escalated=escalated, escalated_total=escalated_total,
        repeats=repeats, repeats_total=repeats_total,
        scores=worker_scores(session, scored, scope, filters, tz, as_of), scores_period=scored,
        # A partial period's trend stops at today: the days after it have nothing yet.
        trend=trend(session, period.start, period.end if until is None else until + timedelta(days=1), conds, tz),
        channels=channel_counts(session, start, end, conds),
        list_limit=limit, scope_label=scope.label, until=until,
        hotline=(hotline.hotline_figures(session, start, end, tz)
                 if scope.cases is None and filters.grid is None else None),
    )
