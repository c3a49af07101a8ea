"""Jinja filters: local times, status names, SLA colours."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

import jinja2

from core.cases.texts import status_name
from core.platform.settings import get_settings


@lru_cache
def _zone() -> ZoneInfo:
    return ZoneInfo(get_settings().timezone)


def local(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """Stored times are naive UTC; people read the district's local time."""
    if value is None:
        return ""
    return value.replace(tzinfo=UTC).astimezone(_zone()).strftime(fmt)


def status_label(value: object, language: str = "zh") -> str:
    if value is None:
        return ""
    try:
        return status_name(getattr(value, "value", value), language)
    except KeyError:
        return str(getattr(value, "value", value))


def enum_value(value: object) -> str:
    return "" if value is None else str(getattr(value, "value", value))


def install(env: jinja2.Environment) -> None:
    env.filters["local"] = local
    env.filters["status_label"] = status_label
    env.filters["v"] = enum_value
