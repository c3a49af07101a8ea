"""The hotline's rules and words as data: ``flow.toml`` and ``prompts/<lang>.toml``."""

from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass
from datetime import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from core.i18n import CORE, Catalogue

HERE = Path(__file__).resolve().parent


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@lru_cache
def load_flow(path: str | None = None) -> dict[str, Any]:
    data = tomllib.loads((HERE / "flow.toml").read_text("utf-8"))
    if path:
        data = _merge(data, tomllib.loads(Path(path).read_text("utf-8")))
    return data


# The hotline's words, through the one catalogue mechanism (core/i18n.py): a language is a
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
        return cls(_merge(load_flow(), overrides))

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    @property
    def language(self) -> str:
        return self.data.get("language", "zh")


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
