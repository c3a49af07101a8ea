"""Rules as data: ``core/data/rules.toml`` (deadlines, escalation, intake and survey policy,
periodic work) and ``core/data/categories.toml``.

A deployment changes its rules without editing the package: ``GRIDLINE_RULES`` names a TOML
file that is merged over the packaged rules key by key (a table in the file replaces only
the keys it names). The merged rules are checked when they are loaded; a bad file raises
:class:`RulesError` with one line that names the key and what is wrong with it. Rules are
loaded once per process (``reload_rules`` forgets them, for tests).
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Callable
from datetime import time
from functools import lru_cache
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parent / "data"
RULES_ENV = "GRIDLINE_RULES"

# Used where rules.toml says nothing; rules.toml wins key by key.
DEFAULTS: dict[str, Any] = {
    "intake": {
        # A route this sure (and a known category) dispatches without an operator.
        "auto_dispatch_min_confidence": 0.8,
        # Transcripts below this mean confidence are flagged for operator review.
        "low_confidence": 0.6,
    },
    "dispatch": {
        # Who in a grid takes a dispatched case, first to last.
        "role_order": ["grid_worker", "grid_leader", "micro_leader"],
    },
    "survey": {
        "solved_scale": ["solved", "partly", "not"],
        "satisfied_scale": ["satisfied", "basically", "not"],
        "closes_when_solved": ["solved", "partly"],
        "closes_when_satisfied": ["satisfied", "basically"],
        # Dissatisfaction reopens the case this many times; after that it also escalates.
        "reopen_without_escalation": 1,
    },
    "notify": {
        # Status changes a resident hears about on their channel.
        "statuses": ["dispatched", "accepted", "reported_done", "verified", "closed", "reopened", "merged"],
    },
    "sweeps": {
        "sla_period_minutes": 5,
        "schedule_check_seconds": 60,
    },
    "indexes": {
        "check_seconds": 1.0,
    },
    "instances": {
        "heartbeat_seconds": 5,
        "lease_seconds": 20,
    },
}


class RulesError(ValueError):
    """A rules file that cannot be used; the message is one line naming the key."""


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _read_toml(file: Path, label: str) -> dict[str, Any]:
    try:
        return tomllib.loads(file.read_text("utf-8"))
    except FileNotFoundError:
        raise RulesError(f"{label}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(f"{label}: cannot read it ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{label}: not valid TOML: {exc}") from None


# -- checks --------------------------------------------------------------------------------


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def _check_shape(packaged: Any, given: Any, where: str) -> None:
    """``given`` (from the override file) has the keys and types of ``packaged``."""
    if isinstance(packaged, dict):
        if not isinstance(given, dict):
            raise RulesError(f"{where}: must be a table, not {_kind(given)}")
        for key, value in given.items():
            path = f"{where}.{key}" if where else key
            if key not in packaged:
                close = difflib.get_close_matches(key, list(packaged), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(sorted(packaged))})"
                raise RulesError(f"{path}: unknown key{hint}")
            _check_shape(packaged[key], value, path)
        return
    if _kind(packaged) != _kind(given):
        raise RulesError(f"{where}: must be {_kind(packaged)}, not {_kind(given)} ({given!r})")
    if isinstance(packaged, list) and packaged:
        element = packaged[0]
        for i, item in enumerate(given):
            if _kind(item) != _kind(element):
                raise RulesError(f"{where}[{i}]: must be {_kind(element)}, not {_kind(item)} ({item!r})")


def _one_of(values: list, allowed: list[str], where: str, what: str) -> None:
    for i, value in enumerate(values):
        if value not in allowed:
            raise RulesError(f"{where}[{i}]: unknown {what} {value!r} (one of {', '.join(allowed)})")


def _fraction(value: float, where: str, *, open_low: bool = False) -> None:
    if not (0 < value <= 1 if open_low else 0 <= value <= 1):
        raise RulesError(f"{where}: must be between 0 and 1, not {value!r}")


def _positive(value: float, where: str) -> None:
    if not value > 0:
        raise RulesError(f"{where}: must be greater than 0, not {value!r}")


def _clock_time(value: Any, where: str) -> time:
    try:
        if not isinstance(value, str) or len(value) != 5:
            raise ValueError
        return time.fromisoformat(value)
    except ValueError:
        raise RulesError(f"{where}: {value!r} is not a time of day like \"08:30\"") from None


def _check_working_hours(periods: list, where: str) -> None:
    if not periods:
        raise RulesError(f"{where}: needs at least one period like [\"08:30\", \"12:00\"]")
    last_end: time | None = None
    for i, pair in enumerate(periods):
        if not isinstance(pair, list) or len(pair) != 2:
            raise RulesError(f"{where}[{i}]: must be a pair [\"start\", \"end\"], not {pair!r}")
        start, end = (_clock_time(v, f"{where}[{i}]") for v in pair)
        if start >= end:
            raise RulesError(f"{where}[{i}]: {pair[0]} is not before {pair[1]}")
        if last_end is not None and start < last_end:
            raise RulesError(f"{where}[{i}]: starts before the previous period ends")
        last_end = end


def _check_values(rules: dict[str, Any]) -> None:
    """Meaning, on the merged rules: statuses, levels and roles exist, times parse,
    fractions are fractions, the survey's closing answers are on its scales."""
    from core.models import CaseStatus, GridLevel, Urgency, WorkerRole

    def section(name: str) -> dict:
        value = rules.get(name, {})
        if not isinstance(value, dict):
            raise RulesError(f"{name}: must be a table, not {_kind(value)}")
        return value

    intake = section("intake")
    for key in ("auto_dispatch_min_confidence", "low_confidence"):
        _fraction(intake[key], f"intake.{key}")

    _one_of(section("dispatch")["role_order"], [r.value for r in WorkerRole], "dispatch.role_order", "role")
    _one_of(section("notify")["statuses"], [s.value for s in CaseStatus], "notify.statuses", "status")

    survey = section("survey")
    for scale in ("solved_scale", "satisfied_scale"):
        values = survey[scale]
        if not values or len(set(values)) != len(values):
            raise RulesError(f"survey.{scale}: needs at least one answer, each once")
    _one_of(survey["closes_when_solved"], survey["solved_scale"], "survey.closes_when_solved", "answer")
    _one_of(survey["closes_when_satisfied"], survey["satisfied_scale"], "survey.closes_when_satisfied", "answer")
    if survey["reopen_without_escalation"] < 0 or int(survey["reopen_without_escalation"]) != survey[
            "reopen_without_escalation"]:
        raise RulesError("survey.reopen_without_escalation: must be a whole number ≥ 0")

    _check_phone_survey(survey)
    _check_sms(section("sms") if "sms" in rules else None)
    from core import flood, limits

    limits.check_rules(rules)
    flood.check_rules(rules)

    sla = section("sla")
    if "warn_fraction" in sla:
        _fraction(sla["warn_fraction"], "sla.warn_fraction", open_low=True)
    hours = sla.get("calendar", {}).get("working_hours")
    if hours is not None:
        _check_working_hours(hours, "sla.calendar.working_hours")
    for urgency, entry in sla.get("default", {}).items():
        where = f"sla.default.{urgency}"
        if urgency not in {u.value for u in Urgency}:
            raise RulesError(f"{where}: unknown urgency (one of {', '.join(u.value for u in Urgency)})")
        for key in ("response_hours", "resolution_hours"):
            if key not in entry:
                raise RulesError(f"{where}.{key}: missing")
            _positive(entry[key], f"{where}.{key}")
        if entry["response_hours"] > entry["resolution_hours"]:
            raise RulesError(f"{where}: response_hours is longer than resolution_hours")

    ladder = section("escalation").get("ladder", [])
    levels = [lv.value for lv in GridLevel]
    _one_of(ladder, levels, "escalation.ladder", "grid level")
    order = [levels.index(lv) for lv in ladder]
    if not ladder or order != sorted(order, reverse=True) or len(set(order)) != len(order):
        raise RulesError("escalation.ladder: must climb from small to large grids, each level once "
                         f"(e.g. {', '.join(reversed(levels))})")

    sweeps = section("sweeps")
    _positive(sweeps["sla_period_minutes"], "sweeps.sla_period_minutes")
    _positive(sweeps["schedule_check_seconds"], "sweeps.schedule_check_seconds")
    if sweeps["schedule_check_seconds"] > sweeps["sla_period_minutes"] * 60:
        raise RulesError("sweeps.schedule_check_seconds: longer than sweeps.sla_period_minutes, so slots would be missed")
    media = section("media")
    _positive(media["upload_retry_seconds"], "media.upload_retry_seconds")
    if media["upload_retry_longest_seconds"] < media["upload_retry_seconds"]:
        raise RulesError("media.upload_retry_longest_seconds: must be at least media.upload_retry_seconds")
    if not isinstance(media["upload_attempts"], int) or media["upload_attempts"] < 1:
        raise RulesError(f"media.upload_attempts: a whole number of at least 1, not {media['upload_attempts']!r}")
    instances = section("instances")
    _positive(instances["heartbeat_seconds"], "instances.heartbeat_seconds")
    _positive(instances["lease_seconds"], "instances.lease_seconds")
    if instances["lease_seconds"] < 2 * instances["heartbeat_seconds"]:
        raise RulesError("instances.lease_seconds: must be at least twice instances.heartbeat_seconds, "
                         "or a live instance whose heartbeat is a moment late would be taken for dead")
    if section("indexes")["check_seconds"] < 0:
        raise RulesError("indexes.check_seconds: must be 0 (every request) or more")

    for check in EXTRA_CHECKS:
        check(rules)


