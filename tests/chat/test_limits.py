"""Limits through the real chat path (PTB application, HTTP to the fake Bot API): a chat
filing the same petition again and again gets one dispatch and suggested duplicates, none
lost; a text longer than [limits] description is answered with how long it may be."""

from __future__ import annotations

import re

from sqlmodel import select

from core.cases.flood import DUPLICATE
from core.cases.models import Case, CaseEvent, CaseStatus
from core.people.models import Resident
from core.platform.db import session_scope

USER = 5213748800
PROBLEM = "小区门口的路灯坏了，晚上一片漆黑"


def _number(text: str) -> str:
    return re.search(r"\d{10,}", text).group(0)


async def _file_once(h, lat: float, lon: float) -> str:
    await h.say(USER, PROBLEM)
    await h.reply(USER, "问题发生在哪里")
    await h.send(h.fake.make_location_update(lat, lon, user_id=USER))
    await h.reply(USER, "哪一类问题")
    await h.press(USER, "路灯故障")
    await h.reply(USER, "请确认您的诉求")
    await h.press(USER, "✅ 确认提交")
    return (await h.reply(USER, "诉求已受理"))["text"]


async def test_fifteen_identical_petitions_from_one_chat_are_dispatched_once(harness):
    h = harness
    demo = h.extra["demo"]
    h.fake.add_user(USER, "Wei", "Li", language_code="zh-hans")
    lat, lon = demo.point
    answers = [await _file_once(h, lat, lon) for _ in range(15)]

    numbers = [_number(a) for a in answers]
    first = numbers[0]
    assert len(set(numbers)) == 15  # every petition kept, each with its own number
    assert "已派给" in answers[0]
    for answer in answers[1:]:
        # told politely that it joins the earlier case and is not dispatched again
        assert f"您之前反映的 {first} 号诉求相同" in answer and "已派给" not in answer
    with session_scope(h.engine) as session:
        resident = session.exec(select(Resident).where(Resident.chat_id == str(USER))).one()
        cases = session.exec(select(Case).where(Case.resident_id == resident.id).order_by(Case.id)).all()
        assert [c.number for c in cases] == numbers
        assert all(c.description == PROBLEM for c in cases)
        assert cases[0].status == CaseStatus.dispatched and cases[0].worker_id is not None
        assert all(c.status == CaseStatus.received and c.worker_id is None for c in cases[1:])
        assert all(DUPLICATE in c.flags for c in cases[1:])
        dispatches = session.exec(select(CaseEvent).where(CaseEvent.action == "dispatch")).all()
        assert [e.case_id for e in dispatches] == [cases[0].id]
        holds = session.exec(select(CaseEvent).where(CaseEvent.action == "hold")).all()
        assert sorted(e.case_id for e in holds) == [c.id for c in cases[1:]]
        assert {e.data["duplicate_of"] for e in holds} == {first}


async def test_a_text_over_the_limit_is_answered_with_the_limit(harness):
    h = harness
    h.fake.add_user(USER, "Wei", language_code="zh-hans")
    await h.say(USER, "漏" * 4001)
    told = await h.reply(USER, "太长了")
    assert "4001" in told["text"] and "4000" in told["text"]
    # still asked for the problem: a shorter text goes on as usual
    await h.say(USER, "楼上漏水")
    await h.reply(USER, "问题发生在哪里")
    with session_scope(h.engine) as session:
        assert session.exec(select(Case)).all() == []
