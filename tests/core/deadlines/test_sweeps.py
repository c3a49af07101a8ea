from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import func, select

from core import actions
from core.actions import Petition
from core.cases.models import CaseEvent, Channel
from core.deadlines import sweeps
from core.places.models import GridLevel
from core.platform import clock
from core.platform.db import session_scope
from core.platform.i18n import reason_text
from core.platform.models import Job
from tests.core.district import build_district

T0 = datetime(2026, 11, 17, 1, 0)  # Tuesday 09:00 Shanghai


def test_unaccepted_case_climbs_once_per_lapsed_deadline(engine):
    with session_scope(engine) as session:
        d = build_district(session)
    clock.freeze(T0)
    with session_scope(engine) as session:
        late, _ = actions.submit_petition(session, Petition(channel=Channel.chat, description="路灯坏了",
                                                            category_code="streetlight"))
        actions.dispatch(session, late, actor="op", grid_id=d.grids["micro1"].id)
        taken, _ = actions.submit_petition(session, Petition(channel=Channel.chat, description="路灯坏了",
                                                             category_code="streetlight"))
        actions.dispatch(session, taken, actor="op", grid_id=d.grids["micro1"].id)
        actions.accept(session, taken, actor="w")
    # 4 working hours later is 14:30 the same day; at 15:00 the first case has lapsed
    clock.freeze(T0 + timedelta(hours=6))
    assert sweeps.escalate_overdue(engine) == [late.number]
    clock.freeze(T0 + timedelta(hours=6, minutes=5))
    assert sweeps.escalate_overdue(engine) == []  # the new owner's clock is running
    with session_scope(engine) as session:
        case = actions.get_case(session, late.id)
        assert case.owner_level == GridLevel.area and case.worker_id == d.workers["W-A"].id
        event = session.exec(select(CaseEvent).where(CaseEvent.case_id == late.id)
                             .order_by(CaseEvent.id.desc())).first()
        # A code with its parameters, said in the reader's words at the edge.
        assert event.actor == "system:sla" and event.reason == "sweep.response_overdue"
        assert event.data["reason_params"] == {"due": "2026-11-17 06:30"}
        assert reason_text("zh", event.reason, event.data) == "未在响应时限内签收（时限 2026-11-17 06:30 UTC）"
        assert reason_text("en", event.reason, event.data) == (
            "not accepted within the response deadline (2026-11-17 06:30 UTC)")


def test_sweep_is_scheduled_once_per_slot(engine):
    clock.freeze(T0)
    sweeps.schedule_sweep(engine)
    sweeps.schedule_sweep(engine)
    clock.freeze(T0 + timedelta(minutes=5))
    sweeps.schedule_sweep(engine)
    with session_scope(engine) as session:
        assert session.exec(select(func.count()).select_from(Job).where(Job.kind == "sla_sweep")).one() == 2