def _check_phone_survey(survey: dict[str, Any]) -> None:
    from core.models import Channel

    for origin, ways in survey.get("channels_by_case", {}).items():
        _one_of([origin], [c.value for c in Channel], "survey.channels_by_case", "case channel")
        _one_of(ways, ["chat", "phone"], f"survey.channels_by_case.{origin}", "survey channel")
    phone = survey.get("phone")
    if phone is None:
        return
    where = "survey.phone"
    if int(phone["attempts"]) != phone["attempts"] or phone["attempts"] < 1:
        raise RulesError(f"{where}.attempts: must be a whole number ≥ 1")
    if phone["retry_after_minutes"] < 0:
        raise RulesError(f"{where}.retry_after_minutes: must be 0 or more")
    hours = phone["calling_hours"]
    if len(hours) != 2:
        raise RulesError(f"{where}.calling_hours: must be [\"start\", \"end\"], e.g. [\"09:00\", \"20:00\"]")
    start, end = (_clock_time(v, f"{where}.calling_hours") for v in hours)
    if start >= end:
        raise RulesError(f"{where}.calling_hours: {hours[0]} is not before {hours[1]}")
    _positive(phone["ring_timeout_seconds"], f"{where}.ring_timeout_seconds")
    _positive(phone["calls_per_second"], f"{where}.calls_per_second")
    for key in ("when_unreachable", "wrong_person", "do_not_call"):
        if phone[key] not in ("manual", "not_evaluated"):
            raise RulesError(f"{where}.{key}: {phone[key]!r} is not one of manual, not_evaluated")


