"""Resident-facing names shared by the channels (status names …), from the core catalogue
(``core/locales/<lang>.toml``, ``[status]``)."""

from __future__ import annotations

from core.cases.models import CaseStatus
from core.platform.i18n import CORE, DEFAULT

DEFAULT_LANGUAGE = DEFAULT


def status_name(status: CaseStatus | str, language: str = DEFAULT_LANGUAGE) -> str:
    value = status.value if isinstance(status, CaseStatus) else status
    key = f"status.{value}"
    return CORE.t(language, key) if CORE.has(language, key) else value
