"""The console's reads. Every query of cases goes through ``access.scoped`` and pages
with keyset pagination (the next page starts after the last row's sort key), so a page
costs the same at the millionth case as at the first."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Text, and_, cast, func, or_, text
from sqlalchemy import case as sql_case
from sqlmodel import Session, select

from console.access import Principal, console_rules, scoped, text_for, with_descendants
from core.actions import OWNED
from core.cases.models import TRIAGE_INDEX_PREDICATE, Case, CaseStatus, Category, Channel
from core.cases.queries import known_names
from core.errors import InvalidInput
from core.people.models import AuditEntry, Department, Resident, Worker
from core.places.models import Grid
from core.places.routing import phone_variants
from core.platform.clock import utcnow
from core.platform.settings import get_settings
from core.reporting.reports import workers_of_grids


@dataclass
class Page:
    rows: list
    next_cursor: tuple | None = None
    names: dict = field(default_factory=dict)
    total: int | None = None  # how many rows match, on the lists that count them


def page_size() -> int:
    return int(console_rules()["page_size"])


def triage_flags() -> list[str]:
    return list(console_rules()["triage_flags"])


def names_for(session: Session, cases: list[Case], principal: Principal | None = None) -> dict:
    """Category, grid, worker and department names of the cases on a page (one query each),
    and, for a role that reads masked text, the people each case knows (``people``: what the
    descriptions are masked with)."""
    out: dict[str, dict[int, object]] = {"category": {}, "grid": {}, "worker": {}, "department": {}, "people": {}}
    masked = [c for c in cases if principal is not None and not principal.sees_person(c)]
    if masked:
        out["people"] = known_names(session, masked)
    for key, model, attr in (("category", Category, "category_id"), ("grid", Grid, "grid_id"),
                             ("worker", Worker, "worker_id"), ("department", Department, "department_id")):
        ids = sorted({getattr(c, attr) for c in cases if getattr(c, attr) is not None})
        if ids:
            out[key] = {row.id: row for row in session.exec(select(model).where(model.id.in_(ids))).all()}
    return out


# The sorts the triage page offers; the first is the default.
TRIAGE_SORTS = ("oldest", "newest", "most_overdue")
# The statuses a case in triage may hold (verified cases wait only for closing: not triage's).
TRIAGE_STATUSES = tuple(s.value for s in CaseStatus
                        if s not in (CaseStatus.verified, CaseStatus.closed, CaseStatus.merged))
# What a triage case may be missing, besides its flags.
TRIAGE_GAPS = ("no_grid", "no_category")
# Accepted cases run against their resolution deadline; the others against the response one.
RESOLVING = (CaseStatus.accepted, CaseStatus.in_progress, CaseStatus.reported_done)
# A case with no deadline sorts after every dated one under "most overdue".
NO_DEADLINE = datetime(9999, 12, 31)


class TriageFilterError(InvalidInput):
    """A triage filter whose value is not one the page offers."""

    code = "console.triage.bad_filter"

    def __init__(self, field: str, value: str):
        super().__init__(f"triage filter {field}: {value!r} is not a value it takes", field=field, value=value,
                         text=value)
        self.field, self.value = field, value


@dataclass
class TriageFilters:
    """The triage page's filters and sort, as they stand in its URL."""

    status: str = ""
    category: str = ""
    grid: str = ""
    channel: str = ""
    flag: str = ""
    date_from: str = ""
    date_to: str = ""
    overdue: str = ""
    sort: str = ""

    @classmethod
    def from_query(cls, query) -> TriageFilters:  # noqa: ANN001
        return cls(**{k: (query.get(k) or "").replace("\x00", "").strip()[:100] for k in cls.__dataclass_fields__})

    def as_query(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if getattr(self, k)}

    def any(self) -> bool:
        return any(getattr(self, k) for k in self.__dataclass_fields__ if k != "sort")

    @property
    def order(self) -> str:
        return self.sort or TRIAGE_SORTS[0]

    def sorted_by(self, sorts: tuple[str, ...]) -> str:
        """The sort chosen, or the first a page offers."""
        return self.sort or sorts[0]

    def check(self, statuses: tuple[str, ...] = TRIAGE_STATUSES, sorts: tuple[str, ...] = TRIAGE_SORTS) -> None:
        """Raise ``TriageFilterError`` (or ``SearchDateError``) for the first value the page does not offer
        (triage's statuses and sorts unless told: a queue offers its own); grid and category are
        checked against the database by ``filtered``."""
        offered = {"status": statuses, "channel": tuple(c.value for c in Channel),
                   "flag": (*triage_flags(), *TRIAGE_GAPS), "overdue": ("yes", "no"), "sort": sorts}
        for name, values in offered.items():
            if getattr(self, name) and getattr(self, name) not in values:
                raise TriageFilterError(name, getattr(self, name))
        for name in ("date_from", "date_to"):
            if getattr(self, name):
                search_day(name, getattr(self, name))


