"""The dashboard's and the reports' figures (core/reporting/reports.py) against hand-written SQL on the
same cases, on SQLite and PostgreSQL; periods and filters."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import event, text

from core import actions
from core.cases.models import Case, Channel
from core.errors import InvalidInput
from core.platform import clock
from core.platform.db import session_scope
from core.reporting import reports
from core.reporting.reports import Period, Scope, parse_period
from tests.core.reports_world import NOV_BOUNDS, NOW, OCT_BOUNDS, build_reports_world

TZ = "Asia/Shanghai"
OPEN = "('received','dispatched','accepted','in_progress','reported_done','verified','reopened','returned')"


def sql(engine, query: str, **params) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(query), params).all()]


def local_day(engine, column: str) -> str:
    """The local (+8) calendar day of a stored UTC time, as each database writes it."""
    if engine.dialect.name == "sqlite":
        return f"date({column}, '+8 hours')"
    return f"CAST({column} + INTERVAL '8 hours' AS DATE)"


def totals_sql(engine, start: datetime, end: datetime, where: str = "", **params) -> dict[str, int]:
    row = sql(engine, f"""
        SELECT count(*),
               sum(CASE WHEN dispatched_at IS NOT NULL OR responded_on_time IS NOT NULL THEN 1 ELSE 0 END),
               sum(CASE WHEN responded_on_time THEN 1 ELSE 0 END),
               sum(CASE WHEN status = 'closed' THEN 1 ELSE 0 END),
               sum(CASE WHEN resolved_on_time IS NOT NULL THEN 1 ELSE 0 END),
               sum(CASE WHEN resolved_on_time THEN 1 ELSE 0 END)
        FROM "case" c WHERE created_at >= :s AND created_at < :e AND status <> 'merged' {where}""",
              s=start, e=end, **params)[0]
    surveys = sql(engine, f"""
        SELECT count(*), sum(CASE WHEN v.satisfied IN ('satisfied', 'basically') THEN 1 ELSE 0 END)
        FROM survey v JOIN "case" c ON c.id = v.case_id
        WHERE v.status = 'answered' AND c.created_at >= :s AND c.created_at < :e {where}""",
                  s=start, e=end, **params)[0]
    keys = ("received", "dispatched", "responded_on_time", "closed", "reported_done", "resolved_on_time")
    out = {k: int(v or 0) for k, v in zip(keys, row, strict=True)}
    out["surveyed"], out["satisfied"] = int(surveys[0] or 0), int(surveys[1] or 0)
    return out


def as_dict(rates) -> dict[str, int]:  # noqa: ANN001
    return {k: getattr(rates, k) for k in ("received", "dispatched", "responded_on_time", "closed",
                                          "reported_done", "resolved_on_time", "surveyed", "satisfied")}


def test_periods_parse_and_step_back():
    week = parse_period("2026-W48")
    assert (week.start, week.end, week.label) == (date(2026, 11, 23), date(2026, 11, 30), "2026-W48")
    assert week.previous().label == "2026-W47"
    month = parse_period("2026-01")
    assert month.previous() == Period("month", date(2025, 12, 1), date(2026, 1, 1))
    quarter = parse_period("2026Q1")
    assert (quarter.end, quarter.previous().label) == (date(2026, 4, 1), "2025Q4")
    assert quarter.label_words("zh") == "2026年第一季度"
    days = parse_period("2026-11-01..2026-11-10")
    assert days.days == 10 and days.previous() == Period("days", date(2026, 10, 22), date(2026, 11, 1))
    assert parse_period("2026-11").bounds(TZ) == NOV_BOUNDS
    assert reports.last_complete("month", date(2026, 12, 2)).label == "2026-11"
    assert reports.last_complete("week", date(2026, 12, 2)).label == "2026-W48"
    assert reports.period_for_report("quarterly", None, date(2026, 12, 2)).label == "2026Q3"
    for bad in ("2026-13", "2026-W60", "November", "2026-11-10..2026-11-01", ""):
        with pytest.raises(InvalidInput):
            parse_period(bad)
    with pytest.raises(InvalidInput):
        reports.period_for_report("weekly", "2026-11", date(2026, 12, 2))


def test_dashboard_figures_equal_hand_written_sql(engine):
    world = build_reports_world(engine)
    with session_scope(engine) as session:
        filters = reports.make_filters(session, level="micro")
        d = reports.dashboard(session, parse_period("2026-11"), filters, tz=TZ, as_of=NOW)
    start, end = NOV_BOUNDS
    expected = totals_sql(engine, start, end)
    assert as_dict(d.totals) == expected
    assert expected["received"] == 8 and expected["surveyed"] == 2  # the fixture is what it says
    assert (d.rates["closure"].numerator, d.rates["closure"].denominator) == (expected["closed"], 8)
    assert d.rates["response"].denominator == expected["dispatched"]
    assert d.rates["satisfaction"].value == 0.5

    by_category = sql(engine, """
        SELECT COALESCE(k.code, '-'), count(*) FROM "case" c LEFT JOIN category k ON k.id = c.category_id
        WHERE c.created_at >= :s AND c.created_at < :e AND c.status <> 'merged' GROUP BY 1""", s=start, e=end)
    assert {c.code: c.value for c in d.by_category} == dict(by_category)
    by_grid = sql(engine, """
        SELECT COALESCE(g.code, '-'), count(*) FROM "case" c LEFT JOIN grid g ON g.id = c.grid_id
        WHERE c.created_at >= :s AND c.created_at < :e AND c.status <> 'merged' GROUP BY 1""", s=start, e=end)
    assert {c.code: c.value for c in d.by_grid} == dict(by_grid)

    # the 90 days up to the period's end
    first, last = datetime(2026, 9, 1, 16, 0), datetime(2026, 11, 30, 16, 0)
    assert len(d.trend) == 90 and d.trend[-1].day == date(2026, 11, 30)
    received = dict(sql(engine, f"""SELECT {local_day(engine, 'created_at')}, count(*) FROM "case"
        WHERE created_at >= :s AND created_at < :e AND status <> 'merged' GROUP BY 1""", s=first, e=last))
    closed = dict(sql(engine, f"""SELECT {local_day(engine, 'closed_at')}, count(*) FROM "case"
        WHERE closed_at >= :s AND closed_at < :e AND status = 'closed' GROUP BY 1""", s=first, e=last))
    assert {str(t.day): t.received for t in d.trend if t.received} == {str(k): v for k, v in received.items()}
    assert {str(t.day): t.closed for t in d.trend if t.closed} == {str(k): v for k, v in closed.items()}
    assert sum(t.received for t in d.trend) == 3 + 8

    loads = sql(engine, f"""
        SELECT COALESCE(g.code, '-'), count(*),
               sum(CASE WHEN c.status IN ('dispatched','accepted','in_progress')
                         AND ((c.status = 'dispatched' AND c.response_due < :now) OR c.resolution_due < :now)
                        THEN 1 ELSE 0 END)
        FROM "case" c LEFT JOIN grid g ON g.id = c.grid_id WHERE c.status IN {OPEN} GROUP BY 1""", now=NOW)
    assert {x.code: x.open for x in d.most_open} == {code: n for code, n, _ in loads}
    assert {x.code: x.overdue for x in d.most_overdue} == {code: int(o) for code, _, o in loads if o}
    assert [x.open for x in d.most_open] == sorted((x.open for x in d.most_open), reverse=True)
    assert world.district.grids["micro2"].code in {x.code for x in d.most_overdue}

    channels = sql(engine, """SELECT channel, count(*) FROM "case"
        WHERE created_at >= :s AND created_at < :e AND status <> 'merged' GROUP BY channel""", s=start, e=end)
    assert {c.code: c.value for c in d.channels} == dict(channels)
    assert sum(c.value for c in d.channels) == expected["received"]


def test_dashboard_filters_and_scope_equal_sql(engine):
    world = build_reports_world(engine)
    micro2 = world.district.grids["micro2"]
    area = world.district.grids["area"]
    with session_scope(engine) as session:
        by_category = reports.make_filters(session, category_code="flying_lead")
        d_cat = reports.dashboard(session, parse_period("2026-11"), by_category, tz=TZ, as_of=NOW)
        by_grid = reports.make_filters(session, grid_code=area.code)
        assert by_grid.level == "micro"  # the level below the grid chosen
        d_grid = reports.dashboard(session, parse_period("2026-11"), by_grid, tz=TZ, as_of=NOW)
        # a worker's scope: what W-M2 owns or what lies in micro grid 2
        scope = Scope(cases=(Case.worker_id == world.district.workers["W-M2"].id) | (Case.grid_id == micro2.id))
        d_scope = reports.dashboard(session, parse_period("2026-11"), reports.make_filters(session), scope=scope,
                                    tz=TZ, as_of=NOW)
    start, end = NOV_BOUNDS
    cat_id = world.district.categories["flying_lead"].id
    assert as_dict(d_cat.totals) == totals_sql(engine, start, end, "AND c.category_id = :k", k=cat_id)
    grid_ids = [g.id for key, g in world.district.grids.items() if key in ("area", "micro1", "micro2")]
    where = f"AND c.grid_id IN ({', '.join(str(i) for i in grid_ids)})"
    assert as_dict(d_grid.totals) == totals_sql(engine, start, end, where)
    assert "-" not in {c.code for c in d_grid.by_grid}  # unplaced cases are outside the grid
    where = "AND (c.worker_id = :w OR c.grid_id = :g)"
    expected = totals_sql(engine, start, end, where, w=world.district.workers["W-M2"].id, g=micro2.id)
    assert as_dict(d_scope.totals) == expected and 0 < expected["received"] < 8
    assert {x.code for x in d_scope.most_open} <= {world.district.grids["community"].code}

    # The trend of a filtered or scoped dashboard (counted in one grouped pass, not per day).
    first, last = datetime(2026, 9, 1, 16, 0), datetime(2026, 11, 30, 16, 0)
    for d, where, params in ((d_cat, "AND category_id = :k", {"k": cat_id}),
                             (d_scope, "AND (worker_id = :w OR grid_id = :g)",
                              {"w": world.district.workers["W-M2"].id, "g": micro2.id})):
        received = dict(sql(engine, f"""SELECT {local_day(engine, 'created_at')}, count(*) FROM "case"
            WHERE created_at >= :s AND created_at < :e AND status <> 'merged' {where} GROUP BY 1""",
                            s=first, e=last, **params))
        closed = dict(sql(engine, f"""SELECT {local_day(engine, 'closed_at')}, count(*) FROM "case"
            WHERE closed_at >= :s AND closed_at < :e AND status = 'closed' {where} GROUP BY 1""",
                          s=first, e=last, **params))
        assert len(d.trend) == 90 and received
        assert {str(t.day): t.received for t in d.trend if t.received} == {str(k): v for k, v in received.items()}
        assert {str(t.day): t.closed for t in d.trend if t.closed} == {str(k): v for k, v in closed.items()}


def test_monthly_report_figures_equal_hand_written_sql(engine):
    world = build_reports_world(engine)
    with session_scope(engine) as session:
        r = reports.report(session, "monthly", parse_period("2026-11"), reports.make_filters(session),
                           tz=TZ, as_of=NOW)
    start, end = NOV_BOUNDS
    assert r.title == "清溪区2026年11月诉求办理月通报"
    assert as_dict(r.totals) == totals_sql(engine, start, end)
    assert as_dict(r.totals_previous) == totals_sql(engine, *OCT_BOUNDS)
    assert r.totals_previous.received == 3

    # by community (the rules' default level), this month and last
    for period_rates, bounds in ((lambda c: c.this, NOV_BOUNDS), (lambda c: c.previous, OCT_BOUNDS)):
        grids = dict(sql(engine, """
            SELECT COALESCE(CASE WHEN c.grid_id IS NULL THEN NULL ELSE :community END, '-'), count(*)
            FROM "case" c WHERE created_at >= :s AND created_at < :e AND status <> 'merged' GROUP BY 1""",
                         community=world.district.grids["community"].code, s=bounds[0], e=bounds[1]))
        assert {c.code: period_rates(c).received for c in r.by_grid if period_rates(c).received} == grids
    categories = dict(sql(engine, """SELECT COALESCE(k.code, '-'), sum(CASE WHEN c.status = 'closed' THEN 1 ELSE 0 END)
        FROM "case" c LEFT JOIN category k ON k.id = c.category_id
        WHERE c.created_at >= :s AND c.created_at < :e AND c.status <> 'merged' GROUP BY 1""", s=start, e=end))
    assert {c.code: c.this.closed for c in r.by_category if c.this.received} == categories

    overdue = [n for (n,) in sql(engine, """SELECT number FROM "case" WHERE created_at >= :s AND created_at < :e
        AND status <> 'merged' AND (responded_on_time = :f OR resolved_on_time = :f
             OR (status IN ('dispatched','accepted','in_progress')
                 AND ((status = 'dispatched' AND response_due < :now) OR resolution_due < :now)))
        ORDER BY created_at, id""", s=start, e=end, now=NOW, f=False)]
    assert [x.number for x in r.overdue] == overdue and r.overdue_total == len(overdue)
    assert world.numbers["nov_late"] in overdue and world.numbers["nov_escalated"] in overdue
    assert world.numbers["nov_ok"] not in overdue

    escalated = sql(engine, """SELECT c.number, count(*) FROM caseevent e JOIN "case" c ON c.id = e.case_id
        WHERE e.action = 'escalate' AND e.at >= :s AND e.at < :e GROUP BY c.number""", s=start, e=end)
    assert {x.number: x.count for x in r.escalated} == dict(escalated) == {world.numbers["nov_escalated"]: 1}

    places = sql(engine, """SELECT c.category_id, COALESCE('h:' || CAST(r.household_id AS VARCHAR),
                                                           'a:' || c.address_text) AS place, c.number
        FROM "case" c LEFT JOIN resident r ON r.id = c.resident_id
        WHERE c.created_at >= :s AND c.created_at < :e AND c.status <> 'merged' AND c.category_id IS NOT NULL""",
                 s=start, e=end)
    groups = Counter((cat, place) for cat, place, _ in places if place is not None)
    repeated = {k: n for k, n in groups.items() if n >= 2}
    assert r.repeats_total == len(repeated) == 2
    assert sorted(x.count for x in r.repeats) == sorted(repeated.values())
    by_place = {x.place: x for x in r.repeats}
    assert sorted(by_place) == sorted(["洋坊新村9幢门口", "罗布社区洋坊新村9幢2单元301室"])
    assert by_place["洋坊新村9幢门口"].numbers == [world.numbers["nov_repeat_address_a"],
                                              world.numbers["nov_repeat_address_b"]]

    # the month's trend inside the report: every day of November
    assert [t.day for t in r.trend][0] == date(2026, 11, 1) and len(r.trend) == 30
    assert sum(t.received for t in r.trend) == 8
    # worker scores: the quarter so far (Oct 1 to Nov 30), from core.reporting.scores
    assert r.scores_period.start == date(2026, 10, 1) and r.scores_period.end == date(2026, 12, 1)
    scores = {s.code: s for s in r.scores}
    dispatches = sql(engine, """SELECT count(*) FROM caseevent e JOIN "case" c ON c.id = e.case_id
        WHERE e.action = 'dispatch' AND e.at >= :s AND e.at < :e AND e.actor = 'op'
          AND c.status <> 'merged' AND c.grid_id = :g""", s=OCT_BOUNDS[0], e=NOV_BOUNDS[1],
                     g=world.district.grids["micro1"].id)[0][0]
    assert scores["W-M1"].assignments == dispatches == 4


def test_report_for_a_grid_and_a_scope(engine):
    world = build_reports_world(engine)
    micro2 = world.district.grids["micro2"]
    with session_scope(engine) as session:
        r = reports.report(session, "monthly", parse_period("2026-11"),
                           reports.make_filters(session, grid_code=micro2.code), tz=TZ, as_of=NOW)
    assert r.place == micro2.name and r.title.startswith(micro2.name)
    start, end = NOV_BOUNDS
    assert as_dict(r.totals) == totals_sql(engine, start, end, "AND c.grid_id = :g", g=micro2.id)
    assert {s.code for s in r.scores} == {"W-M2"}  # only the workers of the grid
    assert all(x.grid == micro2.name for x in r.overdue)


def test_bad_filters_are_refused(engine):
    build_reports_world(engine)
    with session_scope(engine) as session:
        for kw in ({"level": "planet"}, {"category_code": "nope"}, {"grid_code": "999"}):
            with pytest.raises(InvalidInput):
                reports.make_filters(session, **kw)
        with pytest.raises(InvalidInput):
            reports.report(session, "daily", parse_period("2026-11"), reports.make_filters(session))


def test_a_week_and_a_quarter(engine):
    build_reports_world(engine)
    with session_scope(engine) as session:
        week = reports.report(session, "weekly", parse_period("2026-W47"), reports.make_filters(session),
                              tz=TZ, as_of=NOW)
        quarter = reports.report(session, "quarterly", parse_period("2026Q4"), reports.make_filters(session),
                                 tz=TZ, as_of=NOW)
    w_start, w_end = parse_period("2026-W47").bounds(TZ)
    assert as_dict(week.totals) == totals_sql(engine, w_start, w_end)
    assert week.totals.received == 8  # every November case came in the week of the 16th
    assert as_dict(quarter.totals) == totals_sql(engine, *parse_period("2026Q4").bounds(TZ))
    assert quarter.totals.received == 3 + 8 + 1 and quarter.scores_period.label == "2026Q4"
    # On 2 December the quarter is not over: it is compared with Q3's same 63 days, its trend stops today.
    assert quarter.until == date(2026, 12, 2) and quarter.totals_previous.received == 0
    assert quarter.previous == Period("days", date(2026, 7, 1), date(2026, 9, 2))
    assert len(quarter.trend) == (date(2026, 12, 3) - date(2026, 10, 1)).days
    assert week.until is None and week.previous.label == "2026-W46"
    assert week.title.endswith("诉求办理周汇总") and quarter.title.endswith("诉求办理季度考核（截至12月2日）")
    assert timedelta(0) < NOW - datetime(2026, 11, 1)


def test_the_daily_trend_reads_the_per_day_indexes(engine):
    """With no filter or scope, each day's count of the trend is an index search, never a read
    of the whole table; on PostgreSQL a range of the narrow partial index, read from the index
    alone (the predicates are written once, in core.cases.models, and used as they are)."""
    captured: list[tuple] = []

    def capture(conn, cursor, statement, parameters, *args) -> None:  # noqa: ANN001
        captured.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        with session_scope(engine) as session:
            reports.received_per_day(session, date(2026, 11, 1), date(2026, 11, 3), [], TZ)
            reports.closed_per_day(session, date(2026, 11, 1), date(2026, 11, 3), [], TZ)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    for (statement, parameters), index in zip(captured[-2:], ("ix_case_received_day", "ix_case_closed_day"),
                                              strict=True):
        with session_scope(engine) as session:
            conn = session.connection()
            if engine.dialect.name == "sqlite":
                plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql(
                    "EXPLAIN QUERY PLAN " + statement, parameters).all())
                # SQLite, with no statistics, may take another index of the status or the day.
                assert plan.count("SEARCH case USING") == 2 and "SCAN case" not in plan, plan
            else:
                conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
                plan = " ".join(str(r[0]) for r in conn.exec_driver_sql("EXPLAIN " + statement, parameters).all())
                assert plan.count(f"Index Only Scan using {index}") == 2, plan


# Monday 16 November 2026, 12:00 in the district: the middle of a month and of a quarter.
MID_NOVEMBER = datetime(2026, 11, 16, 4, 0)


def test_a_partial_month_and_quarter_say_so_and_compare_the_same_days(engine):
    build_reports_world(engine)
    clock.freeze(datetime(2026, 10, 20, 2, 0))  # late October: in the whole month, not in its first 16 days
    with session_scope(engine) as session:
        actions.submit_petition(session, actions.Petition(channel=Channel.hotline, description="十月下旬：路灯坏了",
                                                          category_code="streetlight"), actor="test")
    clock.freeze(MID_NOVEMBER)
    with session_scope(engine) as session:
        every = reports.make_filters(session)
        month = reports.report(session, "monthly", parse_period("2026-11"), every, tz=TZ)
        month_en = reports.report(session, "monthly", parse_period("2026-11"), every, tz=TZ, language="en")
        quarter = reports.report(session, "quarterly", parse_period("2026Q4"), every, tz=TZ)
        october = reports.report(session, "monthly", parse_period("2026-10"), every, tz=TZ)
        board = reports.dashboard(session, parse_period("2026-11"), every, tz=TZ)
    november_days = [date(2026, 11, 1) + timedelta(days=n) for n in range(16)]

    assert month.until == date(2026, 11, 16) and month.title.endswith("（截至11月16日）")
    assert "to 11/16" in month_en.title
    assert month.previous == Period("days", date(2026, 10, 1), date(2026, 10, 17))
    assert as_dict(month.totals_previous) == totals_sql(engine, *month.previous.bounds(TZ))
    assert month.totals_previous.received == 3 and totals_sql(engine, *OCT_BOUNDS)["received"] == 4
    assert [d.day for d in month.trend] == november_days

    assert quarter.until == date(2026, 11, 16)
    assert quarter.previous == Period("days", date(2026, 7, 1), date(2026, 8, 17))  # Q3's first 47 days
    assert quarter.trend[-1].day == date(2026, 11, 16) and len(quarter.trend) == 47
    assert quarter.title.endswith("（截至11月16日）")

    # A whole month is compared with the whole month before and draws all its days.
    assert october.until is None and october.previous == parse_period("2026-09")
    assert len(october.trend) == 31 and "截至" not in october.title
    assert october.totals.received == 4

    assert board.until == date(2026, 11, 16) and board.trend[-1].day == date(2026, 11, 16)
