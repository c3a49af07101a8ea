"""Deadlines from SLAs, their colours, on-time flags and the escalation ladder."""

from __future__ import annotations

from datetime import datetime, timedelta

from core.cases.models import Case, Category, Channel, Urgency
from core.deadlines.calendar import DATA_DIR, load_calendar_file, sync_calendar_days
from core.deadlines.models import CategorySla
from core.deadlines.sla import (
    Deadlines,
    SlaHours,
    compute_deadlines,
    deadlines_for_case,
    default_sla,
    escalation_ladder,
    next_owner_level,
    on_time,
    sla_colour,
)
from core.places.models import GridLevel
from tests.core.shanghai import local, utc


def test_default_slas_come_from_rules():
    assert default_sla(Urgency.normal) == SlaHours(4, 37.5)  # 37.5 h = five 7.5 h working days
    assert default_sla("urgent") == SlaHours(1, 8)
    assert default_sla(Urgency.emergency) == SlaHours(0.5, 4)
    rules = {"sla": {"default": {"normal": {"response_hours": 2, "resolution_hours": 16}}}}
    assert default_sla("normal", rules) == SlaHours(2, 16)


def test_compute_deadlines_over_national_day(cal):
    d = compute_deadlines(SlaHours(4, 37.5), utc(2026, 9, 30, 16), cal)
    assert isinstance(d, Deadlines)
    response_due, resolution_due = d  # unpacks like a tuple
    # 1.5 h on Wed 30 Sep, then 2.5 h on Thu 8 Oct.
    assert local(response_due) == datetime(2026, 10, 8, 11, 0)
    # 1.5 + 7.5 (8 Oct) + 7.5 (9 Oct) + 7.5 (Sat 10 Oct, worked) + 7.5 (12 Oct) = 31.5; 6 h on 13 Oct.
    assert local(resolution_due) == datetime(2026, 10, 13, 16, 0)


def test_category_sla_overrides_default(session, cal):
    sync_calendar_days(session, load_calendar_file(DATA_DIR / "calendar_2026.toml"))
    cat = Category(code="streetlight", name="路灯")
    session.add(cat)
    session.flush()
    session.add(CategorySla(category_id=cat.id, urgency=Urgency.normal, response_hours=2, resolution_hours=15))
    session.flush()
    at = utc(2026, 3, 10, 9)
    case = Case(number="260310001", channel=Channel.hotline, category_id=cat.id, urgency=Urgency.normal)
    assert deadlines_for_case(session, case, at, tz="Asia/Shanghai") == (utc(2026, 3, 10, 11), utc(2026, 3, 12, 9))
    # No row for this urgency: the rules' default.
    case.urgency = Urgency.urgent
    assert deadlines_for_case(session, case, at, tz="Asia/Shanghai") == (utc(2026, 3, 10, 10), utc(2026, 3, 11, 9, 30))
    # The database calendar is used: dispatch before National Day.
    case.urgency = Urgency.normal
    due = deadlines_for_case(session, case, utc(2026, 9, 30, 17), tz="Asia/Shanghai")
    assert local(due.response_due) == datetime(2026, 10, 8, 10, 0)


def test_colours_at_74_75_and_100_percent(cal):
    start = utc(2026, 3, 10, 8, 30)  # Tue
    due = cal.add_working_hours(start, 8)  # Wed 11 Mar 09:00
    at = lambda frac: cal.add_working_hours(start, 8 * frac)  # noqa: E731
    assert sla_colour(start, due, start, cal) == "green"
    assert sla_colour(start, due, at(0.74), cal) == "green"
    assert sla_colour(start, due, at(0.75), cal) == "yellow"
    assert sla_colour(start, due, at(0.99), cal) == "yellow"
    assert sla_colour(start, due, at(1.0), cal) == "red"
    assert sla_colour(start, due, due + timedelta(days=3), cal) == "red"


def test_colour_counts_working_time_not_wall_time(cal):
    # 4 h from Wed 30 Sep 16:00 is Thu 8 Oct 11:00; during the holiday no working time passes.
    start = utc(2026, 9, 30, 16)
    due = cal.add_working_hours(start, 4)
    assert sla_colour(start, due, utc(2026, 10, 5, 12), cal) == "green"  # 1.5 / 4 = 37.5 %
    assert sla_colour(start, due, utc(2026, 10, 8, 10), cal) == "yellow"  # 3 / 4 = 75 %
    assert sla_colour(start, due, utc(2026, 10, 8, 11, 1), cal) == "red"


def test_warn_threshold_is_configurable(cal):
    start = utc(2026, 3, 10, 8, 30)
    due = cal.add_working_hours(start, 10)
    assert sla_colour(start, due, cal.add_working_hours(start, 5), cal, warn_at=0.5) == "yellow"


def test_on_time():
    due = datetime(2026, 3, 10, 9)
    assert on_time(due, due)
    assert on_time(due - timedelta(seconds=1), due)
    assert not on_time(due + timedelta(microseconds=1), due)
    assert on_time(due, None)


def test_escalation_ladder():
    assert escalation_ladder() == (GridLevel.micro, GridLevel.area, GridLevel.community, GridLevel.street,
                                   GridLevel.district)
    assert next_owner_level(GridLevel.micro) == GridLevel.area
    assert next_owner_level("community") == GridLevel.street
    assert next_owner_level(GridLevel.district) is None
    # A district without 片区: its ladder skips "area", and an "area" owner still climbs.
    rules = {"escalation": {"ladder": ["micro", "community", "street", "district"]}}
    assert next_owner_level(GridLevel.micro, rules) == GridLevel.community
    assert next_owner_level(GridLevel.area, rules) == GridLevel.community
