from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import select

from core import actions
from core.actions import Petition
from core.cases.models import Channel
from core.followup.models import Survey
from core.platform import clock
from core.platform.db import session_scope
from core.reporting import figures
from tests.core.district import build_district

T0 = datetime(2026, 11, 16, 1, 0)  # Monday 09:00 Shanghai


def test_rates_by_community_category_and_worker(engine):
    with session_scope(engine) as session:
        d = build_district(session)
    micro1 = d.grids["micro1"].id

    def new(category="streetlight"):
        with session_scope(engine) as session:
            case, _ = actions.submit_petition(session, Petition(channel=Channel.hotline, description="x",
                                                                category_code=category))
            return case.id

    def step(case_id, fn, **kw):
        with session_scope(engine) as session:
            fn(session, actions.get_case(session, case_id), **kw)

    clock.freeze(T0)
    a, b, c, e = new(), new(), new("flying_lead"), new()
    for cid in (a, b, c):
        step(cid, actions.dispatch, actor="op", grid_id=micro1)
    clock.freeze(T0 + timedelta(minutes=30))
    step(a, actions.accept, actor="w")  # on time
    clock.freeze(T0 + timedelta(days=1))
    step(b, actions.accept, actor="w")  # late (4 working hours)
    for cid in (a, b):
        step(cid, actions.report_done, actor="w", note="done")
        step(cid, actions.verify, actor="op")
    with session_scope(engine) as session:
        surveys = {s.case_id: s for s in session.exec(select(Survey)).all()}
        actions.record_survey(session, surveys[a], solved="solved", satisfied="satisfied")
        actions.record_survey(session, surveys[b], solved="not", satisfied="not")
    step(e, actions.close, actor="op", reason="咨询已答复")

    with session_scope(engine) as session:
        by_community = figures.rates(session, T0 - timedelta(days=1), T0 + timedelta(days=30))
        by_category = {r.key: r for r in figures.rates(session, T0, T0 + timedelta(days=30), "category")}
        by_worker = {r.key: r for r in figures.rates(session, T0, T0 + timedelta(days=30), "worker")}
        outside = figures.rates(session, T0 + timedelta(days=1), T0 + timedelta(days=30))
    rows = {r.key: r for r in by_community}
    community = rows["350499001001"]
    assert community.name == "罗布社区"
    assert (community.received, community.dispatched, community.responded_on_time) == (3, 3, 1)
    assert community.response_rate == round(1 / 3, 4)
    assert community.closed == 1 and community.closure_rate == round(1 / 3, 4)  # a closed; b reopened
    assert community.surveyed == 2 and community.satisfaction_rate == 0.5
    assert rows["-"].received == 1 and rows["-"].closed == 1  # e never had a grid
    total = figures.totals(by_community)
    assert total.received == 4 and total.closure_rate == 0.5
    assert by_category["streetlight"].received == 3 and by_category["flying_lead"].received == 1
    assert by_worker["W-M1"].dispatched == 2  # b was reopened: its owner cleared, counted under "-"
    assert outside == []
