"""Local time: stored times are naive UTC; what people read is the district's clock, labelled."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from core.platform import clock
from ivr.state import recording_path


def test_a_stored_time_reads_as_the_districts_clock_with_its_zone():
    # 01:00 UTC is 09:00 in Beijing: the hour `gridline cases show` printed unlabelled before
    assert clock.local_text(datetime(2026, 12, 8, 1, 0), tz="Asia/Shanghai") == "2026-12-08 09:00 UTC+8"
    assert clock.local_text(datetime(2026, 12, 8, 1, 0), tz="Asia/Shanghai", label=False) == "2026-12-08 09:00"
    assert clock.local_text(None) == ""
    # an aware time is converted, not re-labelled
    aware = datetime(2026, 12, 8, 1, 0, tzinfo=UTC)
    assert clock.local_text(aware, "%H:%M", tz="Asia/Shanghai") == "09:00 UTC+8"


@pytest.mark.parametrize(("tz", "at", "label"), [
    ("Asia/Shanghai", datetime(2026, 7, 1), "UTC+8"),
    ("Asia/Kolkata", datetime(2026, 7, 1), "UTC+5:30"),
    ("America/St_Johns", datetime(2026, 1, 15), "UTC-3:30"),
    # summer time moves the label with it
    ("Europe/Berlin", datetime(2026, 1, 15), "UTC+1"),
    ("Europe/Berlin", datetime(2026, 7, 15), "UTC+2"),
    ("UTC", datetime(2026, 7, 15), "UTC+0"),
])
def test_the_zone_label_is_the_offset_at_that_moment(tz, at, label):
    assert clock.zone_label(tz, at) == label


def test_the_local_day_turns_at_local_midnight_not_utc_midnight():
    # 16:30 UTC on the 6th is 00:30 on the 7th in Beijing: a recording folder and a case
    # number of that moment both say the 7th
    assert clock.local_date(datetime(2026, 12, 6, 16, 30), tz="Asia/Shanghai") == date(2026, 12, 7)
    assert clock.local_date(datetime(2026, 12, 6, 15, 59), tz="Asia/Shanghai") == date(2026, 12, 6)


def test_the_recording_folder_is_the_local_day(monkeypatch):
    monkeypatch.setenv("GRIDLINE_TIMEZONE", "Asia/Shanghai")
    clock.get_settings.cache_clear()
    clock.freeze(datetime(2026, 12, 6, 16, 30))
    try:
        assert recording_path("CA1", "petition-1").split("/")[1] == "20261207"
    finally:
        clock.freeze(None)
        clock.get_settings.cache_clear()