def current_due():  # noqa: ANN201
    """The deadline a case is running against: the response until it is accepted, then the resolution."""
    return sql_case((Case.status.in_(RESOLVING), Case.resolution_due),
                else_=Case.response_due)


def _triage_where(session: Session, principal: Principal, f: TriageFilters):  # noqa: ANN202
    flags = triage_flags()
    needs = [Case.grid_id.is_(None), Case.category_id.is_(None),
             *[cast(Case.flags, Text).like(f'%"{flag}"%') for flag in flags]]
    # The index predicate, verbatim, lets both databases use the partial index ix_case_triage.
    stmt = (select(Case).where(text(TRIAGE_INDEX_PREDICATE)).where(or_(*needs))
            .where(Case.status != CaseStatus.verified))
    return scoped(filtered(session, stmt, f), principal)


def filtered(session: Session, stmt, f: TriageFilters):  # noqa: ANN001, ANN201
    """``stmt`` (a select of cases) narrowed by the filters of a list page: status, channel, flag
    (or a gap: no grid, no category), grid (with the grids below it), category, the days cases
    came in (local days), and whether their current deadline has passed. Triage, the queues and
    search read their filters through this one function."""
    if f.status:
        stmt = stmt.where(Case.status == CaseStatus(f.status))
    if f.channel:
        stmt = stmt.where(Case.channel == Channel(f.channel))
    if f.flag == "no_grid":
        stmt = stmt.where(Case.grid_id.is_(None))
    elif f.flag == "no_category":
        stmt = stmt.where(Case.category_id.is_(None))
    elif f.flag:
        stmt = stmt.where(cast(Case.flags, Text).like(f'%"{f.flag}"%'))
    if f.grid:
        grid = session.exec(select(Grid).where(or_(Grid.code == f.grid, Grid.name == f.grid))).first()
        if grid is None:
            raise TriageFilterError("grid", f.grid)
        stmt = stmt.where(Case.grid_id.in_(sorted(with_descendants(session, {grid.id}))))
    if f.category:
        category = session.exec(select(Category).where(or_(Category.code == f.category,
                                                           Category.name == f.category))).first()
        if category is None:
            raise TriageFilterError("category", f.category)
        stmt = stmt.where(Case.category_id == category.id)
    tz = get_settings().timezone
    if f.date_from:
        stmt = stmt.where(Case.created_at >= _local_day_start("date_from", f.date_from, tz))
    if f.date_to:
        stmt = stmt.where(Case.created_at < _local_day_start("date_to", f.date_to, tz) + timedelta(days=1))
    if f.overdue == "yes":
        stmt = stmt.where(current_due() < utcnow())
    elif f.overdue == "no":
        stmt = stmt.where(or_(current_due().is_(None), current_due() >= utcnow()))
    return stmt


def triage(session: Session, principal: Principal, after: tuple | None, limit: int | None = None,
           filters: TriageFilters | None = None) -> Page:
    """Open cases that need a person: a triage flag, or no grid, or no category; filtered, in the
    sort chosen (oldest first unless told), with the total that match (``Page.total``)."""
    limit = limit or page_size()
    f = filters or TriageFilters()
    f.check()
    stmt = _triage_where(session, principal, f)
    total = int(session.exec(select(func.count()).select_from(stmt.subquery())).one())
    rows = list(session.exec(keyset(stmt, after, f.order).limit(limit + 1)).all())
    nxt = key_of(rows[limit - 1], f.order) if len(rows) > limit else None
    rows = rows[:limit]
    return Page(rows, nxt, names_for(session, rows, principal), total)


