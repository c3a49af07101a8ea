"""A district's year of history: what ``gridline demo load --size district-year`` loads (through
``core.actions.reference.load_district_year``, which audits it) so that the console and the
dashboard can be tried at a real district's volume, and what the benchmarks measure on
(``bench/dataset.py``, ``bench/core.py``, ``bench/load.py``, the console's bench).

``load(engine, cases)`` fills a migrated, empty database with:

- the demo district (grids with polygons, workers, gazetteer, categories, the calendar)
  and its 500 households, plus more households and residents in proportion to the cases
  (``households_per_case``), so phone lookups search a realistic registry;
- ``cases`` cases over twelve months, in time order as a live system writes them: most old
  ones closed, recent ones open, 3 % still in triage; 60 % from registered residents;
- 5–10 ``CaseEvent`` rows per case, the steps its status implies (submit, locate, dispatch,
  accept, start, report done, verify, survey attempts, the survey's outcome, operator notes);
- a ``Survey`` row for every verified or closed case (answered, pending or unreachable), so
  the satisfaction query has work to do;
- a ``CallSession`` for every hotline case and a fifth as many calls that filed none (status
  queries, transfers to a person, hang-ups), answered and timed as the hotline records them, a
  few slow or unanswered and two bad days a year, so the hotline's service figures
  (``core.reporting.hotline``) have a year to show.

Rows are bulk-written (COPY on PostgreSQL, executemany on SQLite); the events and surveys
are derived from the cases as stored, in a second pass. ``Dataset`` says what was written
and gives the benchmarks samples to work with (phones of registered residents, addresses
that unknown callers say, case numbers, a busy worker).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine, text
from sqlmodel import select

from core.cases.models import Category, Channel, Urgency
from core.deadlines.models import CategorySla
from core.deadlines.sla import calendar_for, compute_deadlines
from core.followup.models import SATISFIED
from core.people.models import WorkerGrid
from core.places import indexes
from core.places.models import GazetteerEntry, Grid, GridLevel
from core.platform.db import session_scope
from core.reference.demo import MOBILE_PREFIXES, load_demo

START = datetime(2025, 12, 1)
DAYS = 365
# A year of a mid-sized district: what ``--size district-year`` loads.
DISTRICT_YEAR_CASES = 1_000_000
CASE_COLUMNS = [
    "id", "number", "channel", "status", "description", "category_id", "urgency", "grid_id", "owner_level",
    "worker_id", "department_id", "reopen_count", "escalation_count", "created_at", "updated_at",
    "dispatched_at", "response_due", "resolution_due", "accepted_at", "reported_done_at", "verified_at",
    "closed_at", "close_reason", "responded_on_time", "resolved_on_time", "latitude", "longitude",
    "resident_id", "contact_phone", "address_text",
]
EVENT_COLUMNS = ["case_id", "at", "actor", "action", "from_status", "to_status", "reason", "on_time", "data"]
CALL_COLUMNS = ["call_sid", "direction", "from_number", "to_number", "status", "resident_id", "case_id",
                "speech_seconds", "outcome", "started_at", "answered_at", "transferred_at", "transfer_status",
                "ended_at", "duration_s", "updated_at"]
HOTLINE_NUMBER = "+8657112345"
# Two days a year when the lines were bad: one caller in five could not get through at first.
BAD_DAYS = (40, 200)
SURVEY_COLUMNS = ["case_id", "channel", "status", "attempts", "solved", "satisfied", "comment", "created_at",
                  "answered_at"]
DESCRIPTIONS = ["路灯不亮了", "下水道堵了，污水漫到路上", "楼道里有人飞线给电动车充电", "楼上邻居半夜噪音扰民",
                "垃圾好几天没人清运", "井盖松动有危险", "小区门口占道经营", "老人独居需要上门看看"]


@dataclass
class Dataset:
    cases: int = 0
    events: int = 0
    surveys: int = 0
    calls: int = 0
    households: int = 0
    residents: int = 0
    seconds: float = 0.0
    # Samples for the benchmarks.
    known_phones: list[str] = field(default_factory=list)
    spoken_addresses: list[str] = field(default_factory=list)
    case_numbers: list[str] = field(default_factory=list)
    busy_worker: int | None = None

    def __str__(self) -> str:
        return (f"{self.cases:,} cases, {self.events:,} events ({self.events / max(self.cases, 1):.1f} per case), "
                f"{self.surveys:,} surveys, {self.calls:,} calls, {self.households:,} households, {self.residents:,} residents "
                f"({self.seconds:.1f} s)")


# -- writing rows ------------------------------------------------------------------------


def _write(engine: Engine, table: str, columns: list[str], rows: Iterable[list]) -> int:
    """Bulk-insert ``rows`` (lists in ``columns`` order); returns how many."""
    n = 0
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        if engine.dialect.name == "postgresql":
            cols = ", ".join(f'"{c}"' for c in columns)
            with cur.copy(f'COPY "{table}" ({cols}) FROM STDIN') as copy:
                for row in rows:
                    copy.write_row(row)
                    n += 1
        else:
            sql = f'INSERT INTO "{table}" ({", ".join(columns)}) VALUES ({", ".join("?" * len(columns))})'
            batch: list[list] = []
            for row in rows:
                batch.append([v.isoformat(sep=" ") if isinstance(v, datetime) else v for v in row])
                if len(batch) >= 20000:
                    cur.executemany(sql, batch)
                    n += len(batch)
                    batch.clear()
            if batch:
                cur.executemany(sql, batch)
                n += len(batch)
        raw.commit()
    finally:
        raw.close()
    return n


# -- households and residents ----------------------------------------------------------------


def _registry(engine: Engine, households: int, rng: random.Random) -> tuple[int, int]:
    """Households beyond the demo's 500, 1–3 residents each, mobiles unique."""
    with session_scope(engine) as session:
        micro = session.exec(select(Grid.id, Grid.name).where(Grid.level == GridLevel.micro)).all()
        first_household = int(session.exec(text("SELECT COALESCE(MAX(id), 0) FROM household")).one()[0]) + 1
        taken = {p for (p,) in session.exec(text("SELECT phone FROM resident WHERE phone IS NOT NULL"))}
    seen: set[str] = set()

    def mobile() -> str:
        while True:
            phone = f"{rng.choice(MOBILE_PREFIXES)}{rng.randrange(10**8):08d}"
            if phone not in seen and f"+86{phone}" not in taken:
                seen.add(phone)
                return phone

    household_rows, resident_rows = [], []
    for k in range(households):
        hid = first_household + k
        grid_id, grid_name = micro[k % len(micro)]
        household_rows.append([hid, f"B{hid:07d}", f"{grid_name}{k // len(micro) % 40 + 1}幢{k % 6 + 1}单元{k % 30 + 101}室",
                               grid_id])
        for _ in range(rng.choice((1, 2, 2, 3))):
            resident_rows.append([f"居民{len(resident_rows)}", mobile() if rng.random() < 0.9 else None, hid, "zh",
                                  START])
    _write(engine, "household", ["id", "code", "address", "grid_id"], household_rows)
    _write(engine, "resident", ["name", "phone", "household_id", "language", "created_at"], resident_rows)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("SELECT setval(pg_get_serial_sequence('household', 'id'), (SELECT MAX(id) FROM household))"))
    with session_scope(engine) as session:
        indexes.changed(session)  # bulk SQL bypasses the ORM hook
    return len(household_rows), len(resident_rows)