def _check_sms(sms: dict[str, Any] | None) -> None:
    from core.models import CaseStatus, Channel

    if sms is None:
        return
    _one_of(sms["statuses"], [s.value for s in CaseStatus], "sms.statuses", "status")
    _one_of(sms["case_channels"], [c.value for c in Channel], "sms.case_channels", "case channel")
    if not all(str(w).strip() for w in sms["opt_out_words"]):
        raise RulesError("sms.opt_out_words: an empty word would opt out every reply")


# Checks that other parts register for the keys they own (each raises RulesError).
EXTRA_CHECKS: list[Callable[[dict[str, Any]], None]] = []


# -- loading -----------------------------------------------------------------------------


def packaged_rules() -> dict[str, Any]:
    """The defaults above with ``core/data/rules.toml`` over them."""
    return _merge(DEFAULTS, _read_toml(DATA_DIR / "rules.toml", "core/data/rules.toml"))


def build_rules(override: str | Path | None) -> dict[str, Any]:
    """The packaged rules with the file ``override`` merged over them, checked."""
    rules = packaged_rules()
    label = "core/data/rules.toml"
    if override:
        label = f"{RULES_ENV}={override}"
        given = _read_toml(Path(override), label)
        try:
            _check_shape(rules, given, "")
        except RulesError as exc:
            raise RulesError(f"{label}: {exc}") from None
        rules = _merge(rules, given)
    try:
        _check_values(rules)
    except RulesError as exc:
        raise RulesError(f"{label}: {exc}") from None
    return rules


@lru_cache
def _load(override: str) -> dict[str, Any]:
    return build_rules(override or None)


def load_rules() -> dict[str, Any]:
    """This process's rules: packaged, with ``$GRIDLINE_RULES`` merged over them."""
    return _load(os.environ.get(RULES_ENV, "").strip())


def reload_rules() -> None:
    """Forget the loaded rules (a test changed ``GRIDLINE_RULES``)."""
    _load.cache_clear()


def load_categories(path: str | Path | None = None) -> list[dict[str, Any]]:
    file = Path(path) if path else DATA_DIR / "categories.toml"
    return tomllib.loads(file.read_text("utf-8"))["category"]
