"""Deadlines, their colours and the escalation ladder.

Deadlines are working hours on a :class:`core.deadlines.calendar.WorkingCalendar`, per category and
urgency (``CategorySla`` rows) with defaults per urgency in rules.toml ``[sla.default]``.
The ladder is rules.toml ``[escalation] ladder``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, NamedTuple, Protocol

from core.cases import catalogue
from core.cases.models import Urgency
from core.deadlines.calendar import WorkingCalendar
from core.places import indexes
from core.places.models import GRID_LEVELS, GridLevel
from core.platform.rules import load_rules
from core.platform.settings import get_settings

Colour = Literal["green", "yellow", "red"]

class SlaLike(Protocol):
    response_hours: float
    resolution_hours: float


class SlaHours(NamedTuple):
    response_hours: float
    resolution_hours: float


class Deadlines(NamedTuple):
    """When the case must be accepted, and when it must be resolved (naive UTC)."""

    response_due: datetime
    resolution_due: datetime


def compute_deadlines(sla: SlaLike, dispatched_at: datetime, calendar: WorkingCalendar) -> Deadlines:
    """Both deadlines, ``sla``'s working hours after ``dispatched_at``."""
    return Deadlines(
        calendar.add_working_hours(dispatched_at, float(sla.response_hours)),
        calendar.add_working_hours(dispatched_at, float(sla.resolution_hours)),
    )


def default_sla(urgency: Urgency | str, rules: dict[str, Any] | None = None) -> SlaHours:
    """Deadlines of an urgency when its category has no ``CategorySla`` row."""
    urgency = Urgency(urgency)
    rules = load_rules() if rules is None else rules
    entry = rules["sla"]["default"][urgency.value]
    return SlaHours(float(entry["response_hours"]), float(entry["resolution_hours"]))


def sla_for(session: Any, category_id: int | None, urgency: Urgency | str) -> SlaHours:
    """The category's SLA row for this urgency, else the default of the urgency."""
    if category_id is not None:
        hours = catalogue.sla_hours(session, category_id, urgency)
        if hours is not None:
            return SlaHours(*hours)
    return default_sla(urgency)


def invalidate_calendars() -> None:
    """Forget this process's calendars: they live in the one index cache (``core.places.indexes``)."""

    indexes.invalidate()


def calendar_for(session: Any, tz: str | None = None) -> WorkingCalendar:
    """The working calendar stored in the database, from the one index cache."""

    if tz is None:
        tz = get_settings().timezone
    return indexes.routing_indexes(session).calendar(tz)


def deadlines_for_case(
    session: Any, case: Any, at: datetime, *, calendar: WorkingCalendar | None = None, tz: str | None = None
) -> Deadlines:
    """Deadlines of ``case`` (its category and urgency) when dispatched at ``at``."""
    cal = calendar if calendar is not None else calendar_for(session, tz)
    return compute_deadlines(sla_for(session, case.category_id, case.urgency), at, cal)


def warn_fraction(rules: dict[str, Any] | None = None) -> float:
    rules = load_rules() if rules is None else rules
    return float(rules["sla"]["warn_fraction"])


def sla_colour(
    start: datetime, due: datetime, now: datetime, calendar: WorkingCalendar, *, warn_at: float | None = None
) -> Colour:
    """green; yellow once ``warn_at`` (rules: 75 %) of the working time from ``start`` to
    ``due`` has elapsed; red when breached. At the deadline itself no working time is left,
    so it is red too (``on_time`` still counts work done at that moment as on time)."""
    warn_at = warn_fraction() if warn_at is None else warn_at
    if now >= due:
        return "red"
    total = calendar.working_hours_between(start, due)
    if total <= 0:
        return "yellow"  # due now-ish with no working time in between: not breached yet
    elapsed = calendar.working_hours_between(start, now)
    # Rounded to the microsecond the calendar works in, so 75 % means 75 %, not 74.9999 %.
    if elapsed >= total:
        return "red"
    if round(elapsed / total, 9) >= warn_at:
        return "yellow"
    return "green"


def on_time(done_at: datetime, due: datetime | None) -> bool:
    """Done no later than the deadline; with no deadline nothing can be late."""
    return due is None or done_at <= due


def escalation_ladder(rules: dict[str, Any] | None = None) -> tuple[GridLevel, ...]:
    rules = load_rules() if rules is None else rules
    return tuple(GridLevel(n) for n in rules["escalation"]["ladder"])


def next_owner_level(level: GridLevel | str, rules: dict[str, Any] | None = None) -> GridLevel | None:
    """The level above ``level`` on the ladder; ``None`` at the top. A level missing from
    the ladder (a district that skips 片区) climbs to the next ladder level above it."""
    level = GridLevel(level)
    ladder = escalation_ladder(rules)
    if level in ladder:
        i = ladder.index(level)
        return ladder[i + 1] if i + 1 < len(ladder) else None
    rank = GRID_LEVELS.index(level)
    higher = [lv for lv in ladder if GRID_LEVELS.index(lv) > rank]
    return higher[0] if higher else None