# -- cases ---------------------------------------------------------------------------------------


def _cases(session, n: int, rng: random.Random, residents: list[tuple[int, str]],
           addresses: list[str], per_day: dict[str, int]) -> Iterator[list]:
    """Case rows shaped like a year of a district, ids 1..n in time order; ``per_day``
    receives each day's count (the case-number sequences)."""
    micro = session.exec(select(Grid).where(Grid.level == GridLevel.micro)).all()
    owners = {wg.grid_id: wg.worker_id for wg in session.exec(select(WorkerGrid)).all()}
    categories = session.exec(select(Category)).all()
    sla = {(s.category_id, s.urgency): s for s in session.exec(select(CategorySla)).all()}
    cal = calendar_for(session)
    offsets = sorted(rng.randrange(DAYS * 86400) for _ in range(n))
    for i, offset in enumerate(offsets):
        created = START + timedelta(seconds=offset)
        day = (created + timedelta(hours=8)).strftime("%y%m%d")
        per_day[day] = per_day.get(day, 0) + 1
        grid = micro[i % len(micro)]
        category = categories[rng.randrange(len(categories))]
        urgency = Urgency.normal if rng.random() < 0.85 else Urgency.urgent
        age_days = (START + timedelta(days=DAYS) - created).days
        roll = rng.random()
        row = dict.fromkeys(CASE_COLUMNS)
        known = rng.random() < 0.6
        resident_id, phone = residents[rng.randrange(len(residents))] if known else (None, None)
        row.update(id=i + 1, number=f"{day}{per_day[day]:05d}", channel=rng.choice(list(Channel)).name,
                   description=rng.choice(DESCRIPTIONS), category_id=category.id, urgency=urgency.name,
                   grid_id=grid.id, reopen_count=0, escalation_count=0, created_at=created, updated_at=created,
                   resident_id=resident_id,
                   contact_phone=phone or f"1{rng.randrange(30, 99)}{rng.randrange(10**8):08d}",
                   address_text=None if known else rng.choice(addresses))
        if roll < 0.03:
            row.update(status="received", grid_id=None)
        else:
            dispatched = created + timedelta(minutes=rng.randrange(5, 120))
            rule = sla.get((category.id, urgency))
            due = compute_deadlines(rule, dispatched, cal) if rule else (dispatched + timedelta(hours=4),
                                                                         dispatched + timedelta(days=5))
            accepted = dispatched + timedelta(minutes=rng.randrange(10, 600))
            done = accepted + timedelta(hours=rng.randrange(1, 120))
            row.update(owner_level="micro", worker_id=owners.get(grid.id), department_id=category.department_id,
                       dispatched_at=dispatched, response_due=due[0], resolution_due=due[1])
            finished = age_days > 10 or roll > 0.5
            if not finished:
                row["status"] = rng.choice(["dispatched", "accepted", "in_progress", "reported_done", "verified"])
                if row["status"] != "dispatched":
                    row.update(accepted_at=accepted, responded_on_time=accepted <= due[0])
                if row["status"] in ("reported_done", "verified"):
                    row.update(reported_done_at=done, resolved_on_time=done <= due[1])
                if row["status"] == "verified":
                    row.update(verified_at=done + timedelta(hours=4))
            else:
                reason = rng.choice(["survey:satisfied"] * 14 + ["survey:basically"] * 3 + ["survey:unreachable"])
                row.update(status="closed", accepted_at=accepted, responded_on_time=accepted <= due[0],
                           reported_done_at=done, resolved_on_time=done <= due[1],
                           verified_at=done + timedelta(hours=4), closed_at=done + timedelta(days=1),
                           close_reason=reason)
        yield [row[c] for c in CASE_COLUMNS]


