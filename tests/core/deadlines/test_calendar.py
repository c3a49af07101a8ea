"""Working-calendar arithmetic on the real 2026 calendar (holidays and 调休 make-up days)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.deadlines.calendar import (
    DATA_DIR,
    WorkingCalendar,
    load_calendar_file,
    parse_hours,
    sync_calendar_days,
)
from tests.core.shanghai import local, utc


def test_calendar_file_matches_the_state_council_notice():
    rows = {r.day: r for r in load_calendar_file(DATA_DIR / "calendar_2026.toml")}
    make_up = sorted(d for d, r in rows.items() if r.is_working)
    assert make_up == [date(2026, 1, 4), date(2026, 2, 14), date(2026, 2, 28), date(2026, 5, 9),
                       date(2026, 9, 20), date(2026, 10, 10)]
    assert all(d.weekday() >= 5 for d in make_up)  # make-up days are weekend days
    holidays = {d for d, r in rows.items() if not r.is_working}
    assert len(holidays) == 3 + 9 + 3 + 5 + 3 + 3 + 7
    assert {date(2026, 10, d) for d in range(1, 8)} <= holidays
    assert {date(2026, 2, d) for d in range(15, 24)} <= holidays
    assert rows[date(2026, 10, 3)].note == "国庆节"
    assert rows[date(2026, 10, 10)].note == "国庆节调休上班"


def test_day_kinds(cal):
    assert cal.is_working_day(date(2026, 9, 30))  # Wed
    assert not cal.is_working_day(date(2026, 10, 1))  # 国庆
    assert cal.is_working_day(date(2026, 9, 20))  # Sun, make-up day
    assert cal.is_working_day(date(2026, 10, 10))  # Sat, make-up day
    assert not cal.is_working_day(date(2026, 10, 11))  # plain Sunday
    assert cal.is_working_day(date(2027, 3, 3))  # beyond the file: plain week


def test_national_day_short_deadline_lands_after_the_holiday(cal):
    # Wed 30 Sep 16:00 + 8 h: 1.5 h that afternoon, 1–7 Oct off, 6.5 h on Thu 8 Oct.
    due = cal.add_working_hours(utc(2026, 9, 30, 16), 8)
    assert local(due) == datetime(2026, 10, 8, 16, 30)
    assert cal.working_hours_between(utc(2026, 9, 30, 16), due) == 8


def test_national_day_longer_deadline_uses_the_saturday_make_up_day(cal):
    # 1.5 (Wed) + 7.5 (Thu 8) + 7.5 (Fri 9) = 16.5; the next 3.5 h are Sat 10 Oct's morning.
    assert local(cal.add_working_hours(utc(2026, 9, 30, 16), 17)) == datetime(2026, 10, 10, 9, 0)
    assert local(cal.add_working_hours(utc(2026, 9, 30, 16), 20)) == datetime(2026, 10, 10, 12, 0)
    # …and Sun 11 Oct is a normal day off again.
    assert local(cal.add_working_hours(utc(2026, 9, 30, 16), 25)) == datetime(2026, 10, 12, 9, 30)


def test_never_lands_inside_the_holiday(cal):
    start = utc(2026, 9, 29, 9)
    for quarter_hours in range(1, 200):
        due = local(cal.add_working_hours(start, quarter_hours / 4))
        assert not date(2026, 10, 1) <= due.date() <= date(2026, 10, 7)


def test_sunday_make_up_day_counts(cal):
    # Fri 18 Sep 17:00 + 1 h: half an hour on Friday, then Sun 20 Sep (worked) from 08:30.
    assert local(cal.add_working_hours(utc(2026, 9, 18, 17), 1)) == datetime(2026, 9, 20, 9, 0)
    assert cal.is_working_time(utc(2026, 9, 20, 10))
    assert not cal.is_working_time(utc(2026, 9, 19, 10))  # Saturday before: off
    assert cal.working_hours_between(utc(2026, 9, 19, 0), utc(2026, 9, 21, 0)) == 7.5


def test_spring_festival(cal):
    # Fri 13 Feb 15:00 + 4 h: 2.5 h Friday, Sat 14 Feb is a make-up working day.
    assert local(cal.add_working_hours(utc(2026, 2, 13, 15), 4)) == datetime(2026, 2, 14, 10, 0)
    # From the make-up Saturday afternoon, the next working moment after it is Tue 24 Feb.
    assert local(cal.add_working_hours(utc(2026, 2, 14, 17), 1)) == datetime(2026, 2, 24, 9, 0)
    assert cal.working_hours_between(utc(2026, 2, 14, 17, 30), utc(2026, 2, 24, 8, 30)) == 0
    # The week after: Sat 28 Feb is worked, Sun 1 Mar is not.
    assert local(cal.add_working_hours(utc(2026, 2, 27, 17), 1)) == datetime(2026, 2, 28, 9, 0)
    assert local(cal.add_working_hours(utc(2026, 2, 28, 17), 1)) == datetime(2026, 3, 2, 9, 0)


def test_lunch_break(cal):
    # Tue 10 Mar 11:00 + 2 h: one hour before lunch, one after 13:30.
    assert local(cal.add_working_hours(utc(2026, 3, 10, 11), 2)) == datetime(2026, 3, 10, 14, 30)
    # Ending exactly at 12:00 is 12:00, not 13:30.
    assert local(cal.add_working_hours(utc(2026, 3, 10, 11), 1)) == datetime(2026, 3, 10, 12, 0)
    # Starting during lunch counts from 13:30.
    assert local(cal.add_working_hours(utc(2026, 3, 10, 12, 30), 1)) == datetime(2026, 3, 10, 14, 30)
    assert cal.working_hours_between(utc(2026, 3, 10, 11), utc(2026, 3, 10, 14)) == 1.5
    assert not cal.is_working_time(utc(2026, 3, 10, 12, 0))
    assert cal.is_working_time(utc(2026, 3, 10, 11, 59))
    assert cal.is_working_time(utc(2026, 3, 10, 13, 30))


def test_start_at_night_and_at_the_weekend(cal):
    assert local(cal.add_working_hours(utc(2026, 3, 10, 22), 1)) == datetime(2026, 3, 11, 9, 30)
    assert local(cal.add_working_hours(utc(2026, 3, 11, 3), 1)) == datetime(2026, 3, 11, 9, 30)
    # Sat 14 Mar: the count begins on Monday morning.
    assert local(cal.add_working_hours(utc(2026, 3, 14, 10), 4)) == datetime(2026, 3, 16, 14, 0)
    assert local(cal.next_working_moment(utc(2026, 3, 14, 10))) == datetime(2026, 3, 16, 8, 30)
    assert local(cal.next_working_moment(utc(2026, 3, 16, 12, 15))) == datetime(2026, 3, 16, 13, 30)
    assert cal.next_working_moment(utc(2026, 3, 16, 9)) == utc(2026, 3, 16, 9)
    # A UTC midnight is 08:00 in Shanghai: before the office opens.
    assert local(cal.next_working_moment(datetime(2026, 3, 16, 0, 0))) == datetime(2026, 3, 16, 8, 30)


def test_fractional_hours(cal):
    assert local(cal.add_working_hours(utc(2026, 3, 10, 9), 0.5)) == datetime(2026, 3, 10, 9, 30)
    assert local(cal.add_working_hours(utc(2026, 3, 10, 11, 45), 0.25)) == datetime(2026, 3, 10, 12, 0)
    assert local(cal.add_working_hours(utc(2026, 3, 10, 11, 45), 1 / 3)) == datetime(2026, 3, 10, 13, 35)
    assert cal.add_working_hours(utc(2026, 3, 10, 9), 0) == utc(2026, 3, 10, 9)
    assert local(cal.add_working_hours(utc(2026, 3, 10, 20), 0)) == datetime(2026, 3, 11, 8, 30)
    with pytest.raises(ValueError):
        cal.add_working_hours(utc(2026, 3, 10, 9), -1)


def test_working_hours_between(cal):
    # Mon 9 Mar to Mon 16 Mar, same time: a full week of five days.
    assert cal.working_hours_between(utc(2026, 3, 9, 10), utc(2026, 3, 16, 10)) == 37.5
    # Around National Day: 6 working days (28–30 Sep; 8, 9 and the make-up Saturday 10 Oct).
    assert cal.working_hours_between(utc(2026, 9, 28), utc(2026, 10, 11)) == 6 * 7.5
    assert cal.working_hours_between(utc(2026, 3, 16, 10), utc(2026, 3, 9, 10)) == -37.5


def test_add_working_days(cal):
    # FixMyStreet-style: the start day does not count; the deadline is the end of the day.
    assert local(cal.add_working_days(utc(2026, 3, 10, 10), 1)) == datetime(2026, 3, 11, 17, 30)
    assert local(cal.add_working_days(utc(2026, 3, 13, 10), 1)) == datetime(2026, 3, 16, 17, 30)
    assert local(cal.add_working_days(utc(2026, 3, 14, 10), 1)) == datetime(2026, 3, 16, 17, 30)
    assert local(cal.add_working_days(utc(2026, 3, 10, 10), 5)) == datetime(2026, 3, 17, 17, 30)
    # Over National Day: Wed 30 Sep + 3 working days = Thu 8, Fri 9, Sat 10 (make-up).
    assert local(cal.add_working_days(utc(2026, 9, 30, 10), 3)) == datetime(2026, 10, 10, 17, 30)
    assert local(cal.add_working_days(utc(2026, 9, 30, 10), 4)) == datetime(2026, 10, 12, 17, 30)
    assert local(cal.add_working_days(utc(2026, 9, 30, 10), 0)) == datetime(2026, 9, 30, 17, 30)
    assert local(cal.add_working_days(utc(2026, 10, 3, 10), 0)) == datetime(2026, 10, 8, 17, 30)
    assert cal.working_days_between(utc(2026, 9, 30, 10), utc(2026, 10, 10, 12)) == 3


def test_configurable_hours_and_timezone():
    hours = parse_hours([["09:00", "12:00"], ["14:00", "18:00"]])
    cal = WorkingCalendar({}, hours=hours, tz="Europe/Berlin")
    assert cal.working_day_hours == 7
    # Berlin is UTC+1 in March: Mon 9 Mar 2026 11:00 UTC is 12:00 local, lunch.
    assert cal.add_working_hours(datetime(2026, 3, 9, 11), 1) == datetime(2026, 3, 9, 14)
    # Across the switch to summer time (29 Mar): Fri 27 Mar 17:00 local (16:00 UTC) + 2 h
    # is Mon 30 Mar 10:00 local, which is 08:00 UTC.
    assert cal.add_working_hours(datetime(2026, 3, 27, 16), 2) == datetime(2026, 3, 30, 8)
    with pytest.raises(ValueError):
        WorkingCalendar({}, hours=[(time(9), time(12)), (time(11), time(13))])


def test_far_dates_extend_the_table(cal):
    due = cal.add_working_hours(utc(2026, 3, 10, 9), 7.5 * 5 * 52 * 10)  # ten years of weeks
    assert local(due).year == 2036
    assert cal.working_hours_between(utc(2026, 3, 10, 9), due) == 7.5 * 5 * 52 * 10
    early = utc(1999, 3, 10, 9)
    assert cal.working_hours_between(early, cal.add_working_hours(early, 3)) == 3


def test_load_from_database(session):
    sync_calendar_days(session, load_calendar_file(DATA_DIR / "calendar_2026.toml"))
    sync_calendar_days(session, load_calendar_file(DATA_DIR / "calendar_2026.toml"))  # idempotent
    session.commit()
    cal = WorkingCalendar.load(session)
    assert cal.is_working_day(date(2026, 10, 10)) and not cal.is_working_day(date(2026, 10, 8) - timedelta(days=2))
    assert local(cal.add_working_hours(utc(2026, 9, 30, 16), 17)) == datetime(2026, 10, 10, 9, 0)


moments = st.datetimes(min_value=datetime(2025, 12, 1), max_value=datetime(2027, 1, 31))
hours = st.one_of(
    st.integers(min_value=0, max_value=400 * 60).map(lambda m: m / 60),
    st.floats(min_value=0, max_value=400, allow_nan=False),
)


@settings(max_examples=400, deadline=None)
@given(start=moments, h=hours)
def test_round_trip(cal, start, h):
    due = cal.add_working_hours(start, h)
    assert due >= start
    # The calendar counts in whole microseconds: equal to h up to that rounding.
    assert cal.working_hours_between(start, due) == pytest.approx(h, abs=1e-9)
    if round(h * 3_600_000_000) > 0:  # the last microsecond before a deadline is worked
        assert cal.is_working_time(due - timedelta(microseconds=1))


@settings(max_examples=200, deadline=None)
@given(a=moments, b=moments)
def test_between_is_additive(cal, a, b):
    mid = a + (b - a) / 2
    total = cal.working_hours_between(a, b)
    assert total == pytest.approx(cal.working_hours_between(a, mid) + cal.working_hours_between(mid, b), abs=1e-9)
    assert (total >= 0) == (b >= a) or total == 0
