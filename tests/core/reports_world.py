"""Two months of a small district for the dashboard and report tests: cases in October and
November 2026 (local time) on every channel, two categories, two micro grids, on-time and
late responses and reports, a satisfied and a dissatisfied survey, an escalation, a case
overdue now, a merged duplicate, a case no one has placed, two places that complained
twice. Built only through ``core.actions`` (as the channels do), with a frozen clock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import select

from core import actions
from core.cases.models import Channel
from core.followup.models import Survey
from core.platform import clock
from core.platform.db import session_scope
from tests.core.district import District, build_district

# Naive UTC; the district is Asia/Shanghai (+8). Nov 2026 = [2026-10-31 16:00, 2026-11-30 16:00) UTC.
OCT = datetime(2026, 10, 12, 1, 0)  # Monday 09:00 local
NOV = datetime(2026, 11, 16, 1, 0)  # Monday 09:00 local
NOW = datetime(2026, 12, 2, 2, 0)   # when the figures are read (a Wednesday)
NOV_BOUNDS = (datetime(2026, 10, 31, 16, 0), datetime(2026, 11, 30, 16, 0))
OCT_BOUNDS = (datetime(2026, 9, 30, 16, 0), datetime(2026, 10, 31, 16, 0))
ADDRESS = "洋坊新村9幢门口"


@dataclass
class ReportsWorld:
    district: District
    numbers: dict[str, str]


def build_reports_world(engine) -> ReportsWorld:
    with session_scope(engine) as session:
        district = build_district(session)
    micro1, micro2 = district.grids["micro1"].id, district.grids["micro2"].id
    resident = district.resident.id
    numbers: dict[str, str] = {}

    def new(name: str, channel: Channel, category: str | None = "streetlight", **kw) -> int:
        with session_scope(engine) as session:
            case, _ = actions.submit_petition(session, actions.Petition(
                channel=channel, description=f"{name}: 路灯坏了 13800138000", category_code=category, **kw),
                actor="test")
            numbers[name] = case.number
            return case.id

    def step(case_id: int, fn, **kw) -> None:  # noqa: ANN001
        with session_scope(engine) as session:
            fn(session, actions.get_case(session, case_id), **kw)

    def answer(case_id: int, satisfied: str) -> None:
        with session_scope(engine) as session:
            survey = session.exec(select(Survey).where(Survey.case_id == case_id, Survey.status == "pending")).one()
            actions.record_survey(session, survey, solved="solved" if satisfied != "not" else "not",
                                  satisfied=satisfied)

    def work(case_id: int, grid_id: int, *, accept_after: timedelta, done_after: timedelta,
             satisfied: str | None = None) -> None:
        start = clock.utcnow()
        step(case_id, actions.dispatch, actor="op", grid_id=grid_id)
        clock.freeze(start + accept_after)
        step(case_id, actions.accept, actor="w")
        clock.freeze(start + done_after)
        step(case_id, actions.report_done, actor="w", note="已修好")
        step(case_id, actions.verify, actor="leader")
        if satisfied:
            answer(case_id, satisfied)
        clock.freeze(start)

    # October: one closed satisfied, one closed by the operator, one still in triage.
    clock.freeze(OCT)
    o1 = new("oct_done", Channel.hotline, contact_phone="+8613800138000")
    work(o1, micro1, accept_after=timedelta(minutes=20), done_after=timedelta(hours=3), satisfied="satisfied")
    o2 = new("oct_not_petition", Channel.chat)
    step(o2, actions.close, actor="op", reason="not_a_petition")
    new("oct_triage", Channel.hotline, category=None)

    # November.
    clock.freeze(NOV)
    n1 = new("nov_ok", Channel.hotline, contact_phone="+8613800138000", resident_id=resident)
    work(n1, micro1, accept_after=timedelta(minutes=30), done_after=timedelta(hours=5), satisfied="satisfied")
    n2 = new("nov_late", Channel.chat, resident_id=resident)
    work(n2, micro1, accept_after=timedelta(days=1), done_after=timedelta(days=9), satisfied="not")  # reopened
    n3 = new("nov_escalated", Channel.hotline, category="flying_lead", contact_phone="+8613911112222")
    step(n3, actions.dispatch, actor="op", grid_id=micro2)
    clock.freeze(NOV + timedelta(hours=2))
    step(n3, actions.escalate, actor="system", reason="超时未签收")  # to the area: overdue by NOW
    clock.freeze(NOV + timedelta(hours=3))
    new("nov_open311", Channel.open311, category="flying_lead", latitude=26.3905, longitude=117.7905)
    n5 = new("nov_repeat_household", Channel.chat, resident_id=resident)  # 2nd streetlight of household H0001
    step(n5, actions.dispatch, actor="op", grid_id=micro1)
    n6 = new("nov_repeat_address_a", Channel.console, address_text=ADDRESS)
    step(n6, actions.dispatch, actor="op", grid_id=micro2)
    clock.freeze(NOV + timedelta(days=1))
    step(n6, actions.accept, actor="w")  # late (4 working hours)
    n7 = new("nov_repeat_address_b", Channel.hotline, address_text=ADDRESS)
    step(n7, actions.dispatch, actor="op", grid_id=micro2)
    n8 = new("nov_duplicate", Channel.chat)
    with session_scope(engine) as session:
        actions.merge(session, actions.get_case(session, n8), actions.get_case(session, n7), actor="op")
    n9 = new("nov_withdrawn", Channel.console, category="flying_lead")
    step(n9, actions.close, actor="op", reason="withdrawn")
    # December, after the period: counted in the trend and the open cases, not in November.
    clock.freeze(NOW - timedelta(hours=1))
    d1 = new("dec_new", Channel.hotline, contact_phone="+8613911113333")
    step(d1, actions.dispatch, actor="op", grid_id=micro1)
    clock.freeze(NOW)
    return ReportsWorld(district, numbers)
