"""The one routing-index cache: every change to its rows bumps a version in the same
transaction; another process (here: another engine, so another cache key would be cheating
— the same database seen through a second cache) notices and rebuilds in the background,
while requests keep the indexes they have."""

from __future__ import annotations

import threading
from datetime import date

import pytest
from sqlalchemy import text
from sqlmodel import select

from core.deadlines.calendar import sync_calendar_days
from core.deadlines.models import CalendarDay
from core.places import indexes
from core.places.indexes import IndexCache, current_version
from core.places.models import GazetteerEntry, Grid, Household
from core.platform.db import session_scope
from tests.core.district import build_district


@pytest.fixture
def district(engine):
    with session_scope(engine) as session:
        return build_district(session)


def version(engine) -> int:
    with session_scope(engine) as session:
        return current_version(session)


def test_every_change_to_a_watched_row_bumps_the_version_in_its_transaction(engine, district):
    start = version(engine)
    with session_scope(engine) as session:
        session.add(GazetteerEntry(name="新地标广场", kind="landmark", grid_id=district.grids["micro1"].id))
    assert version(engine) == start + 1
    with session_scope(engine) as session:
        grid = session.get(Grid, district.grids["micro1"].id)
        grid.name = "改名的微网格"
    assert version(engine) == start + 2
    with session_scope(engine) as session:
        sync_calendar_days(session, [CalendarDay(day=date(2026, 12, 31), is_working=False, note="测试")])
    assert version(engine) == start + 3
    with session_scope(engine) as session:
        session.add(Household(code="HX9", address="某处", grid_id=district.grids["micro1"].id))
    assert version(engine) == start + 4
    # A rolled-back change leaves the version alone, like the change itself.
    with pytest.raises(RuntimeError), session_scope(engine) as session:
        session.add(GazetteerEntry(name="不会留下", kind="landmark", grid_id=district.grids["micro1"].id))
        session.flush()
        raise RuntimeError("abandon")
    assert version(engine) == start + 4


def test_unrelated_writes_do_not_bump(engine, district):
    from core import actions
    from core.actions import Petition
    from core.cases.models import Channel

    start = version(engine)
    with session_scope(engine) as session:
        actions.submit_petition(session, Petition(channel=Channel.chat, description="井盖丢了"))
    assert version(engine) == start


def test_another_process_sees_a_change_and_swaps_in_the_background(engine, district, monkeypatch):
    """``other`` is a second cache over the same database, as in another process."""
    monkeypatch.setattr(indexes, "_check_seconds", lambda: 0.0)  # check at every request
    other = IndexCache()
    before = other.for_engine(engine)
    assert before.gazetteer.match("新地标广场") is None

    built = threading.Event()
    release = threading.Event()
    real_build = indexes.build

    def slow_build(session):
        snapshot = real_build(session)
        built.set()
        assert release.wait(30), "the test never released the rebuild"
        return snapshot

    with session_scope(engine) as session:  # the change, made "elsewhere"
        session.add(GazetteerEntry(name="新地标广场", kind="landmark", grid_id=district.grids["micro2"].id))
    monkeypatch.setattr(indexes, "build", slow_build)
    during = other.for_engine(engine)  # notices the new version, starts the rebuild, answers at once
    assert during is before
    assert built.wait(30)
    assert other.for_engine(engine) is before  # still building: requests keep the old indexes
    release.set()
    after = other.wait_idle(engine)
    assert after is not before and after.version == version(engine)
    found = after.gazetteer.match("新地标广场")
    assert found is not None and found.grid_id == district.grids["micro2"].id
    assert other.for_engine(engine) is after


def test_a_local_commit_starts_the_rebuild_itself(engine, district):
    first = indexes.indexes_for(engine)
    with session_scope(engine) as session:
        session.add(GazetteerEntry(name="本进程新增小区", kind="community", grid_id=district.grids["micro1"].id))
    fresh = indexes.CACHE.wait_idle(engine)
    assert fresh is not first and fresh.gazetteer.match("本进程新增小区") is not None


def test_routing_calendar_and_gazetteer_views_come_from_one_snapshot(engine, district):
    from core.deadlines.sla import calendar_for

    with session_scope(engine) as session:
        snapshot = indexes.routing_indexes(session)
        assert calendar_for(session, "Asia/Shanghai") is snapshot.calendar("Asia/Shanghai")
        strict = snapshot.gazetteer_at(0.95)
        assert strict.min_confidence == 0.95 and strict.entries is snapshot.gazetteer.entries
        assert snapshot.gazetteer_at(0.95) is strict


def test_a_truncated_version_row_is_recreated(engine, district):
    with session_scope(engine) as session:
        session.execute(text("DELETE FROM indexversion"))
    with session_scope(engine) as session:
        session.add(GazetteerEntry(name="重建版本", kind="landmark", grid_id=district.grids["micro1"].id))
    assert version(engine) == 1
    with session_scope(engine) as session:
        assert session.exec(select(GazetteerEntry).where(GazetteerEntry.name == "重建版本")).first()
