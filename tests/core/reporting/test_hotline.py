"""The hotline's service figures (core/reporting/hotline.py) from call sessions written the way the
hotline writes them, on SQLite and PostgreSQL: the period's figures and its local hours, days and
months equal the same figures worked out here in plain Python from the calls' own list."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from core.cases.models import CallSession
from core.platform.db import session_scope
from core.reporting import hotline
from core.reporting.hotline import Targets

TZ = "Asia/Shanghai"
TARGETS = Targets(answer_within_s=15.0, connection_rate=0.95)


@dataclass(frozen=True)
class Spec:
    """One call: arrival (naive UTC), seconds to the first prompt (None: never answered), the
    outcome, the transfer's DialCallStatus ("" no transfer, None transferred with no result),
    Twilio's CallDuration, seconds from arrival to the end (None: still going)."""

    arrived: datetime
    wait_s: float | None = 0.4
    outcome: str | None = "case_filed"
    transfer: str | None = ""
    duration_s: int | None = None
    ended_after_s: float | None = 90.0
    direction: str = "inbound"


# Around two local midnights (+8): 2026-11-30 15:59 UTC is 23:59 on the 30th, 16:00 UTC is
# 00:00 on 1 December; and two calls in the same local hour.
CALLS = (
    Spec(datetime(2026, 11, 1, 1, 5), wait_s=0.3, outcome="case_filed", duration_s=120),
    Spec(datetime(2026, 11, 1, 1, 40), wait_s=16.5, outcome="hung_up_case", ended_after_s=45.0),
    Spec(datetime(2026, 11, 1, 2, 10), wait_s=None, outcome="hung_up", ended_after_s=3.0),
    Spec(datetime(2026, 11, 2, 3, 0), wait_s=2.0, outcome="operator", transfer="completed", duration_s=300),
    Spec(datetime(2026, 11, 2, 3, 30), wait_s=1.0, outcome="case_filed", transfer="busy", duration_s=200),
    Spec(datetime(2026, 11, 2, 4, 0), wait_s=1.0, outcome="operator", transfer=None, ended_after_s=None),
    Spec(datetime(2026, 11, 30, 15, 59, 30), wait_s=0.5, outcome="recovered_case", ended_after_s=None),
    Spec(datetime(2026, 11, 30, 16, 0, 0), wait_s=15.0, outcome="no_petition", duration_s=20),
    Spec(datetime(2026, 11, 30, 16, 20), wait_s=0.2, outcome="status_query", duration_s=40),
    Spec(datetime(2026, 11, 30, 17, 0), wait_s=0.2, outcome=None, ended_after_s=None),  # still going
    # Not offered calls: a survey call placed by us, and one outside the period.
    Spec(datetime(2026, 11, 2, 3, 15), direction="outbound", outcome=None, duration_s=60),
    Spec(datetime(2026, 10, 31, 15, 59), wait_s=0.1),  # 23:59 local on 31 October
)


def write_calls(engine, calls=CALLS) -> None:  # noqa: ANN001
    """Rows as the hotline leaves them: arrival, first prompt, transfer, outcome, end."""
    with session_scope(engine) as session:
        for spec in calls:
            session.add(CallSession(
                call_sid=f"CA{secrets.token_hex(16)}", direction=spec.direction, from_number="+8613800000000",
                status="completed" if spec.ended_after_s is not None or spec.duration_s else "in-progress",
                outcome=spec.outcome, started_at=spec.arrived,
                answered_at=None if spec.wait_s is None else spec.arrived + timedelta(seconds=spec.wait_s),
                transferred_at=None if spec.transfer == "" else spec.arrived + timedelta(seconds=20),
                transfer_status=spec.transfer or None, duration_s=spec.duration_s,
                ended_at=None if spec.ended_after_s is None else spec.arrived + timedelta(seconds=spec.ended_after_s),
            ))


