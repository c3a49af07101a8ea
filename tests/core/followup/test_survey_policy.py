"""core.followup.survey_policy: the phone follow-up's calling hours (local time, every day, public
holidays of the working calendar skipped) and its rules."""

from __future__ import annotations

from datetime import date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from core.followup import survey_policy
from core.followup.survey_policy import CallingHours

HOLIDAYS = [date(2026, 10, d) for d in range(1, 8)]


def local(*args) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo("Asia/Shanghai")).astimezone(ZoneInfo("UTC")).replace(tzinfo=None)


@pytest.mark.parametrize("at, allowed, next_at", [
    (local(2026, 11, 17, 10, 0), True, local(2026, 11, 17, 10, 0)),  # Tuesday morning
    (local(2026, 11, 17, 8, 59), False, local(2026, 11, 17, 9, 0)),  # before they open
    (local(2026, 11, 17, 20, 0), False, local(2026, 11, 18, 9, 0)),  # the end is exclusive
    (local(2026, 11, 17, 23, 30), False, local(2026, 11, 18, 9, 0)),
    (local(2026, 11, 21, 10, 0), True, local(2026, 11, 21, 10, 0)),  # Saturday: a calling day
    (local(2026, 9, 30, 21, 0), False, local(2026, 10, 8, 9, 0)),  # National Day week skipped
    (local(2026, 10, 3, 12, 0), False, local(2026, 10, 8, 9, 0)),
])
def test_calling_hours(at, allowed, next_at):
    hours = CallingHours(time(9), time(20), holidays=HOLIDAYS)
    assert hours.allowed(at) is allowed
    assert hours.next_allowed(at) == next_at


def test_on_holidays_calls_on_holidays_too():
    hours = CallingHours(time(9), time(20), holidays=HOLIDAYS, on_holidays=True)
    assert hours.allowed(local(2026, 10, 3, 12, 0))


def test_a_calendar_of_nothing_but_holidays_is_an_error():
    hours = CallingHours(time(9), time(20), holidays=[date.fromordinal(date(2026, 1, 1).toordinal() + i)
                                                      for i in range(800)])
    with pytest.raises(ValueError, match="no calling day within a year"):
        hours.next_allowed(local(2026, 1, 1, 10, 0))


def test_packaged_phone_rules():
    rules = survey_policy.phone_rules()
    assert (rules.attempts, rules.retry_after.total_seconds(), rules.calling_hours, rules.on_holidays) == (
        3, 7200.0, (time(9), time(20)), False)
    assert (rules.ring_timeout_s, rules.machine_detection, rules.calls_per_second) == (30, True, 1.0)
    assert (rules.when_unreachable, rules.wrong_person, rules.do_not_call) == ("not_evaluated", "manual", "manual")
