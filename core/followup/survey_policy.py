"""The follow-up survey's answer scales and what an answer does to the case, and the
phone follow-up's attempts and calling hours, read from rules.toml ``[survey]`` so a
district can change them without touching code."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from core.deadlines.sla import calendar_for
from core.platform.rules import load_rules
from core.platform.settings import get_settings


def _survey() -> dict:
    return load_rules()["survey"]


def solved_scale() -> tuple[str, ...]:
    """"Is it solved?" answers, in the order they are offered (keypad 1, 2, 3 …)."""
    return tuple(_survey()["solved_scale"])


def satisfied_scale() -> tuple[str, ...]:
    """"Are you satisfied?" answers, in the order they are offered."""
    return tuple(_survey()["satisfied_scale"])


def closes_case(solved: str, satisfied: str) -> bool:
    """Whether this answer closes the case; any other answer reopens it."""
    rules = _survey()
    return solved in rules["closes_when_solved"] and satisfied in rules["closes_when_satisfied"]


def reopenings_before_escalation() -> int:
    """Dissatisfaction reopens the case this many times; after that it also climbs a level."""
    return int(_survey()["reopen_without_escalation"])


# -- the phone follow-up (rules.toml [survey.phone]) ----------------------------------------

# What becomes of a survey the phone cannot finish: the operator's manual-call list, or
# closed as not evaluated (未评价).
FOLLOW_UPS = ("manual", "not_evaluated")


@dataclass(frozen=True)
class PhoneRules:
    attempts: int  # calls placed at most
    retry_after: timedelta  # after a busy, unanswered, failed or machine-answered call
    calling_hours: tuple[time, time]  # local time, every day
    on_holidays: bool  # public holidays of the working calendar (CalendarDay, not working)
    ring_timeout_s: int  # how long it rings before it counts as not answered
    machine_detection: bool  # Twilio's answering-machine detection; a machine = not answered
    calls_per_second: float  # calls placed per second, across every process
    when_unreachable: str  # after the last attempt: manual / not_evaluated
    wrong_person: str  # "不是本人/打错了" (9): manual / not_evaluated
    do_not_call: str  # a resident marked do-not-call: manual / not_evaluated


def phone_rules() -> PhoneRules:
    phone = _survey()["phone"]
    start, end = (time.fromisoformat(t) for t in phone["calling_hours"])
    return PhoneRules(
        attempts=int(phone["attempts"]),
        retry_after=timedelta(minutes=float(phone["retry_after_minutes"])),
        calling_hours=(start, end),
        on_holidays=bool(phone["on_holidays"]),
        ring_timeout_s=int(phone["ring_timeout_seconds"]),
        machine_detection=bool(phone["answering_machine_detection"]),
        calls_per_second=float(phone["calls_per_second"]),
        when_unreachable=str(phone["when_unreachable"]),
        wrong_person=str(phone["wrong_person"]),
        do_not_call=str(phone["do_not_call"]),
    )


class CallingHours:
    """When a resident may be phoned: the calling hours of every local day, except the
    public holidays of the working calendar unless ``on_holidays``. Weekends are calling
    days (a follow-up is not office work). Takes and returns naive UTC, like the columns."""

    def __init__(self, start: time, end: time, *, holidays: Iterable[date] = (), on_holidays: bool = False,
                 tz: str = "Asia/Shanghai"):
        if not start < end:
            raise ValueError(f"calling hours: {start} is not before {end}")
        self.start, self.end = start, end
        self.holidays = frozenset(() if on_holidays else holidays)
        self.tz = ZoneInfo(tz)

    def _local(self, at: datetime) -> datetime:
        return at.replace(tzinfo=UTC).astimezone(self.tz).replace(tzinfo=None)

    def _utc(self, local: datetime) -> datetime:
        return local.replace(tzinfo=self.tz).astimezone(UTC).replace(tzinfo=None)

    def allowed(self, at: datetime) -> bool:
        local = self._local(at)
        return local.date() not in self.holidays and self.start <= local.time() < self.end

    def next_allowed(self, at: datetime) -> datetime:
        """``at`` itself when calls are allowed then, else the start of the next calling hours."""
        if self.allowed(at):
            return at
        local = self._local(at)
        day = local.date() if local.time() < self.start else local.date() + timedelta(days=1)
        for _ in range(366 + 31):  # a year of holidays would be a mistake in the calendar
            if day not in self.holidays:
                return self._utc(datetime.combine(day, self.start))
            day += timedelta(days=1)
        raise ValueError("no calling day within a year: check the calendar's holidays")


def calling_hours(session: Any, tz: str | None = None) -> CallingHours:
    """The calling hours with the holidays of the working calendar stored in the database."""

    if tz is None:
        tz = get_settings().timezone
    rules = phone_rules()
    holidays = [day for day, working in calendar_for(session, tz).exceptions.items() if not working]
    return CallingHours(*rules.calling_hours, holidays=holidays, on_holidays=rules.on_holidays, tz=tz)
