from __future__ import annotations

import pytest

from core.deadlines.calendar import DATA_DIR, WorkingCalendar


@pytest.fixture(scope="module")
def cal() -> WorkingCalendar:
    """The bundled 2026 calendar with the default working hours."""
    return WorkingCalendar.from_files([DATA_DIR / "calendar_2026.toml"])
