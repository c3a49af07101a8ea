"""Working calendar: working hours, public holidays and make-up working days (调休上班).

Every public method takes and returns naive UTC datetimes (what the database stores); the
arithmetic happens in the district's local time. Deadlines are computed for every case and
every SLA sweep, so the calendar keeps a table of cumulative working time at the start of
each local day: converting a moment to "working microseconds since the table's origin" is
O(1), and the inverse is one bisection. No loop steps through days or minutes.
"""

from __future__ import annotations

import tomllib
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlmodel import select

from core.deadlines.models import CalendarDay
from core.platform.rules import load_rules

DEFAULT_TZ = "Asia/Shanghai"
DATA_DIR = Path(__file__).resolve().parent.parent / "data"

_US_PER_HOUR = 3_600_000_000
_US_PER_DAY = 86_400_000_000
# Margin of days kept around the dates a calendar has been asked about, so that typical
# deadlines (days to weeks ahead) never trigger a rebuild of the table.
_MARGIN_DAYS = 400


def _us_of_day(t: time) -> int:
    return ((t.hour * 60 + t.minute) * 60 + t.second) * 1_000_000 + t.microsecond


def parse_hours(spec: Iterable[Iterable[str | time]]) -> list[tuple[time, time]]:
    """``[["08:30", "12:00"], ["13:30", "17:30"]]`` (as in rules.toml) → time pairs."""
    out: list[tuple[time, time]] = []
    for pair in spec:
        start, end = (p if isinstance(p, time) else time.fromisoformat(str(p)) for p in pair)
        out.append((start, end))
    return out


def default_working_hours() -> list[tuple[time, time]]:
    """Working hours from ``[sla.calendar] working_hours`` in rules.toml."""

    spec = load_rules()["sla"]["calendar"]["working_hours"]
    return parse_hours(spec)


def load_calendar_file(path: str | Path) -> list[CalendarDay]:
    """Rows of a calendar TOML (``days = [{date, working, note}, …]``) as ``CalendarDay`` objects."""
    data = tomllib.loads(Path(path).read_text("utf-8"))
    rows: list[CalendarDay] = []
    for item in data.get("days", []):
        day = item["date"]
        if isinstance(day, str):
            day = date.fromisoformat(day)
        if isinstance(day, datetime) or not isinstance(day, date):
            raise ValueError(f"{path}: {item!r} needs a plain date like 2026-10-01")
        rows.append(CalendarDay(day=day, is_working=bool(item["working"]), note=str(item.get("note", ""))))
    seen: set[date] = set()
    for row in rows:
        if row.day in seen:
            raise ValueError(f"{path}: {row.day} is listed twice")
        seen.add(row.day)
    return rows


def bundled_calendar_files() -> list[Path]:
    """The calendars shipped in ``core/data`` (``calendar_YYYY.toml``)."""
    return sorted(DATA_DIR.glob("calendar_*.toml"))


def sync_calendar_days(session: Any, rows: Iterable[CalendarDay]) -> int:
    """Insert or update ``CalendarDay`` rows (the file wins); returns how many were written."""
    n = 0
    for row in rows:
        existing = session.get(CalendarDay, row.day)
        if existing is None:
            session.add(CalendarDay(day=row.day, is_working=row.is_working, note=row.note))
        else:
            existing.is_working = row.is_working
            existing.note = row.note
        n += 1
    session.flush()  # the flush bumps the routing indexes' version (core.places.indexes)
    return n


