"""Rules as data: ``core/data/rules.toml`` (deadlines, escalation, intake and survey policy)
and ``core/data/categories.toml``. Loaded once per process; tests may pass their own."""

from __future__ import annotations

import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parent / "data"

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
}


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@lru_cache
def load_rules(path: str | None = None) -> dict[str, Any]:
    file = Path(path) if path else DATA_DIR / "rules.toml"
    data = tomllib.loads(file.read_text("utf-8")) if file.exists() else {}
    return _merge(DEFAULTS, data)


def load_categories(path: str | Path | None = None) -> list[dict[str, Any]]:
    file = Path(path) if path else DATA_DIR / "categories.toml"
    return tomllib.loads(file.read_text("utf-8"))["category"]
