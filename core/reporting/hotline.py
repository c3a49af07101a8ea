"""The hotline's own service figures, as GB/T 33358-2016 (政府热线服务规范) asks for them: per
local hour, day and month, the calls offered, answered within 15 s, the connection rate, the
calls that ended before a case (and how many of those still became cases from their audio),
transfers to a person answered and not, and the average handling time.

Read from ``CallSession`` (inbound calls only; the survey's outbound calls are not offered
calls), by each call's arrival. What each figure means, precisely:

* **offered** (呼入量): an inbound call whose first ``/twilio/voice`` webhook reached us. Its
  arrival (``started_at``) is that moment. Calls turned away before a row was written (the
  database unreachable, every instance refusing at capacity) are not seen here: Twilio's own
  call log has them.
* **answered** (接通): the greeting, the call's first prompt, was handed to Twilio in the answer
  to that webhook (``answered_at``; Twilio starts speaking it as it reads it). The **wait** is
  ``answered_at - started_at``: our side of the time to the first prompt. The caller's network
  and Twilio's add to it and are not measured.
* **answered within 15 s** (15秒内接听): answered, with a wait of at most
  ``[reports.hotline] answer_within_seconds``. Its rate is over the calls offered.
* **connection rate** (接通率): answered / offered; the target is ``[reports.hotline]
  connection_rate`` (95 %) over any 24 hours, so the daily rows are what meet it or not.
* **ended before a case** (未建单即结束): the caller hung up or the line dropped before the flow
  filed a case (outcomes ``hung_up``, ``no_petition``, ``hung_up_case``, ``recovered_case``); of
  those, **became cases from their audio** (挂断后仍据录音建单): ``hung_up_case`` (the caller hung
  up after saying enough) and ``recovered_case`` (filed by the recovery sweep after a crash).
  Status queries and calls handed to a person are neither.
* **transfers to a person** (转人工): the call reached the ``<Dial>`` (``transferred_at``);
  **answered** when Twilio's ``DialCallStatus`` said ``completed`` or ``answered``, not answered
  otherwise (busy, no answer, failed, cancelled, or never reported).
* **average handling time** (平均通话时长): Twilio's ``CallDuration`` from the status callback
  when it came, else the seconds from arrival to the call's end; calls still going are not
  counted.

The counting is one grouped query per period, by UTC hour; the hours are folded into local
hours, days and months of the district (``GRIDLINE_TIMEZONE``) here, so a zone with daylight
saving is right too (a zone whose offset is not whole hours is not: none in China is).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, select

from core.cases.models import CallSession
from core.platform.rules import load_rules

GRAINS = ("hour", "day", "month")
# CallSession.outcome codes (written by the hotline, ivr/state.py and ivr/calls.py).
ENDED_BEFORE_CASE = ("hung_up", "no_petition", "hung_up_case", "recovered_case")
FILED_FROM_AUDIO = ("hung_up_case", "recovered_case")
# Twilio's DialCallStatus when the person answered.
TRANSFER_ANSWERED = ("completed", "answered")
FIGURE_NAMES = ("offered", "answered", "answered_in_time", "connection_rate", "in_time_rate",
                "ended_before_case", "filed_from_audio", "transfers", "transfers_answered",
                "transfers_not_answered", "average_wait_s", "longest_wait_s", "average_handling_s")


@dataclass(frozen=True)
class Targets:
    """The standard's targets, from ``[reports.hotline]``."""

    answer_within_s: float
    connection_rate: float


def targets() -> Targets:
    rules = load_rules()["reports"]["hotline"]
    return Targets(float(rules["answer_within_seconds"]), float(rules["connection_rate"]))


@dataclass
class CallFigures:
    """The figures of one bucket (a local hour, day or month) or of a whole period."""

    key: str  # "2026-11-03 14:00", "2026-11-03", "2026-11", or "*" for a period
    offered: int = 0
    answered: int = 0
    answered_in_time: int = 0
    ended_before_case: int = 0
    filed_from_audio: int = 0
    transfers: int = 0
    transfers_answered: int = 0
    waits: int = 0  # answered calls with a wait (every answered call)
    wait_s: float = 0.0
    longest_wait_s: float | None = None
    handled: int = 0  # calls with a handling time
    handling_s: float = 0.0

    @staticmethod
    def _ratio(a: float, b: float) -> float | None:
        return round(a / b, 4) if b else None

    @property
    def connection_rate(self) -> float | None:
        return self._ratio(self.answered, self.offered)

    @property
    def in_time_rate(self) -> float | None:
        return self._ratio(self.answered_in_time, self.offered)

    @property
    def transfers_not_answered(self) -> int:
        return self.transfers - self.transfers_answered

    @property
    def average_wait_s(self) -> float | None:
        return round(self.wait_s / self.waits, 2) if self.waits else None

    @property
    def average_handling_s(self) -> float | None:
        return round(self.handling_s / self.handled, 1) if self.handled else None

    def meets_connection(self, t: Targets) -> bool | None:
        """At or above the connection-rate target; None with no call offered."""
        rate = self.connection_rate
        return None if rate is None else rate >= t.connection_rate

    def meets_wait(self, t: Targets) -> bool | None:
        """Every call answered was answered within the target (the standard asks it of each
        call; calls never answered count against the connection rate); None with none answered."""
        return None if not self.answered else self.answered_in_time == self.answered

    def figure(self, name: str) -> float | int | None:
        return getattr(self, name)

    def add(self, other: CallFigures) -> None:
        self.offered += other.offered
        self.answered += other.answered
        self.answered_in_time += other.answered_in_time
        self.ended_before_case += other.ended_before_case
        self.filed_from_audio += other.filed_from_audio
        self.transfers += other.transfers
        self.transfers_answered += other.transfers_answered
        self.waits += other.waits
        self.wait_s += other.wait_s
        if other.longest_wait_s is not None:
            self.longest_wait_s = max(self.longest_wait_s or 0.0, other.longest_wait_s)
        self.handled += other.handled
        self.handling_s += other.handling_s