def keyset(stmt, after: tuple | None, order: str):  # noqa: ANN001, ANN201
    """``stmt`` in a list's sort, starting after the row whose key (``key_of``) is ``after``:
    ``newest`` / ``oldest`` by arrival, ``most_overdue`` by the deadline the case runs against now
    (none last), ``due`` by the resolution deadline (a queue's)."""
    if order == "newest":
        return _newest_after(stmt, after)
    if order == "oldest":
        if after is not None:
            at, row_id = after
            stmt = stmt.where(or_(Case.created_at > at, and_(Case.created_at == at, Case.id > row_id)))
        return stmt.order_by(Case.created_at, Case.id)
    key = func.coalesce(current_due(), NO_DEADLINE) if order == "most_overdue" else Case.resolution_due
    if after is not None:
        at, row_id = after
        at = at or NO_DEADLINE
        stmt = stmt.where(or_(key > at, and_(key == at, Case.id > row_id)))
    return stmt.order_by(key, Case.id)


def key_of(c: Case, order: str) -> tuple:
    """The sort key of a row in ``order``: where the next page starts after it."""
    if order == "most_overdue":
        return (_due_of(c) or NO_DEADLINE, c.id)
    if order == "due":
        return (c.resolution_due, c.id)
    return (c.created_at, c.id)


def _due_of(c: Case) -> datetime | None:
    return c.resolution_due if c.status in RESOLVING else c.response_due


@dataclass
class SearchFilters:
    number: str = ""
    phone: str = ""
    text: str = ""
    grid: str = ""
    category: str = ""
    status: str = ""
    channel: str = ""
    date_from: str = ""
    date_to: str = ""
    flag: str = ""
    overdue: str = ""
    sort: str = ""

    @classmethod
    def from_query(cls, query) -> SearchFilters:  # noqa: ANN001
        # No stored text holds a NUL (PostgreSQL refuses one in a query): it can match nothing.
        return cls(**{k: (query.get(k) or "").replace("\x00", "").strip()[:100] for k in cls.__dataclass_fields__})

    def any(self) -> bool:
        return any(getattr(self, k) for k in self.__dataclass_fields__ if k != "sort")

    def sorted_by(self, sorts: tuple[str, ...]) -> str:
        return self.sort or sorts[0]

    def as_query(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if getattr(self, k)}

    def check_dates(self) -> None:
        """Raise ``SearchDateError`` for the first date filter that is not a searchable day."""
        for name in ("date_from", "date_to"):
            if getattr(self, name):
                search_day(name, getattr(self, name))


# The days a search may name. Outside them a date is a slip of the keyboard (0001, 9999), and
# near datetime's own limits the time zone and the day added to date_to overflow.
FIRST_SEARCH_DAY = date(1900, 1, 1)
LAST_SEARCH_DAY = date(2999, 12, 31)


class SearchDateError(InvalidInput):
    """A date filter that is not a date (``reason`` "format") or not a searchable day ("range")."""

    code = "console.search.bad_date"

    def __init__(self, field: str, value: str, reason: str):
        super().__init__(f"{field} {value!r}: " + ("not a date (use YYYY-MM-DD)" if reason == "format" else
                                                    f"not between {FIRST_SEARCH_DAY} and {LAST_SEARCH_DAY}"),
                         field=field, value=value, reason=reason, text=value)
        self.field, self.value, self.reason = field, value, reason


def search_day(field: str, value: str) -> date:
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise SearchDateError(field, value, "format") from None
    if not FIRST_SEARCH_DAY <= day <= LAST_SEARCH_DAY:
        raise SearchDateError(field, value, "range")
    return day


