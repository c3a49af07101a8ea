"""core.followup.sms: which status changes queue a progress SMS, and to whom."""

from __future__ import annotations

import pytest
from sqlmodel import select

from core import actions
from core.cases.models import Channel
from core.followup.sms import is_opt_out
from core.platform import clock
from core.platform.db import session_scope
from core.platform.models import Job
from tests.core.actions.test_lifecycle import MORNING, district  # noqa: F401  (fixture)


@pytest.mark.parametrize("text, stops", [
    ("退订", True), (" 退 订 ", True), ("TD", True), ("td", True), ("Td\n", True),
    ("不要退订", False), ("谢谢", False), ("", False), (None, False),
])
def test_opt_out_words(text, stops):
    assert is_opt_out(text) is stops


def sms_jobs(engine) -> list[Job]:
    with session_scope(engine) as s:
        return list(s.exec(select(Job).where(Job.kind == "sms_progress")).all())


def filed_and_dispatched(engine, district, **petition):  # noqa: F811
    with session_scope(engine) as s:
        case, _ = actions.submit_petition(s, actions.Petition(**{
            "channel": Channel.hotline, "description": "路灯坏了", "category_code": "streetlight", **petition}))
        actions.dispatch(s, case, actor="op", grid_id=district.grids["micro1"].id)
        return case


def test_a_hotline_caller_on_a_mobile_gets_dispatched_once(engine, district):  # noqa: F811
    clock.freeze(MORNING)
    case = filed_and_dispatched(engine, district, contact_phone="+8613800138000")
    (job,) = sms_jobs(engine)
    assert job.payload == {"case_id": case.id, "status": "dispatched"}
    with session_scope(engine) as s:  # escalated: dispatched again, no second SMS
        actions.escalate(s, actions.get_case(s, case.id), actor="system", reason="超时")
    assert len(sms_jobs(engine)) == 1


@pytest.mark.parametrize("petition", [
    {"contact_phone": "05987512301"},  # a landline
    {"contact_phone": None},  # no number
    {"contact_phone": "+8613800138000", "channel": Channel.chat},  # chat residents hear it in the chat
])
def test_who_gets_none(engine, district, petition):  # noqa: F811
    filed_and_dispatched(engine, district, **petition)
    assert sms_jobs(engine) == []


def test_opted_out_gets_none(engine, district):  # noqa: F811
    with session_scope(engine) as s:
        actions.sms_opt_out(s, actions.find_resident_by_phone(s, "+8613800138000"), actor="resident:sms")
    filed_and_dispatched(engine, district, contact_phone="+8613800138000")
    assert sms_jobs(engine) == []