def expected(calls, start: datetime, end: datetime, tz: str, grain: str | None) -> dict[str, dict]:  # noqa: ANN001
    """The figures per bucket key, worked out call by call."""
    zone = ZoneInfo(tz)
    out: dict[str, dict] = {}
    for spec in calls:
        if spec.direction != "inbound" or not start <= spec.arrived < end:
            continue
        local = spec.arrived.replace(tzinfo=UTC).astimezone(zone)
        key = {"hour": f"{local:%Y-%m-%d %H}:00", "day": f"{local:%Y-%m-%d}", "month": f"{local:%Y-%m}",
               None: "*"}[grain]
        b = out.setdefault(key, {"offered": 0, "answered": 0, "answered_in_time": 0, "ended_before_case": 0,
                                 "filed_from_audio": 0, "transfers": 0, "transfers_answered": 0,
                                 "waits": [], "handling": []})
        b["offered"] += 1
        if spec.wait_s is not None:
            b["answered"] += 1
            b["answered_in_time"] += spec.wait_s <= 15
            b["waits"].append(spec.wait_s)
        b["ended_before_case"] += spec.outcome in ("hung_up", "no_petition", "hung_up_case", "recovered_case")
        b["filed_from_audio"] += spec.outcome in ("hung_up_case", "recovered_case")
        if spec.transfer != "":
            b["transfers"] += 1
            b["transfers_answered"] += spec.transfer == "completed"
        if spec.duration_s is not None:
            b["handling"].append(spec.duration_s)
        elif spec.ended_after_s is not None:
            b["handling"].append(spec.ended_after_s)
    return out


def as_seen(x: hotline.CallFigures) -> dict:
    return {"offered": x.offered, "answered": x.answered, "answered_in_time": x.answered_in_time,
            "ended_before_case": x.ended_before_case, "filed_from_audio": x.filed_from_audio,
            "transfers": x.transfers, "transfers_answered": x.transfers_answered,
            "average_wait_s": x.average_wait_s, "longest_wait_s": x.longest_wait_s,
            "average_handling_s": x.average_handling_s}


def as_expected(b: dict) -> dict:
    return {k: b[k] for k in ("offered", "answered", "answered_in_time", "ended_before_case", "filed_from_audio",
                              "transfers", "transfers_answered")} | {
        "average_wait_s": round(sum(b["waits"]) / len(b["waits"]), 2) if b["waits"] else None,
        "longest_wait_s": pytest.approx(max(b["waits"]), abs=1e-3) if b["waits"] else None,
        "average_handling_s": round(sum(b["handling"]) / len(b["handling"]), 1) if b["handling"] else None}


# November and the first day of December, local (+8), as naive UTC.
START, END = datetime(2026, 10, 31, 16, 0), datetime(2026, 12, 1, 16, 0)


def test_figures_per_local_hour_day_and_month_equal_the_calls_counted_one_by_one(engine):
    write_calls(engine)
    with session_scope(engine) as session:
        got = hotline.hotline_figures(session, START, END, TZ, limits=TARGETS)
    assert as_seen(got.total) == as_expected(expected(CALLS, START, END, TZ, None)["*"])
    for grain in ("hour", "day", "month"):
        want = expected(CALLS, START, END, TZ, grain)
        assert [x.key for x in got.by[grain]] == sorted(want), grain
        assert {x.key: as_seen(x) for x in got.by[grain]} == {k: as_expected(v) for k, v in want.items()}, grain
    # What that means, said plainly (the numbers the list above makes):
    t = got.total
    assert (t.offered, t.answered, t.answered_in_time) == (10, 9, 8)  # the survey call and 31 October left out
    assert (t.ended_before_case, t.filed_from_audio) == (4, 2)
    assert (t.transfers, t.transfers_answered, t.transfers_not_answered) == (3, 1, 2)
    assert t.connection_rate == 0.9 and t.in_time_rate == 0.8
    assert [x.key for x in got.months] == ["2026-11", "2026-12"]  # 16:00 UTC on the 30th is December
    assert [(x.key, x.offered) for x in got.days] == [("2026-11-01", 3), ("2026-11-02", 3), ("2026-11-30", 1),
                                                      ("2026-12-01", 3)]
    first = got.hours[0]
    assert (first.key, first.offered, first.answered_in_time) == ("2026-11-01 09:00", 2, 1)


