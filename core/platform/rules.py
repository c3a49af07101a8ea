"""Rules as data, one loader for every file of them (``RuleFile``):

    core/data/rules.toml       GRIDLINE_RULES       deadlines, escalation, intake, survey policy, periodic work …
    core/data/categories.toml  GRIDLINE_CATEGORIES  departments and petition categories
    ivr/flow.toml              GRIDLINE_FLOW        the hotline's timeouts, menu and tries (``ivr.config``)
    ivr/survey_flow.toml       GRIDLINE_SURVEY_FLOW the follow-up call's (``ivr.survey_twiml``)

A deployment changes its rules without editing the package: the variable names a TOML file
that is merged over the packaged file key by key (a table in the file replaces only the keys
it names; a list is replaced whole). The packaged file holds every key with its default:
there are no defaults in code. A key the packaged file does not have, or a value of another
type, is refused; then the merged whole is checked for meaning. A bad file raises
:class:`RulesError` with one line that names the file, the key and what is wrong with it.
Each file is loaded once per process (``reload_rules`` forgets them all, for tests).
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import time
from pathlib import Path
from typing import Any

from core.cases.models import CaseStatus, Channel, Urgency
from core.people.models import WorkerRole
from core.places.models import GridLevel
from core.platform.merging import deep_merge

# Text fields whose database column has a size: [limits] may not allow more than it holds.
COLUMN_SIZES = {"address": 256, "name": 64}

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
RULES_ENV = "GRIDLINE_RULES"
CATEGORIES_ENV = "GRIDLINE_CATEGORIES"


class RulesError(ValueError):
    """A rules file that cannot be used; the message is one line naming the key."""


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


def _template(items: list[dict]) -> dict:
    """The keys the packaged tables of an array of tables use, with a value of each."""
    out: dict = {}
    for item in items:
        for key, value in item.items():
            out.setdefault(key, value)
    return out


def _check_shape(packaged: Any, given: Any, where: str, open_tables: frozenset[str] = frozenset()) -> None:
    """``given`` (from the override file) has the keys and types of ``packaged``. The keys of
    a table in ``open_tables`` are data (menu digits, category codes): new ones are allowed,
    their values are checked against the packaged ones."""
    if isinstance(packaged, dict):
        if not isinstance(given, dict):
            raise RulesError(f"{where}: must be a table, not {_kind(given)}")
        for key, value in given.items():
            path = f"{where}.{key}" if where else key
            if key not in packaged and where in open_tables and packaged:
                _check_shape(next(iter(packaged.values())), value, path, open_tables)
                continue
            if key not in packaged:
                close = difflib.get_close_matches(key, list(packaged), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(sorted(packaged))})"
                raise RulesError(f"{path}: unknown key{hint}")
            _check_shape(packaged[key], value, path, open_tables)
        return
    if _kind(packaged) != _kind(given):
        raise RulesError(f"{where}: must be {_kind(packaged)}, not {_kind(given)} ({given!r})")
    if isinstance(packaged, list) and packaged:
        if all(isinstance(item, dict) for item in packaged):
            element = _template(packaged)
            for i, item in enumerate(given):
                _check_shape(element, item, f"{where}[{i}]", open_tables)
            return
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

    def section(name: str) -> dict:
        return rules[name]

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
    _check_sms(section("sms"))
    _check_limits(section("limits"))
    _check_flood(section("intake")["flood"])
    _positive(section("merge")["undo_hours"], "merge.undo_hours")

    send = section("chat")["send"]
    for key in ("bot_per_second", "chat_per_second"):
        _positive(send[key], f"chat.send.{key}")
    for key in ("bot_burst", "chat_burst", "jobs_at_once"):
        if send[key] < 1:
            raise RulesError(f"chat.send.{key}: must be at least 1")
    if send["max_refusals"] < 0:
        raise RulesError("chat.send.max_refusals: must be ≥ 0")

    sla = section("sla")
    _fraction(sla["warn_fraction"], "sla.warn_fraction", open_low=True)
    _check_working_hours(sla["calendar"]["working_hours"], "sla.calendar.working_hours")
    for urgency, entry in sla["default"].items():
        where = f"sla.default.{urgency}"
        if urgency not in {u.value for u in Urgency}:
            raise RulesError(f"{where}: unknown urgency (one of {', '.join(u.value for u in Urgency)})")
        for key in ("response_hours", "resolution_hours"):
            if key not in entry:
                raise RulesError(f"{where}.{key}: missing")
            _positive(entry[key], f"{where}.{key}")
        if entry["response_hours"] > entry["resolution_hours"]:
            raise RulesError(f"{where}: response_hours is longer than resolution_hours")

    ladder = section("escalation")["ladder"]
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
    hotline_figures = section("reports")["hotline"]
    _positive(hotline_figures["answer_within_seconds"], "reports.hotline.answer_within_seconds")
    _fraction(hotline_figures["connection_rate"], "reports.hotline.connection_rate", open_low=True)
    eos = section("hotline")["end_of_speech"]
    for key in ("quiet_s", "answer_quiet_s", "barge_quiet_s", "number_quiet_s", "prompt_chars_per_s",
                "redirect_timeout_s"):
        _positive(eos[key], f"hotline.end_of_speech.{key}")
    for key in ("min_speech_s", "answer_min_speech_s"):
        if eos[key] < 0:
            raise RulesError(f"hotline.end_of_speech.{key}: must be ≥ 0")
    if section("indexes")["check_seconds"] < 0:
        raise RulesError("indexes.check_seconds: must be 0 (every request) or more")

    for check in EXTRA_CHECKS:
        check(rules)


def _check_phone_survey(survey: dict[str, Any]) -> None:

    for origin, ways in survey["channels_by_case"].items():
        _one_of([origin], [c.value for c in Channel], "survey.channels_by_case", "case channel")
        _one_of(ways, ["chat", "phone"], f"survey.channels_by_case.{origin}", "survey channel")
    phone = survey["phone"]
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


def _check_sms(sms: dict[str, Any]) -> None:
    _one_of(sms["statuses"], [s.value for s in CaseStatus], "sms.statuses", "status")
    _one_of(sms["case_channels"], [c.value for c in Channel], "sms.case_channels", "case channel")
    if not all(str(w).strip() for w in sms["opt_out_words"]):
        raise RulesError("sms.opt_out_words: an empty word would opt out every reply")


# Checks that other parts register for the keys they own (each raises RulesError).
EXTRA_CHECKS: list[Callable[[dict[str, Any]], None]] = []


# -- loading -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleFile:
    """One file of rules as data, read, checked and overridden like every other: the packaged
    TOML holds every key with its default; the variable ``env`` may name a deployment's file
    merged over it (``deep_merge``) after checking its keys and types against the packaged
    ones (``_check_shape``); then ``check`` judges the meaning of the merged whole. A bad file
    raises :class:`RulesError` with one line naming the file, the key and what is wrong.
    Loaded once per process; ``reload_rules()`` forgets every file (tests)."""

    label: str  # how messages name the packaged file: "core/data/rules.toml"
    packaged: Path
    env: str
    check: Callable[[dict[str, Any]], None] | None = None
    open_tables: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        RULE_FILES.append(self)

    def packaged_data(self) -> dict[str, Any]:
        return _read_toml(self.packaged, self.label)

    def build(self, override: str | Path | None) -> dict[str, Any]:
        """The packaged file with the file ``override`` merged over it, checked."""
        data = self.packaged_data()
        label = self.label
        if override:
            label = f"{self.env}={override}"
            given = _read_toml(Path(override), label)
            try:
                _check_shape(data, given, "", self.open_tables)
            except RulesError as exc:
                raise RulesError(f"{label}: {exc}") from None
            data = deep_merge(data, given)
        if self.check is not None:
            try:
                self.check(data)
            except RulesError as exc:
                raise RulesError(f"{label}: {exc}") from None
        return data

    def load(self) -> dict[str, Any]:
        """This process's version: packaged, with ``$env``'s file merged over it."""
        override = os.environ.get(self.env, "").strip()
        key = (self.env, override)
        data = _LOADED.get(key)
        if data is None:
            data = _LOADED[key] = self.build(override or None)
        return data


RULE_FILES: list[RuleFile] = []
_LOADED: dict[tuple[str, str], dict[str, Any]] = {}


def load_every_file() -> None:
    """Load and check every rules file registered so far (start-up: a bad one stops it)."""
    for rule_file in RULE_FILES:
        rule_file.load()


def reload_rules() -> None:
    """Forget every loaded rules file (a test changed ``GRIDLINE_RULES`` or a sibling)."""
    _LOADED.clear()


# -- categories.toml -------------------------------------------------------------------------


def _check_categories(data: dict[str, Any]) -> None:
    """Every department and category has its keys; codes are unique; a category's department
    exists; every urgency has deadlines, the response no later than the resolution."""
    needed = {"department": ("code", "name", "phone"),
              "category": ("code", "name", "department", "keywords", "duplicate_radius_m",
                           "duplicate_window_hours", "sla")}
    for table, keys in needed.items():
        seen: set[str] = set()
        for i, item in enumerate(data[table]):
            where = f"{table}[{i}]"
            for key in keys:
                if key not in item:
                    raise RulesError(f"{where}.{key}: missing")
            code = item["code"]
            if not code.isascii() or not code.replace("_", "").isalnum() or len(code) > 32:
                raise RulesError(f"{where}.code: {code!r} is not an ascii slug of at most 32 characters")
            if code in seen:
                raise RulesError(f"{where}.code: {code!r} is given twice")
            seen.add(code)
    departments = {d["code"] for d in data["department"]}
    urgencies = [u.value for u in Urgency]
    for i, item in enumerate(data["category"]):
        where = f"category[{i}]"
        if item["department"] not in departments:
            raise RulesError(f"{where}.department: unknown department {item['department']!r}")
        if item["duplicate_radius_m"] < 0 or item["duplicate_window_hours"] < 0:
            raise RulesError(f"{where}: duplicate_radius_m and duplicate_window_hours must be 0 or more")
        for urgency in urgencies:
            hours = item["sla"].get(urgency)
            if hours is None:
                raise RulesError(f"{where}.sla.{urgency}: missing")
            if len(hours) != 2 or not all(h > 0 for h in hours) or hours[0] > hours[1]:
                raise RulesError(f"{where}.sla.{urgency}: must be [response_hours, resolution_hours], "
                                 f"both greater than 0, the response no longer, not {hours!r}")


RULES = RuleFile("core/data/rules.toml", DATA_DIR / "rules.toml", RULES_ENV, _check_values,
                 open_tables=frozenset({"worker.report.min_photos_by_category"}))
CATEGORIES = RuleFile("core/data/categories.toml", DATA_DIR / "categories.toml", CATEGORIES_ENV,
                      _check_categories)


def packaged_rules() -> dict[str, Any]:
    """``core/data/rules.toml`` as packaged."""
    return RULES.packaged_data()


def build_rules(override: str | Path | None) -> dict[str, Any]:
    """The packaged rules with the file ``override`` merged over them, checked."""
    return RULES.build(override)


def load_rules() -> dict[str, Any]:
    """This process's rules: packaged, with ``$GRIDLINE_RULES`` merged over them."""
    return RULES.load()


