"""The one place that reads the wall clock, so tests can pin time."""

from __future__ import annotations

from datetime import UTC, datetime

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
