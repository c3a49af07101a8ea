"""Jinja filters: local times, status names, SLA colours."""

from __future__ import annotations

from datetime import datetime

import jinja2
from markupsafe import Markup

from console.i18n import CONSOLE
from core.cases.texts import status_name
from core.platform.clock import local_text, to_local, zone_label


def local(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """Stored times are naive UTC; people read the district's local time. A time of day is
    a ``<time>`` that carries the instant and names its zone (the page's header names it too)."""
    if value is None:
        return ""
    text = local_text(value, fmt, label=False)
    if "%H" not in fmt:
        return text  # a date: also used inside sentences
    moment = to_local(value)
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        moment.isoformat(timespec="seconds"), zone_label(None, value), text)


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