@dataclass
class HotlineFigures:
    """A period's figures: the whole period and its local hours, days and months (buckets
    with calls only, in order)."""

    start: datetime  # naive UTC, as stored
    end: datetime
    tz: str
    targets: Targets
    total: CallFigures
    by: dict[str, list[CallFigures]] = field(default_factory=dict)

    @property
    def hours(self) -> list[CallFigures]:
        return self.by.get("hour", [])

    @property
    def days(self) -> list[CallFigures]:
        return self.by.get("day", [])

    @property
    def months(self) -> list[CallFigures]:
        return self.by.get("month", [])


def _seconds_between(session: Session, earlier: ColumnElement, later: ColumnElement) -> ColumnElement:
    if session.get_bind().dialect.name == "sqlite":
        # Julian days carry about 50 µs of rounding at today's dates: to the millisecond, so
        # 15.000 s is 15 s and not a hair more.
        return func.round((func.julianday(later) - func.julianday(earlier)) * 86400.0, 3)
    return func.extract("epoch", later - earlier)


def _utc_hour(session: Session, column: ColumnElement) -> ColumnElement:
    """The UTC hour a stored time falls in, as text both databases write alike: 2026-11-03 06."""
    if session.get_bind().dialect.name == "sqlite":
        return func.strftime("%Y-%m-%d %H", column)
    return func.to_char(func.date_trunc("hour", column), "YYYY-MM-DD HH24")


def _bucket_key(local: datetime, grain: str) -> str:
    if grain == "hour":
        return f"{local:%Y-%m-%d %H}:00"
    if grain == "day":
        return f"{local:%Y-%m-%d}"
    return f"{local:%Y-%m}"


def hotline_figures(session: Session, start: datetime, end: datetime, tz: str, *,
                    grains: tuple[str, ...] = GRAINS, limits: Targets | None = None) -> HotlineFigures:
    """The service figures of the inbound calls that arrived in [start, end) (naive UTC), for
    the period and per local hour, day and month of ``tz``."""
    limits = limits or targets()
    c = CallSession
    wait = _seconds_between(session, c.started_at, c.answered_at)
    handling = func.coalesce(c.duration_s, _seconds_between(session, c.started_at, c.ended_at))
    hour = _utc_hour(session, c.started_at).label("hour")
    stmt = (
        select(
            hour,
            func.count(),
            func.count(c.answered_at),
            func.count().filter(c.answered_at.is_not(None), wait <= limits.answer_within_s),
            func.count().filter(c.outcome.in_(ENDED_BEFORE_CASE)),
            func.count().filter(c.outcome.in_(FILED_FROM_AUDIO)),
            func.count(c.transferred_at),
            func.count().filter(c.transferred_at.is_not(None), c.transfer_status.in_(TRANSFER_ANSWERED)),
            func.sum(wait),
            func.max(wait),
            func.count(handling),
            func.sum(handling),
        )
        .where(c.direction == "inbound", c.started_at >= start, c.started_at < end)
        .group_by(hour)
    )
    zone = ZoneInfo(tz)
    total = CallFigures("*")
    buckets: dict[str, dict[str, CallFigures]] = {grain: {} for grain in grains}
    for row in session.connection().execute(stmt).all():
        (utc_hour, offered, answered, in_time, ended_early, from_audio, transfers, transfers_answered,
         wait_sum, wait_max, handled, handling_sum) = row
        figures = CallFigures(
            "", int(offered), int(answered), int(in_time), int(ended_early), int(from_audio), int(transfers),
            int(transfers_answered), int(answered), float(wait_sum or 0.0),
            None if wait_max is None else max(0.0, float(wait_max)), int(handled), float(handling_sum or 0.0))
        local = datetime.strptime(utc_hour, "%Y-%m-%d %H").replace(tzinfo=UTC).astimezone(zone)
        total.add(figures)
        for grain in grains:
            key = _bucket_key(local, grain)
            buckets[grain].setdefault(key, CallFigures(key)).add(figures)
    return HotlineFigures(start, end, tz, limits, total,
                          {grain: [found[k] for k in sorted(found)] for grain, found in buckets.items()})


def local_key(at: datetime, tz: str, grain: str) -> str:
    """The key of the local hour, day or month a stored (naive UTC) time falls in."""
    return _bucket_key(at.replace(tzinfo=UTC).astimezone(ZoneInfo(tz)), grain)


def local_bounds(first: date, end: date, tz: str) -> tuple[datetime, datetime]:
    """[first, end) local days as naive UTC, the way times are stored."""
    zone = ZoneInfo(tz)

    def midnight(day: date) -> datetime:
        return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC).replace(tzinfo=None)

    return midnight(first), midnight(end)


def current_periods(now: datetime, tz: str) -> dict[str, tuple[datetime, datetime]]:
    """The local hour, day and month ``now`` (naive UTC) is in, each as [start, end) naive UTC:
    what ``/metrics`` shows."""
    zone = ZoneInfo(tz)
    local = now.replace(tzinfo=UTC).astimezone(zone)

    def utc(at: datetime) -> datetime:
        return at.astimezone(UTC).replace(tzinfo=None)

    hour = local.replace(minute=0, second=0, microsecond=0)
    day = local.date()
    month = day.replace(day=1)
    next_month = (month + timedelta(days=32)).replace(day=1)
    return {
        "hour": (utc(hour), utc(hour + timedelta(hours=1))),
        "day": local_bounds(day, day + timedelta(days=1), tz),
        "month": local_bounds(month, next_month, tz),
    }
