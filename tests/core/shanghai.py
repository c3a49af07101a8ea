"""Shanghai wall-clock helpers for calendar and deadline tests (the database keeps UTC)."""

from __future__ import annotations

from datetime import datetime, timedelta

SHANGHAI = timedelta(hours=8)


def utc(y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> datetime:
    """Naive UTC for a Shanghai wall-clock time (tests read in local time)."""
    return datetime(y, m, d, hh, mm) - SHANGHAI


def local(dt: datetime) -> datetime:
    return dt + SHANGHAI