def _like_escape(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _local_day_start(field: str, day: str, tz: str) -> datetime:
    local = datetime.combine(search_day(field, day), time(0), tzinfo=ZoneInfo(tz))
    return local.astimezone(ZoneInfo("UTC")).replace(tzinfo=None)


def search(session: Session, principal: Principal, f: SearchFilters, after: tuple | None,
           limit: int | None = None) -> Page:
    """Newest first. Phone search only for roles that see phones (the caller checks too).
    A role that reads masked text searches the text as it reads it: a case matches when its
    masked description contains the words, so no search can find what the page hides (the
    middle of a phone number, an identity number, a resident's name)."""

    limit = limit or page_size()
    stmt = select(Case)
    if f.number:
        stmt = stmt.where(Case.number == f.number)
    if f.phone:
        if not principal.sees_phone:
            raise InvalidInput("your role may not search by phone number",
                               code="console.search.phone_not_allowed")
        variants = sorted(phone_variants(f.phone))
        if sum(ch.isdigit() for ch in f.phone) < 5 or not variants:
            raise InvalidInput(f"not a phone number: {f.phone!r}",
                               code="console.search.bad_phone", text=f.phone)
        # Resident ids first, as literals: an OR of two plain index lookups the planner can
        # combine (a sub-select inside the OR made it scan every case by date instead).
        residents = sorted(session.exec(select(Resident.id).where(Resident.phone.in_(variants))).all())
        by_phone = Case.contact_phone.in_(variants)
        stmt = stmt.where(or_(by_phone, Case.resident_id.in_(residents)) if residents else by_phone)
        if not principal.sees_confidential:  # a confidential case is never found by its resident's phone
            stmt = stmt.where(Case.confidential == False)  # noqa: E712
    term = f.text.lower()
    # Text some of the cases are read masked in: every case for a role that may not see
    # phones, the confidential ones for a role that may not see those.
    masked = bool(f.text) and not principal.sees_confidential
    # For a role that reads masked text, a first sieve: what the masked text contains, the
    # stored text contains too, but for the stars of a mask; the masked text decides below.
    for piece in ([p for p in term.split("*") if p] if masked else [term] if term else []):
        stmt = stmt.where(func.lower(Case.description).like(f"%{_like_escape(piece)}%", escape="\\"))
    if f.grid:
        grid = session.exec(select(Grid).where(or_(Grid.code == f.grid, Grid.name == f.grid))).first()
        if grid is None:
            raise InvalidInput(f"no grid {f.grid!r}", code="grid.not_found", grid=f.grid)
        stmt = stmt.where(Case.grid_id.in_(sorted(with_descendants(session, {grid.id}))))
    if f.category:
        category = session.exec(select(Category).where(or_(Category.code == f.category,
                                                           Category.name == f.category))).first()
        if category is None:
            raise InvalidInput(f"no category {f.category!r}", code="category.not_found", category=f.category)
        stmt = stmt.where(Case.category_id == category.id)
    if f.status:
        try:
            stmt = stmt.where(Case.status == CaseStatus(f.status))
        except ValueError as exc:
            raise InvalidInput(f"no status {f.status!r}",
                               code="console.search.no_status", status=f.status) from exc
    if f.channel:
        try:
            stmt = stmt.where(Case.channel == Channel(f.channel))
        except ValueError as exc:
            raise InvalidInput(f"no channel {f.channel!r}",
                               code="console.search.no_channel", channel=f.channel) from exc
    tz = get_settings().timezone
    if f.date_from:
        stmt = stmt.where(Case.created_at >= _local_day_start("date_from", f.date_from, tz))
    if f.date_to:
        stmt = stmt.where(Case.created_at < _local_day_start("date_to", f.date_to, tz) + timedelta(days=1))
    # The triage page's flag, overdue and sort, read and checked by the same code.
    extra = TriageFilters(flag=f.flag, overdue=f.overdue, sort=f.sort)
    extra.check(statuses=tuple(s.value for s in CaseStatus), sorts=SEARCH_SORTS)
    stmt = scoped(filtered(session, stmt, extra), principal)
    order = f.sorted_by(SEARCH_SORTS)
    if masked:
        return _search_masked(session, principal, stmt, term, after, limit, order)
    total = int(session.exec(select(func.count()).select_from(stmt.subquery())).one())
    rows = list(session.exec(keyset(stmt, after, order).limit(limit + 1)).all())
    nxt = key_of(rows[limit - 1], order) if len(rows) > limit else None
    rows = rows[:limit]
    return Page(rows, nxt, names_for(session, rows, principal), total)


# The sorts search offers; the first is the default.
SEARCH_SORTS = ("newest", "oldest", "most_overdue")


def _newest_after(stmt, after: tuple | None):  # noqa: ANN001, ANN202
    if after is not None:
        at, row_id = after
        stmt = stmt.where(or_(Case.created_at < at, and_(Case.created_at == at, Case.id < row_id)))
    return stmt.order_by(Case.created_at.desc(), Case.id.desc())


# A masked search reads candidates in batches, and at most this many per page: a page may
# then come back short, with a link to read on.
MASKED_BATCH = 200
MASKED_MOST = 2000


def _search_masked(session: Session, principal: Principal, stmt, term: str, after: tuple | None,  # noqa: ANN001
                   limit: int, order: str = "newest") -> Page:
    found: list[Case] = []
    scanned = 0
    cursor = after
    while True:
        batch = list(session.exec(keyset(stmt, cursor, order).limit(MASKED_BATCH)).all())
        people = known_names(session, [c for c in batch if not principal.sees_person(c)])
        for case in batch:
            if term not in text_for(principal, case.description, people.get(case.id, ()), case).lower():
                continue
            if len(found) == limit:  # one match more: there is a next page, after the last shown
                return Page(found, key_of(found[-1], order), names_for(session, found, principal))
            found.append(case)
        scanned += len(batch)
        if len(batch) < MASKED_BATCH:
            return Page(found, None, names_for(session, found, principal))
        cursor = key_of(batch[-1], order)
        if scanned >= MASKED_MOST:  # read on from here on the next page
            return Page(found, cursor, names_for(session, found, principal))


# Searches for a person: a phone search, or a text search that looks for one. Each is an
# audit row with one of these actions; the hour's rows are what the limit counts.
PERSONAL_SEARCHES = ("case.search_phone", "case.search_text")


def personal_searches_allowed() -> int:
    return int(console_rules()["search"]["personal_per_hour"])


def personal_searches_made(session: Session, actor: str) -> int:
    """How many personal searches this account made in the last hour (audit rows)."""

    return int(session.exec(select(func.count()).select_from(AuditEntry).where(
        AuditEntry.actor == actor, AuditEntry.action.in_(PERSONAL_SEARCHES),
        AuditEntry.at >= utcnow() - timedelta(hours=1))).one())


# The statuses a handler's queue shows: it owns the case and has work to do on it.
QUEUE_STATUSES = sorted(s.value for s in OWNED if s != CaseStatus.verified)


# The sorts a queue offers: the nearest resolution deadline first (the default), or by arrival.
QUEUE_SORTS = ("due", "oldest", "newest")


def queue(session: Session, principal: Principal, *, worker_id: int | None = None,
          department_id: int | None = None, after: tuple | None = None, limit: int | None = None,
          filters: TriageFilters | None = None) -> Page:
    """A worker's or a department's open cases, filtered as triage is (``filtered``), the nearest
    deadline first unless another sort is chosen, with how many match."""
    limit = limit or page_size()
    f = filters or TriageFilters()
    f.check(statuses=tuple(QUEUE_STATUSES), sorts=QUEUE_SORTS)
    stmt = select(Case).where(Case.status.in_(QUEUE_STATUSES), Case.resolution_due.is_not(None))
    if worker_id is not None:
        stmt = stmt.where(Case.worker_id == worker_id)
    else:
        stmt = stmt.where(Case.department_id == department_id)
    stmt = scoped(filtered(session, stmt, f), principal)
    total = int(session.exec(select(func.count()).select_from(stmt.subquery())).one())
    order = f.sorted_by(QUEUE_SORTS)
    rows = list(session.exec(keyset(stmt, after, order).limit(limit + 1)).all())
    nxt = key_of(rows[limit - 1], order) if len(rows) > limit else None
    rows = rows[:limit]
    return Page(rows, nxt, names_for(session, rows, principal), total)


def queue_owners(session: Session, principal: Principal) -> tuple[list, list]:
    """Workers and departments with their open-case counts; a scoped account sees its own."""
    counts_w = dict(session.exec(scoped(
        select(Case.worker_id, func.count()).where(Case.status.in_(QUEUE_STATUSES), Case.worker_id.is_not(None))
        .group_by(Case.worker_id), principal)).all())
    counts_d = dict(session.exec(scoped(
        select(Case.department_id, func.count()).where(Case.status.in_(QUEUE_STATUSES),
                                                      Case.department_id.is_not(None))
        .group_by(Case.department_id), principal)).all())
    workers = session.exec(select(Worker).where(Worker.active == True).order_by(Worker.code)).all()  # noqa: E712
    departments = session.exec(select(Department).order_by(Department.code)).all()
    if not principal.sees_all and (principal.worker_id is not None or principal.department_id is not None):
        workers = [w for w in workers if w.id == principal.worker_id]
        departments = [d for d in departments if d.id == principal.department_id]
    elif not principal.sees_all:
        # An account scoped to a community (grids, no worker or department of its own): the
        # workers of its grids, and whoever owns a case it can see.
        own = workers_of_grids(session, principal.grid_ids) if principal.grid_ids else frozenset()
        workers = [w for w in workers if w.id in own or counts_w.get(w.id)]
        departments = [d for d in departments if counts_d.get(d.id)]
    return ([(w, counts_w.get(w.id, 0)) for w in workers], [(d, counts_d.get(d.id, 0)) for d in departments])
