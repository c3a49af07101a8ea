"""Every branch of the call flow, end to end: signed webhooks from the simulator, a real
websocket streaming audio, the fake transcriber for what the caller says."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import select

from core.cases.models import Attachment, CaseEvent, CaseStatus
from core.cases.queries import case_files
from core.deadlines.models import CalendarDay
from core.platform import clock
from core.platform.db import session_scope
from ivr.simulator import CallScript, Turn
from speech_models.audio import read_wav

from .conftest import KNOWN_PHONE, UNKNOWN_PHONE, silence, start_rig, tone


def local(*args) -> datetime:
    """A moment in the district's time zone, as the naive UTC the clock gives."""
    return datetime(*args, tzinfo=ZoneInfo("Asia/Shanghai")).astimezone(ZoneInfo("UTC")).replace(tzinfo=None)


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
    (recording,) = rig.recordings(case)
    assert recording.is_file() and recording.stat().st_size > 3 * 8000 * 2
    with session_scope(rig.engine) as s:  # kept relative to the data directory, which may move
        assert [a.path for a in case_files(s, case.id)] == [recording.relative_to(rig.settings.data_dir).as_posix()]
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


async def test_unknown_caller_gives_address_matched_by_gazetteer(rig, fake_speech):
    fake_speech.say("楼道 里 的 灯 不亮 了", "阳光 花园 三 幢")
    result = await rig.simulator().call(CallScript(
        from_number=UNKNOWN_PHONE, digits=["1", "1", "1"],
        turns=[Turn(tone(2.5)), Turn(tone(1.5))]))
    assert "幸福社区" not in result.heard[0]
    assert any("请说出您的住址" in h for h in result.heard)
    assert any("是阳光花园3幢吗？请说对或者不对，也可以按1或2。" in h for h in result.heard)
    (case,) = rig.cases()
    assert result.case_number == case.number
    assert case.address_text == "阳光花园3幢"
    assert case.grid_id == rig.district["micro"]
    assert case.resident_id is None
    assert "address_unconfirmed" not in (case.flags or [])


async def test_address_not_found_twice_goes_to_triage_with_what_was_heard(rig, fake_speech):
    fake_speech.say("下水道 堵 了", "火星 基地", "月球 背面")
    result = await rig.simulator().call(CallScript(
        from_number=UNKNOWN_PHONE, digits=["1", "1"], turns=[Turn(tone(2.5)), Turn(tone(1)), Turn(tone(1))]))
    assert sum("没有找到这个地址" in h for h in result.heard) == 1
    (case,) = rig.cases()
    assert result.case_number == case.number
    assert case.address_text == "月球背面"
    assert "address_unconfirmed" in case.flags and "needs_triage" in case.flags
    assert case.status == CaseStatus.received


async def test_say_again_replaces_the_transcript_and_keeps_both_recordings(rig, fake_speech):
    fake_speech.say("路灯 有点", "门口 路灯 坏 了")
    result = await rig.simulator().call(CallScript(
        from_number=KNOWN_PHONE, digits=["1", "2", "1"], turns=[Turn(tone(2)), Turn(tone(3))]))
    assert any("再说一遍您要反映的问题" in h for h in result.heard)
    (case,) = rig.cases()
    assert case.description == "门口路灯坏了"
    session = rig.call_session(result.call_sid)
    # petition-1 was the open question, skipped with key 1 (it heard nothing: no file)
    assert session.state["petition"]["attempt"] == 3
    first, second = rig.recordings(case)  # every attempt stays with the case
    assert first.name.endswith("petition-2.wav") and read_wav(first).duration == 2.0
    assert second.name.endswith("petition-3.wav") and read_wav(second).duration == 3.0


async def test_no_key_pressed_the_words_said_are_the_petition(rig, fake_speech):
    """The keypad menu is gone (GB/T 33358-2016: no IVR menu for taking a call): a caller
    who presses nothing is never asked for a key before they may speak."""
    fake_speech.say("垃圾 没人 清理")
    result = await rig.simulator().call(CallScript(
        from_number=KNOWN_PHONE, digits=[None, "1"], turns=[Turn(tone(2.5))]))
    assert not any("请按1" in h or "没有听到您按键" in h for h in result.heard)
    (case,) = rig.cases()
    assert case.description == "垃圾没人清理"


async def test_a_key_that_means_nothing_names_the_keys(rig, fake_speech):
    fake_speech.say("噪音 扰民")
    result = await rig.simulator().call(CallScript(
        from_number=KNOWN_PHONE, digits=["7", "1", "1"], turns=[Turn(tone(2.5))]))
    assert "也可以按键：反映问题按1，查询进度按2，转人工按0。" in result.heard
    assert len(rig.cases()) == 1


