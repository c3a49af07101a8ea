from __future__ import annotations

from datetime import datetime, timedelta

from core import actions
from core.actions import Petition
from core.cases.duplicates import distance_m, suggest_duplicates
from core.cases.models import Channel
from core.platform import clock
from core.platform.db import session_scope
from tests.core.district import build_district


def test_distance_is_metres():
    # 0.001 degree of latitude is about 111 m
    assert 110 < distance_m(26.390, 117.79, 26.391, 117.79) < 112


def test_same_category_nearby_and_recent_is_suggested(engine):
    with session_scope(engine) as session:
        build_district(session)
    t0 = datetime(2026, 11, 17, 2, 0)

    def submit(at, lat, lon, category="streetlight"):
        clock.freeze(at)
        with session_scope(engine) as session:
            case, _ = actions.submit_petition(session, Petition(
                channel=Channel.chat, description="路灯坏了", latitude=lat, longitude=lon, category_code=category))
            return case

    first = submit(t0, 26.3900, 117.7900)
    near = submit(t0 + timedelta(hours=5), 26.3905, 117.7904)  # ~65 m away
    submit(t0 + timedelta(hours=5), 26.3950, 117.7900)  # ~550 m away: too far
    submit(t0 + timedelta(days=5), 26.3901, 117.7900)  # same spot, outside 72 h
    submit(t0 + timedelta(hours=1), 26.3901, 117.7900, category="flying_lead")  # other category
    with session_scope(engine) as session:
        found = suggest_duplicates(session, near)
    assert [c.case.id for c in found] == [first.id]
    assert 50 < found[0].distance_m < 80 and found[0].hours_apart == 5
