"""Reminder sweep and digest scheduling: one reminder per case, threshold and dispatch,
however many sweeps, instances and restarts; a new dispatch is a new dispatch."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest
from sqlmodel import select

from core import actions
from core.deadlines import reminders
from core.people import staff
from core.platform import clock
from core.platform.db import make_engine, session_scope
from core.platform.models import Job
from tests.core.district import build_district
from tests.core.shanghai import utc
from tests.core.staffing import dispatched, link

T0 = utc(2026, 11, 17, 9, 0)  # Tuesday 09:00; 路灯: 4 working hours to accept (due 14:30)


@pytest.fixture
def district(engine):
    with session_scope(engine) as session:
        return build_district(session)


def _reminders(engine) -> list[Job]:
    with session_scope(engine) as session:
        return list(session.exec(select(Job).where(Job.kind == reminders.REMIND_JOB).order_by(Job.id)))


def test_once_per_case_threshold_and_dispatch_across_instances(engine, district):
    link(engine, 901, "W-M2")
    link(engine, 902, "W-A")
    clock.freeze(T0)
    number = dispatched(engine, district.grids["micro2"])
    clock.freeze(utc(2026, 11, 17, 11, 0))  # 2 of 4 hours: green
    assert reminders.queue_reminders(engine) == []
    clock.freeze(utc(2026, 11, 17, 13, 45))  # 3.25 of 4 hours: yellow

    # two instances sweep, each on its own engine: at the same moment on PostgreSQL; one
    # after the other on SQLite (one writer: several instances need PostgreSQL)
    other = make_engine(engine.url.render_as_string(hide_password=False))
    results: list[list[str]] = []
    barrier = threading.Barrier(2)

    def sweep(eng) -> None:
        barrier.wait()
        results.append(reminders.queue_reminders(eng))

    if engine.dialect.name == "postgresql":
        threads = [threading.Thread(target=sweep, args=(e,)) for e in (engine, other)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    else:
        results = [reminders.queue_reminders(engine), reminders.queue_reminders(other)]
    other.dispose()
    assert sorted(len(r) for r in results) == [0, 1]
    assert reminders.queue_reminders(engine) == []  # and again later: nothing new
    (yellow,) = _reminders(engine)
    assert yellow.payload["colour"] == "yellow" and yellow.payload["to"] == [
        f"worker:{district.workers['W-M2'].id}"]

    clock.freeze(utc(2026, 11, 17, 14, 31))  # breached: red, to the owner and the area leader
    red_key = reminders.queue_reminders(engine)
    assert len(red_key) == 1 and red_key[0].startswith("remind:") and ":response-red:" in red_key[0]
    red = _reminders(engine)[-1]
    assert red.payload["to"] == [f"worker:{district.workers['W-M2'].id}", f"worker:{district.workers['W-A'].id}"]

    # escalated: a new dispatch to a new owner, whose clock gets its own reminders
    with session_scope(engine) as session:
        case = actions.get_case(session, number)
        actions.escalate(session, case, actor="system:sla", reason="late")
    clock.freeze(utc(2026, 11, 18, 8, 45))  # about 3.2 of the new 4 hours (escalated at 14:31)
    again = reminders.queue_reminders(engine)
    assert len(again) == 1 and ":response-yellow:" in again[0] and again[0] != yellow.dedupe_key
    assert _reminders(engine)[-1].payload["to"] == [f"worker:{district.workers['W-A'].id}"]


def test_nobody_linked_nothing_queued(engine, district):
    clock.freeze(T0)
    dispatched(engine, district.grids["micro2"])
    clock.freeze(T0 + timedelta(days=3))
    assert reminders.queue_reminders(engine) == []


def test_sweep_and_digest_are_scheduled_once(engine, district):
    clock.freeze(T0)
    reminders.schedule_sweep(engine)
    reminders.schedule_sweep(engine)
    assert str(reminders.schedule_digest(engine, "Asia/Shanghai")) == "2026-11-17"
    assert reminders.schedule_digest(engine, "Asia/Shanghai") is None
    with session_scope(engine) as session:
        kinds = sorted(j.kind for j in session.exec(select(Job)))
        digest = session.exec(select(Job).where(Job.kind == reminders.DIGEST_JOB)).one()
    assert kinds == [reminders.DIGEST_JOB, reminders.SWEEP_JOB]
    assert digest.run_at == datetime(2026, 11, 17, 0, 30)  # 08:30 in Shanghai
    clock.freeze(utc(2026, 11, 22, 10, 0))  # a Sunday
    assert reminders.schedule_digest(engine, "Asia/Shanghai") is None


def test_tasks_most_urgent_first_and_checks(engine, district):
    clock.freeze(T0)
    first = dispatched(engine, district.grids["micro2"])
    clock.freeze(utc(2026, 11, 17, 13, 40))
    second = dispatched(engine, district.grids["micro2"])
    with session_scope(engine) as session:
        case = actions.get_case(session, second)
        actions.accept(session, case, actor="w")
    clock.freeze(utc(2026, 11, 17, 14, 40))
    with session_scope(engine) as session:
        mine = reminders.tasks(session, staff.staff_by_code(session, "W-M2"))
        assert [(t.number, t.colour, t.clock) for t in mine] == [(first, "red", "response"),
                                                                 (second, "green", "resolution")]
        actions.report_done(session, actions.get_case(session, second), actor="w", note="好了")
    with session_scope(engine) as session:
        assert [t.number for t in reminders.tasks(session, staff.staff_by_code(session, "W-M2"))] == [first]
        leader = reminders.tasks(session, staff.staff_by_code(session, "W-C"))
        assert [(t.number, t.clock) for t in leader] == [(second, "check")]
        assert reminders.tasks(session, staff.staff_by_code(session, "W-A")) == []