_CASE_READ = ("SELECT id, created_at, dispatched_at, accepted_at, reported_done_at, verified_at, "
              "closed_at, close_reason, responded_on_time, resolved_on_time, resident_id, worker_id FROM \"case\" "
              "ORDER BY id")


def _events_and_surveys(engine: Engine, seed: int) -> tuple[int, int]:
    """5–10 events per case (what its status implies, padded with operator notes and
    reminders as real cases have), and the surveys of verified and closed cases."""
    rng = random.Random(seed)
    surveys: list[list] = []
    with engine.connect() as conn:
        worker_codes = dict(conn.execute(text("SELECT id, code FROM worker")).all())

    def events() -> Iterator[list]:
        with engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=20000).execute(text(_CASE_READ))
            for (cid, created, dispatched, accepted, done, verified, closed, reason, resp_ok, res_ok,
                 resident, worker_id) in result:
                # who a dispatch names, as actions.dispatch writes it (the worker scores read it)
                named = json.dumps({"worker": worker_codes.get(worker_id)}) if worker_id else None
                created, dispatched, accepted, done, verified, closed = (
                    _dt(v) for v in (created, dispatched, accepted, done, verified, closed))
                steps = [(created, "hotline", "submit", None, "received", "filed", None)]
                if dispatched is None:
                    steps.append((created + timedelta(seconds=1), "system", "flag", "received", "received",
                                  "needs_triage", None))
                else:
                    steps += [(dispatched - timedelta(seconds=2), "system", "classify", "received", "received",
                               "suggested from the description", None),
                              (dispatched - timedelta(seconds=1), "system", "locate", "received", "received",
                               "registered household" if resident else "gazetteer", None),
                              (dispatched, "system", "dispatch", "received", "dispatched", None, None)]
                if dispatched is not None and _flag(resp_ok) is False and rng.random() < 0.2:
                    # a late response climbs one level now and then (the SLA sweep's escalation)
                    steps.append((dispatched + timedelta(hours=4), "system", "escalate", "dispatched", "dispatched",
                                  "超时未签收", None))
                if accepted is not None:
                    steps.append((accepted, "worker", "accept", "dispatched", "accepted", None, _flag(resp_ok)))
                    steps.append((accepted + timedelta(minutes=20), "worker", "start", "accepted", "in_progress",
                                  None, None))
                if done is not None:
                    steps.append((done, "worker", "report_done", "in_progress", "reported_done", "已处理",
                                  _flag(res_ok)))
                if verified is not None:
                    steps.append((verified, "leader", "verify", "reported_done", "verified", "核查通过", None))
                if closed is not None:
                    unreachable = reason == "survey:unreachable"
                    tries = 3 if unreachable else rng.choice((1, 1, 2))
                    for k in range(tries - 1):
                        steps.append((verified + timedelta(hours=2 + k), "system", "survey_attempt", "verified",
                                      "verified", "no_answer", None))
                    # the survey's answer closes the case: a ``close`` event, as record_survey writes it
                    steps.append((closed, "resident", "close", "verified", "closed", reason, None))
                    answered = not unreachable
                    satisfied = "basically" if reason == "survey:basically" else "satisfied" if answered else None
                    surveys.append([cid, "phone", "answered" if answered else "unreachable", tries,
                                    "solved" if answered else None, satisfied, None, verified,
                                    closed if answered else None])
                elif verified is not None:
                    surveys.append([cid, "phone", "pending", 0, None, None, None, verified, None])
                _trim(steps)
                while len(steps) < 5 or (len(steps) < 10 and rng.random() < 0.25):
                    at = steps[-1][0] + timedelta(minutes=rng.randrange(1, 90))
                    to = steps[-1][4]
                    steps.append((at, "operator", "note", to, to, "已电话联系居民", None))
                for at, actor, action, from_status, to_status, why, on_time in steps:
                    data = named if action == "dispatch" else None
                    yield [cid, at, actor, action, from_status, to_status, why, on_time, data]

    n_events = _write(engine, "caseevent", EVENT_COLUMNS, events())
    n_surveys = _write(engine, "survey", SURVEY_COLUMNS, surveys)
    with engine.begin() as conn:
        _count_survey_answers(conn)
    return n_events, n_surveys


