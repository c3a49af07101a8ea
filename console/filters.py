"""Jinja filters: local times, status names, SLA colours."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

import jinja2

from console.i18n import CONSOLE
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


def actor_label(actor: str | None, language: str = "zh") -> str:
    """Who wrote an event, in words: ``system`` 系统, ``console:zhang`` 控制台 · zhang,
    ``console:sup for W-M2`` 控制台 · sup · 代 W-M2. The parts that are names or codes of
    people (an account, a worker's code) are shown as they are."""
    if not actor:
        return ""
    head, _, behalf = actor.partition(" for ")
    words = [CONSOLE.t(language, f"actors.{part}") if CONSOLE.has(language, f"actors.{part}") else part
             for part in head.split(":") if part]
    if behalf:
        words.append(CONSOLE.t(language, "actors.for", who=behalf))
    return " · ".join(words)


def enum_value(value: object) -> str:
    return "" if value is None else str(getattr(value, "value", value))


def install(env: jinja2.Environment) -> None:
    env.filters["local"] = local
    env.filters["status_label"] = status_label
    env.filters["v"] = enum_value
    env.filters["actor"] = actor_label