class WorkingCalendar:
    """Monday–Friday working days with ``hours`` each, corrected by ``exceptions``
    (``True``: a make-up working day; ``False``: a holiday)."""

    def __init__(
        self,
        exceptions: Mapping[date, bool] | None = None,
        hours: Iterable[tuple[time, time]] | None = None,
        tz: str = DEFAULT_TZ,
    ) -> None:
        self.exceptions: dict[date, bool] = dict(exceptions or {})
        self.hours: list[tuple[time, time]] = list(default_working_hours() if hours is None else hours)
        self.tz = ZoneInfo(tz)
        periods = sorted((_us_of_day(a), _us_of_day(b)) for a, b in self.hours)
        if not periods:
            raise ValueError("a working calendar needs at least one working period")
        for (a, b), nxt in zip(periods, periods[1:] + [(_US_PER_DAY, _US_PER_DAY)], strict=True):
            if not 0 <= a < b <= nxt[0]:
                raise ValueError(f"working periods must be non-empty and must not overlap: {self.hours}")
        self._periods = periods
        self._day_us = sum(b - a for a, b in periods)
        self._exc = {d.toordinal(): w for d, w in self.exceptions.items()}
        # The table: _cum[i] is the working time (µs) before local day _lo + i.
        self._lo = 0
        self._cum: list[int] = [0]
        self._built = False
        if self._exc:
            first, last = min(self._exc), max(self._exc)
        else:
            first = last = datetime.now(UTC).date().toordinal()
        self._build(first - _MARGIN_DAYS, last + _MARGIN_DAYS)

    # -- construction -------------------------------------------------------------------

    @classmethod
    def from_rows(
        cls, rows: Iterable[Any], *, hours: Iterable[tuple[time, time]] | None = None, tz: str = DEFAULT_TZ
    ) -> WorkingCalendar:
        """From ``CalendarDay``-like rows (``day``, ``is_working``)."""
        return cls({r.day: bool(r.is_working) for r in rows}, hours=hours, tz=tz)

    @classmethod
    def load(
        cls, session: Any, tz: str = DEFAULT_TZ, hours: Iterable[tuple[time, time]] | None = None
    ) -> WorkingCalendar:
        """The calendar stored in ``CalendarDay``; hours default to rules.toml."""
        rows = session.exec(select(CalendarDay)).all()
        return cls.from_rows(rows, hours=default_working_hours() if hours is None else hours, tz=tz)

    @classmethod
    def from_files(
        cls, paths: Iterable[str | Path] | None = None, *, hours: Iterable[tuple[time, time]] | None = None,
        tz: str = DEFAULT_TZ,
    ) -> WorkingCalendar:
        """From calendar TOML files (default: the bundled ones), without a database."""
        rows: list[CalendarDay] = []
        for p in bundled_calendar_files() if paths is None else paths:
            rows.extend(load_calendar_file(p))
        return cls.from_rows(rows, hours=hours, tz=tz)

    # -- the table ----------------------------------------------------------------------

    def is_working_day(self, day: date) -> bool:
        o = day.toordinal()
        w = self._exc.get(o)
        return w if w is not None else (o - 1) % 7 < 5  # ordinal 1 (0001-01-01) is a Monday

    def _build(self, lo: int, hi: int) -> None:
        """Cover local days ``lo..hi`` (ordinals), inclusive."""
        lo = max(1, min(lo, self._lo) if self._built else lo)
        hi = min(hi, date.max.toordinal() - 1)
        cum = [0] * (hi - lo + 2)
        acc = 0
        exc, day_us = self._exc, self._day_us
        for i, o in enumerate(range(lo, hi + 1)):
            cum[i] = acc
            w = exc.get(o)
            if w if w is not None else (o - 1) % 7 < 5:
                acc += day_us
        cum[-1] = acc
        if self._built:
            # Keep positions stable across a rebuild (a caller may hold one from before):
            # the new table must agree with the old one on the old first day.
            shift = self._cum[0] - cum[self._lo - lo]
            cum = [c + shift for c in cum]
        self._lo, self._cum, self._built = lo, cum, True

    def _ensure(self, o: int) -> None:
        """Make sure local day ``o`` and the day after it are in the table."""
        hi = self._lo + len(self._cum) - 2
        if self._lo <= o and o + 1 <= hi:
            return
        self._build(min(self._lo, o - _MARGIN_DAYS), max(hi, o + 1 + _MARGIN_DAYS))

    def _to_local(self, dt: datetime) -> datetime:
        if dt.tzinfo is not None:
            return dt.astimezone(self.tz).replace(tzinfo=None)
        return dt.replace(tzinfo=UTC).astimezone(self.tz).replace(tzinfo=None)

    def _to_utc(self, local: datetime) -> datetime:
        return local.replace(tzinfo=self.tz).astimezone(UTC).replace(tzinfo=None)

    def _in_day(self, x: int) -> int:
        """Working µs of a working day before time-of-day ``x`` (µs)."""
        acc = 0
        for a, b in self._periods:
            if x <= a:
                break
            acc += (x if x < b else b) - a
        return acc

    def _clock_of(self, off: int) -> int:
        """Time of day (µs) at which ``off`` (0 < off ≤ day total) working µs have passed."""
        for a, b in self._periods:
            n = b - a
            if off <= n:
                return a + off
            off -= n
        return self._periods[-1][1]

    def _position(self, local: datetime) -> int:
        """Working µs elapsed from the table origin to ``local``."""
        o = local.toordinal()
        self._ensure(o)
        i = o - self._lo
        base = self._cum[i]
        if self._cum[i + 1] == base:  # not a working day
            return base
        x = (local.hour * 3600 + local.minute * 60 + local.second) * 1_000_000 + local.microsecond
        return base + self._in_day(x)

    def _moment(self, pos: int) -> datetime:
        """The earliest local moment at which ``pos`` working µs have elapsed (pos > table start)."""
        cum = self._cum
        while pos > cum[-1]:
            need_days = (pos - cum[-1]) // self._day_us * 7 // 5 + 14
            hi = self._lo + len(cum) - 2
            self._build(self._lo, hi + need_days)
            cum = self._cum
        j = bisect_left(cum, pos)
        # cum[j-1] < pos <= cum[j]: day j-1 is a working day that holds the moment.
        o = self._lo + j - 1
        x = self._clock_of(pos - cum[j - 1])
        return datetime.fromordinal(o) + timedelta(microseconds=x)

    # -- public arithmetic --------------------------------------------------------------

    def is_working_time(self, dt: datetime) -> bool:
        local = self._to_local(dt)
        if not self.is_working_day(local.date()):
            return False
        x = _us_of_day(local.time())
        return any(a <= x < b for a, b in self._periods)

    def next_working_moment(self, dt: datetime) -> datetime:
        """``dt`` itself during working time, else the start of the next working period."""
        local = self._to_local(dt)
        o = local.toordinal()
        self._ensure(o)
        if self.is_working_day(local.date()):
            x = _us_of_day(local.time())
            for a, b in self._periods:
                if x < b:
                    if x >= a:
                        return self._to_utc(local) if dt.tzinfo else dt
                    return self._to_utc(datetime.fromordinal(o) + timedelta(microseconds=a))
        # The next working day k > o is the last day whose start has the same cumulative value as o+1.
        i = o - self._lo + 1
        k = bisect_right(self._cum, self._cum[i]) - 1
        while k >= len(self._cum) - 1:  # ran off the table (a very long run of days off)
            self._build(self._lo, self._lo + len(self._cum) + _MARGIN_DAYS)
            k = bisect_right(self._cum, self._cum[i]) - 1
        return self._to_utc(datetime.fromordinal(self._lo + k) + timedelta(microseconds=self._periods[0][0]))

    def add_working_hours(self, start: datetime, hours: float) -> datetime:
        """The moment ``hours`` working hours after ``start`` (counting from the next working
        moment if ``start`` is outside working time). A result that falls exactly on the end of
        a period is that end (12:00, 17:30), not the start of the next one."""
        if hours < 0:
            raise ValueError("hours must not be negative")
        if hours == 0:
            return self.next_working_moment(start)
        us = round(hours * _US_PER_HOUR)
        if us == 0:
            return self.next_working_moment(start)
        return self._to_utc(self._moment(self._position(self._to_local(start)) + us))

    def working_hours_between(self, a: datetime, b: datetime) -> float:
        """Working hours from ``a`` to ``b`` (negative if ``b`` is before ``a``)."""
        pa = self._position(self._to_local(a))
        pb = self._position(self._to_local(b))
        return (pb - pa) / _US_PER_HOUR

    def add_working_days(self, start: datetime, days: int) -> datetime:
        """End of the ``days``-th working day after the local day of ``start`` (the start day
        itself does not count, FixMyStreet-style). ``days == 0``: the end of the start day if it
        is a working day, else of the next working day."""
        if days < 0:
            raise ValueError("days must not be negative")
        o = self._to_local(start).toordinal()
        self._ensure(o)
        i = o - self._lo
        cum = self._cum
        if days == 0:
            # The start day's end if it is worked, else the end of the next working day.
            target = cum[i + 1] if cum[i + 1] > cum[i] else cum[i] + self._day_us
        else:
            # Working days before day o+1, plus ``days`` of them, ends at this cumulative value.
            target = cum[i + 1] + days * self._day_us
        # The day at whose end ``target`` is reached: cum[j] == target with day j-1 working.
        return self._to_utc(self._moment(target))

    def working_days_between(self, a: datetime, b: datetime) -> int:
        """Whole working days strictly after ``a``'s local day up to and including ``b``'s."""
        oa, ob = self._to_local(a).toordinal(), self._to_local(b).toordinal()
        self._ensure(oa)
        self._ensure(ob)
        return (self._cum[ob - self._lo + 1] - self._cum[oa - self._lo + 1]) // self._day_us

    @property
    def working_day_hours(self) -> float:
        """Working hours in one working day (7.5 with the default hours)."""
        return self._day_us / _US_PER_HOUR