def test_the_targets_colour_each_bucket(engine):
    write_calls(engine)
    with session_scope(engine) as session:
        got = hotline.hotline_figures(session, START, END, TZ, limits=TARGETS)
    days = {x.key: x for x in got.days}
    # 1 November: one call never answered (2 of 3, 66.7 %) and one answered after 16.5 s
    assert days["2026-11-01"].meets_connection(TARGETS) is False
    assert days["2026-11-01"].meets_wait(TARGETS) is False
    # 2 November: every call answered, each within 15 s
    assert days["2026-11-02"].meets_connection(TARGETS) is True and days["2026-11-02"].meets_wait(TARGETS) is True
    # exactly 15 s is within 15 s
    assert days["2026-12-01"].meets_wait(TARGETS) is True
    assert hotline.CallFigures("x").meets_connection(TARGETS) is None  # no calls: neither met nor missed


def test_the_district_time_zone_decides_the_buckets(engine):
    """The same calls in UTC: 16:00 UTC on 30 November is still November."""
    write_calls(engine)
    start, end = datetime(2026, 11, 1), datetime(2026, 12, 2)
    with session_scope(engine) as session:
        got = hotline.hotline_figures(session, start, end, "UTC", limits=TARGETS)
    assert [x.key for x in got.months] == ["2026-11"]
    assert [(x.key, x.offered) for x in got.days] == [("2026-11-01", 3), ("2026-11-02", 3), ("2026-11-30", 4)]
    assert {x.key: as_seen(x) for x in got.hours} == {
        k: as_expected(v) for k, v in expected(CALLS, start, end, "UTC", "hour").items()}


def test_the_targets_are_rules_a_deployment_can_change(override):
    assert hotline.targets() == Targets(15.0, 0.95)
    override("[reports.hotline]\nanswer_within_seconds = 10\nconnection_rate = 0.98\n")
    assert hotline.targets() == Targets(10.0, 0.98)


def test_current_periods_are_local():
    now = datetime(2026, 11, 30, 16, 30)  # 00:30 on 1 December in Shanghai
    periods = hotline.current_periods(now, TZ)
    assert periods["hour"] == (datetime(2026, 11, 30, 16, 0), datetime(2026, 11, 30, 17, 0))
    assert periods["day"] == (datetime(2026, 11, 30, 16, 0), datetime(2026, 12, 1, 16, 0))
    assert periods["month"] == (datetime(2026, 11, 30, 16, 0), datetime(2026, 12, 31, 16, 0))
    assert hotline.local_key(now, TZ, "hour") == "2026-12-01 00:00"


def test_the_district_year_has_calls_for_the_figures(engine):
    """``gridline demo load --size district-year``: every hotline case came from a call, and the
    figures of the year are what a working hotline shows (nearly all answered in time, a few not)."""
    from sqlalchemy import text

    from core.reference import history

    data = history.load(engine, 400)
    with session_scope(engine) as session:
        hotline_cases = session.exec(text("SELECT count(*) FROM \"case\" WHERE channel = 'hotline'")).one()[0]
        without_call = session.exec(text(
            "SELECT count(*) FROM \"case\" c WHERE c.channel = 'hotline' AND NOT EXISTS "
            "(SELECT 1 FROM callsession s WHERE s.case_id = c.id)")).one()[0]
        year = hotline.hotline_figures(session, history.START - timedelta(days=1),
                                       history.START + timedelta(days=history.DAYS + 1), TZ, limits=TARGETS)
    assert hotline_cases > 50 and without_call == 0
    assert year.total.offered == data.calls >= hotline_cases * 1.1
    assert 0.95 < year.total.connection_rate < 1.0 or year.total.connection_rate == 1.0
    assert year.total.transfers > 0 and year.total.ended_before_case > 0 and year.total.filed_from_audio > 0
    assert year.total.average_handling_s > 30 and len(year.months) >= 12