async def test_petition_ended_by_silence(rig, fake_speech):
    fake_speech.say("路灯 坏 了")
    result = await rig.simulator().call(CallScript(
        from_number=KNOWN_PHONE, digits=["1", "1"], turns=[Turn(tone(2.5), end="silence")]))
    (case,) = rig.cases()
    assert result.case_number == case.number


async def test_speech_never_recognised_is_still_a_case_with_every_recording(rig, fake_speech):
    """The recogniser heard speech but no words three times: the caller is not sent away,
    the three recordings are the petition (flagged for the operator)."""
    fake_speech.say("", "", "")
    result = await rig.simulator().call(CallScript(
        from_number=KNOWN_PHONE, digits=["1"], turns=[Turn(tone(2.5)), Turn(tone(2.5)), Turn(silence(2))]))
    assert sum(h == "没有听清您说的话。" for h in result.heard) == 2
    (case,) = rig.cases()
    assert result.case_number == case.number
    assert "low_confidence" in case.flags and "transcript_unconfirmed" in case.flags
    # petition-1: the open question, skipped with key 1
    assert [p.name[-14:] for p in rig.recordings(case)] == ["petition-2.wav", "petition-3.wav", "petition-4.wav"]


async def test_an_early_attempt_with_speech_is_filed_when_the_last_is_silent(rig, fake_speech):
    """Only the last attempt used to count: speech in the first, silence in the second and
    third was 'no petition'."""
    fake_speech.say("", "", "")
    result = await rig.simulator().call(CallScript(
        from_number=KNOWN_PHONE, digits=["1"], turns=[Turn(tone(5.6)), Turn(silence(1)), Turn(silence(1))]))
    (case,) = rig.cases()
    assert result.case_number == case.number
    session = rig.call_session(result.call_sid)
    assert session.outcome == "case_filed" and session.speech_seconds >= 5


async def test_nothing_recognised_asks_again(rig, fake_speech):
    fake_speech.say("", "路灯 坏 了")
    result = await rig.simulator().call(CallScript(
        from_number=KNOWN_PHONE, digits=["1", "1"], turns=[Turn(tone(2)), Turn(tone(2.5))]))
    assert "没有听清您说的话。" in result.heard
    (case,) = rig.cases()
    assert case.description == "路灯坏了"


async def test_unanswered_readback_is_filed_flagged_unconfirmed(rig, fake_speech):
    fake_speech.say("路灯 坏 了")
    result = await rig.simulator().call(CallScript(
        from_number=KNOWN_PHONE, digits=["1", None, None], turns=[Turn(tone(2.5))]))
    assert result.case_number
    (case,) = rig.cases()
    assert "transcript_unconfirmed" in case.flags


async def test_low_confidence_transcript_is_flagged_for_review(rig, fake_speech):
    fake_speech.confidence = 0.3
    fake_speech.say("路灯 坏 了")
    await rig.simulator().call(CallScript(from_number=KNOWN_PHONE, digits=["1", "1"], turns=[Turn(tone(2.5))]))
    (case,) = rig.cases()
    assert "low_confidence" in case.flags
    assert case.transcript_confidence == 0.3


async def test_status_of_a_case_is_read_out(rig, fake_speech):
    fake_speech.say("路灯 坏 了")
    first = await rig.simulator().call(CallScript(from_number=KNOWN_PHONE, digits=["1", "1"],
                                                  turns=[Turn(tone(2.5))]))
    (case,) = rig.cases()
    result = await rig.simulator().call(CallScript(from_number=KNOWN_PHONE, digits=["2", case.number + "#"]))
    spoken = [h for h in result.heard if h.startswith("编号")]
    assert spoken and "已派遣" in spoken[0] and "预计" in spoken[0] and "月" in spoken[0]
    assert first.case_number in "".join(spoken[0].split()).translate(
        str.maketrans("零幺二三四五六七八九", "0123456789"))
    assert rig.call_session(result.call_sid).outcome == "status_query"
    assert len(rig.cases()) == 1


async def test_status_of_unknown_number_says_so_then_goodbye(rig):
    result = await rig.simulator().call(CallScript(from_number=KNOWN_PHONE, digits=["2", "999999#", "888#"]))
    assert any("没有找到编号九 九 九 九 九 九的诉求" in h for h in result.heard)
    assert "再见" in result.heard[-1]
    assert rig.cases() == []


async def test_operator_in_service_hours_is_dialled(rig):
    clock.freeze(local(2026, 11, 23, 10, 0))  # a Monday morning
    result = await rig.simulator().call(CallScript(from_number=KNOWN_PHONE, digits=["0"], operator_answers=True))
    assert "[dial +8657188880000]" in result.heard
    assert rig.call_session(result.call_sid).outcome == "operator"
    assert rig.cases() == []


