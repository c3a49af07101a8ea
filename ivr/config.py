"""The hotline's rules and words as data: ``flow.toml`` and ``survey_flow.toml``, read like
every rules file (``core.platform.rules.RuleFile``: ``GRIDLINE_FLOW`` and ``GRIDLINE_SURVEY_FLOW`` may
name a deployment's file over them), and ``prompts/<lang>.toml``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import time
from pathlib import Path
from typing import Any

from core.followup.survey_policy import satisfied_scale, solved_scale
from core.platform.i18n import CORE, Catalogue
from core.platform.merging import deep_merge
from core.platform.rules import RuleFile, RulesError
from ivr.survey_answers import AnswersError, check_answers

HERE = Path(__file__).resolve().parent


def _check_flow(flow: dict[str, Any]) -> None:
    """Meaning, on the merged flow: its language has prompts, the menu's digits lead
    somewhere, times and tries are positive."""
    if flow["language"] not in PROMPTS.languages:
        raise RulesError(f"language: no prompt catalogue ivr/prompts/{flow['language']}.toml")
    for digit, action in flow["menu"]["digits"].items():
        if len(digit) != 1 or digit not in "0123456789*#":
            raise RulesError(f"menu.digits.{digit}: a key is one of 0-9, * or #")
        if action not in MENU_ACTIONS:
            raise RulesError(f"menu.digits.{digit}: {action!r} is not one of {', '.join(MENU_ACTIONS)}")
    if not str(flow["open"]["slow_rate"]).endswith("%"):
        raise RulesError(f"open.slow_rate: {flow['open']['slow_rate']!r} is not a percentage like \"75%\"")
    positive_numbers(flow, "")


def positive_numbers(table: dict[str, Any], where: str) -> None:
    """Every number in a flow file counts seconds, tries or a level: none is 0 or less."""
    for key, value in table.items():
        path = f"{where}.{key}" if where else key
        if isinstance(value, dict):
            positive_numbers(value, path)
        elif isinstance(value, int | float) and not isinstance(value, bool) and value <= 0:
            raise RulesError(f"{path}: must be greater than 0, not {value!r}")


MENU_ACTIONS = ("petition", "status", "operator")
FLOW = RuleFile("ivr/flow.toml", HERE / "flow.toml", "GRIDLINE_FLOW", _check_flow,
                open_tables=frozenset({"menu.digits"}))


def _check_survey_flow(flow: dict[str, Any]) -> None:
    """Meaning, on the merged file: its language has prompts, the questions are the two the
    survey asks, each once, the keys are keypad keys and numbers are positive."""
    if flow["language"] not in PROMPTS.languages:
        raise RulesError(f"language: no prompt catalogue ivr/prompts/{flow['language']}.toml")
    order = flow["questions"]["order"]
    if sorted(order) != sorted(QUESTIONS):
        raise RulesError(f"questions.order: must name {' and '.join(QUESTIONS)}, each once, not {order!r}")
    keys = flow["keys"]
    for name, key in keys.items():
        if len(key) != 1 or key not in "0123456789*#":
            raise RulesError(f"keys.{name}: {key!r} is not one of 0-9, * or #")
    if len(set(keys.values())) != len(keys):
        raise RulesError("keys: two actions share a key")
    if not flow["voice"]["rate"].endswith("%"):
        raise RulesError(f"voice.rate: {flow['voice']['rate']!r} is not a percentage like \"85%\"")
    try:
        check_answers(flow["answers"], survey_scales())
    except AnswersError as exc:
        raise RulesError(str(exc)) from None
    positive_numbers(flow, "")


def survey_scales() -> dict[str, tuple[str, ...]]:
    """Each question's answers, in key order (rules.toml ``[survey]``)."""
    return {"solved": solved_scale(), "satisfied": satisfied_scale()}


QUESTIONS = ("solved", "satisfied")
# The answers' tables are named by the rules' scales, which a deployment may change.
SURVEY_FLOW = RuleFile("ivr/survey_flow.toml", HERE / "survey_flow.toml", "GRIDLINE_SURVEY_FLOW",
                       _check_survey_flow, open_tables=frozenset({"answers.solved", "answers.satisfied"}))


def load_flow() -> dict[str, Any]:
    """The hotline's flow: ``ivr/flow.toml`` with ``$GRIDLINE_FLOW`` merged over it."""
    return FLOW.load()


# The hotline's words, through the one catalogue mechanism (core/platform/i18n.py): a language is a
# ``prompts/<lang>.toml`` (or one in a GRIDLINE_LOCALES folder's ``ivr/``).
PROMPTS = Catalogue("ivr", HERE / "prompts", fallback=CORE)


def load_prompts(language: str = "zh") -> dict[str, Any]:
    if language not in PROMPTS.languages:
        raise ValueError(f"no prompt catalogue for language {language!r} ({HERE / 'prompts'})")
    return PROMPTS.table(language)


@dataclass(frozen=True)
class FlowConfig:
    """The flow rules, with overrides for tests (``FlowConfig.load(petition={...})``)."""

    data: dict[str, Any]

    @classmethod
    def load(cls, **overrides: dict[str, Any]) -> FlowConfig:
        return cls(deep_merge(load_flow(), overrides))

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    @property
    def language(self) -> str:
        return self.data["language"]


def parse_service_hours(spec: str) -> list[tuple[time, time]]:
    """``"08:30-12:00,13:30-17:30"`` (GRIDLINE_SERVICE_HOURS) → periods; empty means never."""
    periods = []
    for part in (spec or "").split(","):
        part = part.strip()
        if not part:
            continue
        start, _, end = part.partition("-")
        periods.append((time.fromisoformat(start.strip()), time.fromisoformat(end.strip())))
    return periods