def _count_survey_answers(conn) -> None:  # noqa: ANN001
    """What ``record_survey`` keeps on each case as it records an answer, for surveys
    written in bulk: the answered surveys and how many said (basically) satisfied."""
    satisfied = ", ".join(f"'{answer}'" for answer in sorted(SATISFIED))
    conn.execute(text(
        'UPDATE "case" SET surveys_answered = s.answered, surveys_satisfied = s.satisfied FROM ('
        " SELECT case_id, count(*) AS answered,"
        f" sum(CASE WHEN satisfied IN ({satisfied}) THEN 1 ELSE 0 END) AS satisfied"
        " FROM survey WHERE status = 'answered' GROUP BY case_id) AS s"
        ' WHERE "case".id = s.case_id'))


def _calls(engine: Engine, seed: int) -> int:
    """The hotline's calls: one per hotline case (filed, or filed after the caller hung up,
    a few after a transfer nobody answered), and a fifth as many more that filed nothing."""
    rng = random.Random(seed)
    with engine.connect() as conn:
        filed = conn.execute(text("SELECT id, created_at, resident_id, contact_phone FROM \"case\" "
                                  "WHERE channel = 'hotline' ORDER BY id")).all()

    def call(arrived: datetime, outcome: str, *, case_id: int | None = None, resident_id: int | None = None,
             phone: str | None = None, transfer: str | None = None, seconds: tuple[int, int] = (60, 240),
             answered: bool = True) -> list:
        wait = None if not answered else rng.uniform(15.5, 24.0) if rng.random() < 0.004 else rng.uniform(0.15, 1.5)
        duration = rng.randrange(*seconds)
        ended = arrived + timedelta(seconds=duration + (wait or 0))
        return [f"CA{rng.getrandbits(128):032x}", "inbound",
                phone or f"+861{rng.randrange(30, 99)}{rng.randrange(10**8):08d}", HOTLINE_NUMBER, "completed",
                resident_id, case_id, round(rng.uniform(3, 40), 1) if case_id else 0.0, outcome, arrived,
                None if wait is None else arrived + timedelta(seconds=wait),
                None if transfer is None else arrived + timedelta(seconds=(wait or 0) + rng.uniform(8, 30)), transfer,
                ended, duration, ended]

    def missed(arrived: datetime, phone: str | None = None, resident_id: int | None = None) -> Iterator[list]:
        """Now and then (often on a bad day) an earlier try that was never answered."""
        if rng.random() < (0.2 if (arrived - START).days in BAD_DAYS else 0.002):
            yield call(arrived - timedelta(seconds=rng.randrange(60, 600)), "hung_up", phone=phone,
                       resident_id=resident_id, seconds=(1, 15), answered=False)

    def rows() -> Iterator[list]:
        for case_id, created, resident_id, phone in filed:
            arrived = _dt(created) - timedelta(seconds=rng.randrange(60, 300))
            yield from missed(arrived, phone, resident_id)
            roll = rng.random()
            if roll < 0.03:
                yield call(arrived, "hung_up_case", case_id=case_id, resident_id=resident_id, phone=phone)
            elif roll < 0.031:
                yield call(arrived, "recovered_case", case_id=case_id, resident_id=resident_id, phone=phone)
            elif roll < 0.05:  # the operator line was busy: the caller left the petition
                yield call(arrived, "case_filed", case_id=case_id, resident_id=resident_id, phone=phone,
                           transfer=rng.choice(["busy", "no-answer"]))
            else:
                yield call(arrived, "case_filed", case_id=case_id, resident_id=resident_id, phone=phone)
        for _ in range(len(filed) // 5):
            arrived = START + timedelta(seconds=rng.randrange(DAYS * 86400))
            yield from missed(arrived)
            roll = rng.random()
            if roll < 0.4:
                yield call(arrived, "status_query", seconds=(30, 90))
            elif roll < 0.7:
                yield call(arrived, "operator", transfer="completed", seconds=(120, 600))
            elif roll < 0.85:
                yield call(arrived, "hung_up", seconds=(5, 40))
            else:
                yield call(arrived, "no_petition", seconds=(20, 45))

    return _write(engine, "callsession", CALL_COLUMNS, rows())


def _trim(steps: list[tuple], most: int = 10) -> None:
    """A long life records fewer side steps: drop repeated survey attempts, then the classify."""
    for optional in ("survey_attempt", "survey_attempt", "classify"):
        if len(steps) <= most:
            return
        index = next((i for i, step in enumerate(steps) if step[2] == optional), None)
        if index is not None:
            del steps[index]


def _dt(value):  # noqa: ANN001, ANN202  (SQLite gives text back from a raw query)
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _flag(value):  # noqa: ANN001, ANN202
    return None if value is None else bool(value)


def load(engine: Engine, cases: int, *, seed: int = 7, households_per_case: float = 0.05) -> Dataset:
    """Fill a migrated, empty database; see the module's docstring."""
    t0 = time.perf_counter()
    rng = random.Random(seed)
    out = Dataset()
    with session_scope(engine) as session:
        summary = load_demo(session)
    out.households, out.residents = summary.households, summary.residents
    extra = max(0, int(cases * households_per_case) - summary.households)
    added_h, added_r = _registry(engine, extra, rng)
    out.households += added_h
    out.residents += added_r

    with session_scope(engine) as session:
        residents = [(rid, phone) for rid, phone in session.exec(
            text("SELECT id, phone FROM resident WHERE phone IS NOT NULL AND household_id IS NOT NULL ORDER BY id"))]
        buildings = list(session.exec(select(GazetteerEntry.name).where(
            GazetteerEntry.kind.in_(["building", "landmark", "community"]))).all())
        addresses = [f"{b}门口" for b in buildings] + ["我家楼下", "菜市场旁边那条路"]
        per_day: dict[str, int] = {}
        out.cases = _write(engine, "case", CASE_COLUMNS, _cases(session, cases, rng, residents, addresses, per_day))
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM casesequence"))
        conn.execute(text("INSERT INTO casesequence (day, last) VALUES (:d, :n)"),
                     [{"d": d, "n": c} for d, c in per_day.items()])
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT setval(pg_get_serial_sequence('\"case\"', 'id'), (SELECT MAX(id) FROM \"case\"))"))
    out.events, out.surveys = _events_and_surveys(engine, seed + 1)
    out.calls = _calls(engine, seed + 2)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            for table in ('"case"', "caseevent", "survey", "resident", "household", "callsession"):
                conn.execute(text(f"ANALYZE {table}"))
        else:
            conn.execute(text("ANALYZE"))

    with session_scope(engine) as session:
        out.known_phones = [p for (_, p) in residents[:: max(1, len(residents) // 400)]]
        out.spoken_addresses = addresses
        out.case_numbers = [x for (x,) in session.exec(text('SELECT number FROM "case" ORDER BY random() LIMIT 300'))]
        out.busy_worker = session.exec(text(
            "SELECT worker_id FROM \"case\" WHERE worker_id IS NOT NULL AND status <> 'closed' "
            "GROUP BY worker_id ORDER BY count(*) DESC LIMIT 1")).one()[0]
    out.seconds = time.perf_counter() - t0
    return out