def load_categories() -> dict[str, Any]:
    """This process's departments and categories: ``core/data/categories.toml`` with
    ``$GRIDLINE_CATEGORIES`` merged over it (``{"department": [...], "category": [...]}``)."""
    return CATEGORIES.load()


def _check_limits(section: dict) -> None:
    """[limits] (core.cases.limits): whole positive numbers, within the columns' sizes."""
    for key, value in section.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RulesError(f"limits.{key}: must be a whole number ≥ 1, not {value!r}")
        if key in COLUMN_SIZES and value > COLUMN_SIZES[key]:
            raise RulesError(f"limits.{key}: at most {COLUMN_SIZES[key]} (what the database column holds)")
    if section["transcript"] < section["description"]:
        raise RulesError("limits.transcript: must be at least limits.description")


def _check_flood(r: dict) -> None:
    """[intake.flood] (core.cases.flood)."""
    for key in ("window_minutes", "max_petitions", "refuse_above", "duplicate_window_minutes"):
        if not r[key] > 0:
            raise RulesError(f"intake.flood.{key}: must be greater than 0, not {r[key]!r}")
    if r["refuse_above"] < r["max_petitions"]:
        raise RulesError("intake.flood.refuse_above: must be at least intake.flood.max_petitions")
    if not 0 < r["duplicate_similarity"] <= 100:
        raise RulesError(f"intake.flood.duplicate_similarity: must be between 0 and 100, not "
                         f"{r['duplicate_similarity']!r}")
    channels = [c.value for c in Channel]
    for i, name in enumerate(r["refuse_channels"]):
        if name not in channels:
            raise RulesError(f"intake.flood.refuse_channels[{i}]: unknown channel {name!r} "
                             f"(one of {', '.join(channels)})")
