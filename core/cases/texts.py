"""Catalogue of resident-facing words shared by the channels (status names …)."""

from __future__ import annotations

import tomllib
from functools import lru_cache

from core.cases.models import CaseStatus
from core.platform.rules import DATA_DIR

DEFAULT_LANGUAGE = "zh"


@lru_cache
def _catalogue() -> dict:
    return tomllib.loads((DATA_DIR / "texts.toml").read_text("utf-8"))


def status_name(status: CaseStatus | str, language: str = DEFAULT_LANGUAGE) -> str:
    value = status.value if isinstance(status, CaseStatus) else status
    table = _catalogue().get(language) or _catalogue()[DEFAULT_LANGUAGE]
    return table["status"].get(value, value)
