"""Every branch of the call flow, end to end: signed webhooks from the simulator, a real
websocket streaming audio, the fake transcriber for what the caller says."""

from __future__ import annotations

from pathlib import Path

from core.db import session_scope
from core.models import Attachment, CaseEvent, CaseStatus
from ivr.simulator import CallScript, Turn
from sqlmodel import select

from .conftest import KNOWN_PHONE, UNKNOWN_PHONE, silence, tone


async def test_known_caller_files_a_case_without_address(rig, fake_speech):
    fake_speech.say("小区 门口 的 路灯 坏 了")
    result = await rig.simulator().call(CallScript(
        from_number=KNOWN_PHONE, digits=["1", "1"], turns=[Turn(tone(3) + silence(0.5))]))
    assert "幸福社区" in result.heard[0]  # greeted with their community
    assert any("您反映的是：小区门口的路灯坏了" in h for h in result.heard)
    assert not any("住址" in h for h in result.heard)  # a registered household needs no address
    cases = rig.cases()
    assert len(cases) == 1
    case = cases[0]
    assert result.case_number == case.number
    assert case.description == "小区门口的路灯坏了"
    assert case.channel.value == "hotline"
    assert case.contact_phone == KNOWN_PHONE
    assert case.resident_id is not None
    assert case.grid_id == rig.district["micro"]  # routed by the household
    assert case.status == CaseStatus.dispatched
    assert not case.flags or "caller_hung_up" not in case.flags
    assert Path(case.audio_path).is_file() and Path(case.audio_path).stat().st_size > 3 * 8000 * 2
    # the number is read digit by digit, twice
    digits_heard = [h for h in result.heard if "编号是" in h]
    assert len(digits_heard) == 2
    session = rig.call_session(result.call_sid)
    assert session.case_id == case.id and session.outcome == "case_filed"
    assert session.status == "completed" and session.ended_at is not None
    assert session.speech_seconds >= 2.5
    with session_scope(rig.engine) as s:
        att = s.exec(select(Attachment).where(Attachment.case_id == case.id)).one()
        assert att.kind == "recording" and att.sha256
        assert s.exec(select(CaseEvent).where(CaseEvent.case_id == case.id)).first().actor == "hotline"
