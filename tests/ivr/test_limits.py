"""Floods and repeats on the hotline (rules [intake.flood]), end to end with signed webhooks
and a real media stream: a caller is never refused, a repeat is filed and told it joins the
earlier case, a caller over the per-phone limit is filed and told staff will check first."""

from __future__ import annotations

from sqlmodel import select

from core.cases.flood import DUPLICATE, FLOOD
from core.cases.models import CaseEvent, CaseStatus
from core.platform import rules
from core.platform.db import session_scope
from core.platform.rules import reload_rules
from ivr.simulator import CallScript, Turn

from .conftest import KNOWN_PHONE, silence, tone


async def _call(rig, fake_speech, words: str):
    fake_speech.say(words)
    return await rig.simulator().call(CallScript(
        from_number=KNOWN_PHONE, digits=["1", "1"], turns=[Turn(tone(3) + silence(0.5))]))


async def test_a_caller_repeating_a_petition_is_filed_and_told_it_joins_the_earlier_one(rig, fake_speech):
    first = await _call(rig, fake_speech, "小区 门口 的 路灯 坏 了")
    again = await _call(rig, fake_speech, "小区 门口 的 路灯 坏 了")
    assert first.case_number and again.case_number and first.case_number != again.case_number
    assert not any("之前已经反映过" in h for h in first.heard)
    assert any("这个问题您之前已经反映过" in h for h in again.heard)
    assert sum("编号是" in h for h in again.heard) == 2  # the number is still read out, twice
    cases = rig.cases()
    assert [c.status for c in cases] == [CaseStatus.dispatched, CaseStatus.received]
    assert DUPLICATE in cases[1].flags
    with session_scope(rig.engine) as s:
        hold = s.exec(select(CaseEvent).where(CaseEvent.case_id == cases[1].id, CaseEvent.action == "hold")).one()
    assert hold.data["duplicate_of"] == first.case_number
    assert rig.recordings(cases[1])[0].is_file()  # the caller's words are kept, recording and all


async def test_a_caller_over_the_per_phone_limit_is_filed_not_dispatched(rig, fake_speech, tmp_path, monkeypatch):
    path = tmp_path / "flood.toml"
    path.write_text("[intake.flood]\nmax_petitions = 2\n", "utf-8")
    monkeypatch.setenv(rules.RULES_ENV, str(path))
    reload_rules()
    try:
        said = ["小区 门口 的 路灯 坏 了", "三 号 楼 前面 那 盏 路灯 一直 不 亮", "河边 的 路灯 坏 了"]
        calls = [await _call(rig, fake_speech, words) for words in said]
    finally:
        monkeypatch.delenv(rules.RULES_ENV)
        reload_rules()
    assert all(c.case_number for c in calls)  # never refused
    assert any("您近期反映的问题比较多" in h for h in calls[2].heard)
    assert not any("您近期反映的问题比较多" in h for c in calls[:2] for h in c.heard)
    cases = rig.cases()
    assert len(cases) == 3
    assert cases[2].status == CaseStatus.received and FLOOD in cases[2].flags
    assert all(c.status == CaseStatus.dispatched and not c.flags for c in cases[:2])