async def test_operator_not_answering_leaves_a_petition(rig, fake_speech):
    clock.freeze(local(2026, 11, 23, 10, 0))
    fake_speech.say("路灯 坏 了")
    result = await rig.simulator().call(CallScript(from_number=KNOWN_PHONE, digits=["0", "1"],
                                                   turns=[Turn(tone(2.5))]))
    assert "人工坐席正忙。请您留下要反映的问题。" in result.heard
    assert len(rig.cases()) == 1


async def test_operator_outside_service_hours_leaves_a_petition(engine, tmp_path, fake_speech):
    from .conftest import start_rig

    rig = await start_rig(engine, tmp_path, fake_speech, service_hours="")
    try:
        fake_speech.say("路灯 坏 了")
        result = await rig.simulator().call(CallScript(from_number=KNOWN_PHONE, digits=["0", "1"],
                                                       turns=[Turn(tone(2.5))]))
        assert "现在不是人工服务时间。请您留下要反映的问题。" in result.heard
        assert not any(h.startswith("[dial") for h in result.heard)
        assert len(rig.cases()) == 1
    finally:
        await rig.stop()


@pytest.mark.parametrize(("when", "open_"), [
    (local(2026, 10, 1, 10, 0), False),  # 国庆节, a Thursday: a holiday on the calendar
    (local(2026, 11, 21, 10, 0), False),  # an ordinary Saturday
    (local(2026, 9, 20, 10, 0), True),  # a Sunday worked to make up for the holiday (调休上班)
    (local(2026, 11, 23, 18, 0), False),  # Monday, after hours
])
async def test_operator_hours_follow_the_working_calendar(engine, tmp_path, fake_speech, when, open_):
    rig = await start_rig(engine, tmp_path, fake_speech)
    try:
        with session_scope(engine) as s:
            s.add(CalendarDay(day=datetime(2026, 10, 1).date(), is_working=False, note="国庆节"))
            s.add(CalendarDay(day=datetime(2026, 9, 20).date(), is_working=True, note="国庆节调休上班"))
        from core.deadlines.sla import invalidate_calendars

        invalidate_calendars()
        rig.hotline.operator_hours = [(datetime(1, 1, 1, 8, 30).time(), datetime(1, 1, 1, 17, 30).time())]
        clock.freeze(when)
        fake_speech.say("路灯 坏 了")
        result = await rig.simulator().call(CallScript(from_number=KNOWN_PHONE, digits=["0", "1"],
                                                       turns=[Turn(tone(2.5))], operator_answers=True))
        assert any(h.startswith("[dial") for h in result.heard) is open_
        assert ("现在不是人工服务时间。请您留下要反映的问题。" in result.heard) is not open_
    finally:
        await rig.stop()


async def test_a_call_stored_in_the_old_state_shape_goes_on(rig, fake_speech):
    """Rows written before the state was typed (string-keyed JSON, absolute paths) are read
    into the typed state: a call in the middle of its read-back finishes normally."""
    from core.cases.models import CallSession

    fake_speech.say("路灯 坏 了")
    first = await rig.simulator().call(CallScript(from_number=KNOWN_PHONE, digits=["1", "1"],
                                                  turns=[Turn(tone(2.5))]))
    wav = rig.recordings(rig.cases()[0])[0]
    old = {"stage": "readback", "caller": {"known": True, "grid_id": rig.district["micro"],
                                           "community": "幸福社区", "resident_id": None},
           "segments": {"petition-1": {"kind": "petition", "audio_path": str(wav), "text": "井盖丢了",
                                       "confidence": 0.9, "speech_s": 2.5, "duration": 2.5, "final": True,
                                       "ended_by": "webhook", "segments": []}},
           "petition": {"segment": "petition-1", "attempt": 1, "confirmed": False},
           "wait_round": 0, "confirm_tries": 0, "menu_tries": 0}
    with session_scope(rig.engine) as s:
        s.add(CallSession(call_sid="CA" + "7" * 32, from_number=KNOWN_PHONE, status="in-progress",
                          stream_token="t", state=old))
    from .test_security import post

    status, body = await post(f"{rig.url}/twilio/petition/confirm",
                              {"CallSid": "CA" + "7" * 32, "Digits": "1", "From": KNOWN_PHONE})
    assert status == 200 and "编号是" in body
    case = rig.cases()[-1]
    assert case.description == "井盖丢了" and case.number != first.case_number
    assert rig.recordings(case) == [wav]
    with session_scope(rig.engine) as s:  # kept relative to the data directory all the same
        assert [a.path for a in case_files(s, case.id)] == [wav.relative_to(rig.settings.data_dir).as_posix()]
