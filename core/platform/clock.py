"""The one place that reads the wall clock, so tests can pin time."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from core.platform.settings import get_settings

_frozen: datetime | None = None


def utcnow() -> datetime:
    """Naive UTC, the form every timestamp column stores."""
    if _frozen is not None:
        return _frozen
    return datetime.now(UTC).replace(tzinfo=None)


def freeze(at: datetime | None) -> None:
    """Pin ``utcnow`` (tests, simulations); ``None`` lets time run again."""
    global _frozen
    _frozen = at.replace(tzinfo=None) if at is not None and at.tzinfo is None else (
        at.astimezone(UTC).replace(tzinfo=None) if at is not None else None
    )


# ---- local time: stored times are naive UTC; people read the district's clock, labelled ----


@lru_cache(maxsize=16)
def _zone_named(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def zone(name: str | None = None) -> ZoneInfo:
    """The district's time zone (``GRIDLINE_TIMEZONE``), or the one named."""
    return _zone_named(name or get_settings().timezone)


def to_local(value: datetime | None, tz: str | None = None) -> datetime | None:
    """A stored time (naive UTC, or aware) as an aware datetime on the district's clock."""
    if value is None:
        return None
    aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value
    return aware.astimezone(zone(tz))


def local_date(value: datetime | None = None, tz: str | None = None) -> date:
    """The district's calendar day of a stored time (now by default): folders, numbers, reports."""
    local = to_local(value if value is not None else utcnow(), tz)
    assert local is not None
    return local.date()


def zone_label(tz: str | None = None, at: datetime | None = None) -> str:
    """``UTC+8`` (``UTC+5:30``, ``UTC-3``): the offset people read, at the given time (DST-aware)."""
    local = to_local(at if at is not None else utcnow(), tz)
    assert local is not None
    offset = local.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    hours, rest = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours}" + (f":{rest:02d}" if rest else "")


def local_text(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M", tz: str | None = None,
               *, label: bool = True) -> str:
    """A stored time as the district reads it, with its zone unless a heading already names it."""
    local = to_local(value, tz)
    if local is None:
        return ""
    text = local.strftime(fmt)
    return f"{text} {zone_label(tz, value)}" if label else text
