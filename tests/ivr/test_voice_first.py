"""A hotline you just talk to (issue 25): the greeting ends in an open question, what the
caller says first decides the path, confirmations are answered by voice. Signed webhooks
from the simulator, the Media Streams socket with real audio, the fake transcriber for
what the Mandarin caller says (``say``: free recognition, ``say_in_grammar``: the answers'
grammar pass)."""

from __future__ import annotations

import pytest
from sqlmodel import select

from core.cases.models import CallSession, CaseStatus
from core.platform.db import session_scope
from ivr import calls
from ivr.flow import read_digits
from ivr.simulator import CallScript, Turn
from ivr.state import Call
from speech_models.audio import read_wav

from .conftest import KNOWN_PHONE, UNKNOWN_PHONE, start_rig, tone

GREETING_END = "请直接说您要反映的问题。"
KEYS = "也可以按键：反映问题按1，查询进度按2，转人工按0。"


def spoken(number: str) -> str:
    """A case number as a caller says it: 幺 for 1, in groups of three or four."""
    said = read_digits(number, {"numbers": {"digits": list("零幺二三四五六七八九"), "separator": ""}})
    return " ".join(said[i:i + 4] for i in range(0, len(said), 4))


async def file_one(rig, fake_speech, phone: str = KNOWN_PHONE, words: str = "小区 门口 的 路灯 坏 了") -> str:
    fake_speech.say(words)
    fake_speech.say_in_grammar("对")
    result = await rig.simulator().call(CallScript(from_number=phone, turns=[Turn(tone(3), end="silence"),
                                                                             Turn(tone(0.6), end="silence")]))
    assert result.case_number
    return result.case_number


async def test_a_caller_who_never_presses_a_key_files_a_case_and_hears_its_number(rig, fake_speech):
    """The bug of the issue: a caller who talks after the greeting and never presses a key
    (nor answers the read-back) heard the menu four times and got no case."""
    fake_speech.say("小区 门口 的 路灯 坏 了 好 几 天 了")
    result = await rig.simulator().call(CallScript(from_number=KNOWN_PHONE, turns=[Turn(tone(8), end="silence")]))
    first = result.heard[0]
    assert "幸福社区" in first and first.endswith(GREETING_END)
    assert not any("请按1" in h or "没有听到您按键" in h for h in result.heard)
    assert sum("您反映的是：小区门口的路灯坏了好几天了" in h for h in result.heard) == 2  # no answer: asked twice
    (case,) = rig.cases()
    assert result.case_number == case.number
    assert case.description == "小区门口的路灯坏了好几天了"
    assert "transcript_unconfirmed" in case.flags  # nobody said 对: filed, flagged
    (recording,) = rig.recordings(case)  # the first turn is the petition's recording, from its first moment
    assert recording.name.endswith("petition-1.wav") and read_wav(recording).duration >= 8.0
    assert sum("编号是" in h for h in result.heard) == 2
    session = rig.call_session(result.call_sid)
    assert session.outcome == "case_filed" and session.state["stage"] == "filed"


async def test_spoken_yes_confirms_through_the_grammar_pass(rig, fake_speech):
    fake_speech.say("楼道 灯 不亮")
    fake_speech.say_in_grammar("是的")
    result = await rig.simulator().call(CallScript(from_number=KNOWN_PHONE, turns=[
        Turn(tone(3), end="silence"), Turn(tone(0.6), end="silence")]))
    assert sum("您反映的是：楼道灯不亮" in h for h in result.heard) == 1
    (case,) = rig.cases()
    assert "transcript_unconfirmed" not in (case.flags or [])
    assert len(rig.recordings(case)) == 1  # the answer's own recording is not the petition's
    # the grammar pass was a recogniser built with the answers' phrase list from the rules data
    phrased = [s for s in fake_speech.streams if s.phrases is not None]
    assert phrased and "对" in phrased[-1].phrases and "不对" in phrased[-1].phrases


async def test_spoken_no_asks_again_and_the_second_words_are_filed(rig, fake_speech):
    fake_speech.say("路灯 有点", "门口 路灯 坏 了")
    fake_speech.say_in_grammar("不对", "对")
    result = await rig.simulator().call(CallScript(from_number=KNOWN_PHONE, turns=[
        Turn(tone(2.5), end="silence"), Turn(tone(0.6), end="silence"),
        Turn(tone(3)), Turn(tone(0.6), end="silence")]))
    assert any("再说一遍您要反映的问题" in h for h in result.heard)
    (case,) = rig.cases()
    assert case.description == "门口路灯坏了"
    assert [p.name.rsplit("-", 1)[-1] for p in rig.recordings(case)] == ["1.wav", "2.wav"]


async def test_words_said_over_the_read_back_are_kept_with_the_case(rig, fake_speech):
    """A caller who goes on talking once the read-back has begun (a pause ended their turn):
    what they said answers nothing, so the read-back is asked again, and their recording is
    attached to the case beside the petition's. A short 对 is not."""
    fake_speech.say("小区 门口 的 路灯 坏 了")
    fake_speech.say_in_grammar("", "对")
    result = await rig.simulator().call(CallScript(from_number=KNOWN_PHONE, turns=[
        Turn(tone(3), end="silence"), Turn(tone(4), end="silence"), Turn(tone(0.6), end="silence")]))
    assert sum("您反映的是：小区门口的路灯坏了" in h for h in result.heard) == 2
    (case,) = rig.cases()
    assert result.case_number == case.number and case.description == "小区门口的路灯坏了"
    kept = [p.name for p in rig.recordings(case)]
    assert len(kept) == 2 and kept[0].endswith("petition-1.wav") and "answer" in kept[1], kept
    assert read_wav(rig.recordings(case)[1]).duration >= 4.0


async def test_keys_still_answer_the_read_back(rig, fake_speech):
    """1 and 2 work at the read-back as they did (here pressed while it is said)."""
    fake_speech.say("路灯 有点", "门口 路灯 坏 了")
    result = await rig.simulator().call(CallScript(from_number=KNOWN_PHONE, digits=[None, "2", "1"], turns=[
        Turn(tone(2.5), end="silence"), Turn(tone(3))]))
    (case,) = rig.cases()
    assert case.description == "门口路灯坏了" and "transcript_unconfirmed" not in (case.flags or [])
    assert result.case_number == case.number


async def test_silence_names_the_keys_once_and_words_then_still_file(rig, fake_speech):
    fake_speech.say("", "垃圾 没人 清理")
    result = await rig.simulator().call(CallScript(from_number=KNOWN_PHONE, digits=[None, None, "1"], turns=[
        Turn(None, end="silence"), Turn(tone(3), end="silence")]))
    assert result.heard.count(KEYS) == 1
    assert result.heard[0].endswith(GREETING_END) and KEYS not in result.heard[0]
    (case,) = rig.cases()
    assert case.description == "垃圾没人清理"


async def test_a_key_pressed_during_the_greeting_takes_the_keypad_path(rig, fake_speech):
    fake_speech.say("噪音 扰民")
    result = await rig.simulator().call(CallScript(from_number=KNOWN_PHONE, digits=["1", "1"],
                                                   turns=[Turn(tone(2.5))]))
    assert any("嘀的一声" in h for h in result.heard)  # the classic petition prompt
    (case,) = rig.cases()
    assert case.description == "噪音扰民"


async def test_nothing_said_at_all_ends_without_a_case(rig, fake_speech):
    result = await rig.simulator().call(CallScript(from_number=KNOWN_PHONE))
    assert result.heard.count(KEYS) == 1
    assert rig.cases() == []
    assert rig.call_session(result.call_sid).outcome == "no_petition"


async def test_status_by_voice_with_the_number_said(rig, fake_speech):
    number = await file_one(rig, fake_speech)
    fake_speech.reset()
    fake_speech.say(f"嗯 我 想 查询 一下 {spoken(number)}")
    result = await rig.simulator().call(CallScript(from_number=UNKNOWN_PHONE, turns=[Turn(tone(4), end="silence")]))
    digits = read_digits(number, rig.hotline.flow.prompts)
    assert any(f"编号{digits}的诉求，目前" in h for h in result.heard)
    assert len(rig.cases()) == 1  # the query is no petition
    session = rig.call_session(result.call_sid)
    assert session.outcome == "status_query" and session.state["queried"] == [number]
    assert session.state["segments"]["petition-1"]["intent"] == "status"


async def test_status_by_voice_without_a_number_finds_the_callers_one_open_case(rig, fake_speech):
    number = await file_one(rig, fake_speech)
    fake_speech.reset()
    fake_speech.say("茶询 进度")  # as a recogniser writes 查询进度
    result = await rig.simulator().call(CallScript(from_number=KNOWN_PHONE, turns=[Turn(tone(1.5), end="silence")]))
    digits = read_digits(number, rig.hotline.flow.prompts)
    assert any(f"编号{digits}的诉求，目前" in h for h in result.heard)
    assert not any("请说出受理编号" in h for h in result.heard)


async def test_status_asked_for_a_number_takes_it_said_or_keyed(rig, fake_speech):
    number = await file_one(rig, fake_speech)
    fake_speech.reset()
    fake_speech.say("查询", spoken(number))
    result = await rig.simulator().call(CallScript(from_number=UNKNOWN_PHONE, digits=[None, Turn(tone(3))],
                                                   turns=[Turn(tone(1), end="silence")]))
    assert any("请说出受理编号" in h for h in result.heard)
    digits = read_digits(number, rig.hotline.flow.prompts)
    assert any(f"编号{digits}的诉求，目前" in h for h in result.heard)
    fake_speech.reset()
    keyed = await rig.simulator().call(CallScript(from_number=UNKNOWN_PHONE, digits=["2", f"{number}#"]))
    assert any(f"编号{digits}的诉求，目前" in h for h in keyed.heard)


async def test_asking_for_a_person_reaches_the_operator(rig, fake_speech):
    fake_speech.say("我 要 转 人 工")
    result = await rig.simulator().call(CallScript(from_number=KNOWN_PHONE, operator_answers=True,
                                                   turns=[Turn(tone(1.5), end="silence")]))
    assert "正在为您转接人工服务，请稍候。" in result.heard
    assert any(h.startswith("[dial") for h in result.heard)
    assert rig.cases() == []
    assert rig.call_session(result.call_sid).outcome == "operator"


async def test_operator_not_answering_takes_the_petition(rig, fake_speech):
    fake_speech.say("听 不 懂", "楼下 水管 漏水")
    result = await rig.simulator().call(CallScript(from_number=KNOWN_PHONE, default_digit="1", turns=[
        Turn(tone(1.5), end="silence"), Turn(tone(3))]))
    assert any(h.startswith("[dial") for h in result.heard)
    (case,) = rig.cases()
    assert case.description == "楼下水管漏水"
    assert [p.name.rsplit("-", 1)[-1] for p in rig.recordings(case)] == ["1.wav", "2.wav"]  # kept, not filed as words


async def test_say_it_again_repeats_the_greeting(rig, fake_speech):
    fake_speech.say("再 说 遍", "路灯 坏 了")  # a character dropped by the recogniser
    fake_speech.say_in_grammar("对")
    result = await rig.simulator().call(CallScript(from_number=KNOWN_PHONE, turns=[
        Turn(tone(1), end="silence"), Turn(tone(3), end="silence"), Turn(tone(0.5), end="silence")]))
    assert sum(h.endswith(GREETING_END) and "幸福社区" in h for h in result.heard) == 2
    (case,) = rig.cases()
    assert case.description == "路灯坏了"
    session = rig.call_session(result.call_sid)
    assert session.state["segments"]["petition-1"]["intent"] == "repeat"


async def test_slower_makes_every_later_prompt_slower(rig, fake_speech):
    fake_speech.say("慢 一点", "路灯 坏 了")
    fake_speech.say_in_grammar("对")
    sim = rig.simulator()
    bodies: list[str] = []
    post = sim.post

    async def keep(http, url, params, result):
        body = await post(http, url, params, result)
        bodies.append(body)
        return body

    sim.post = keep
    result = await sim.call(CallScript(from_number=KNOWN_PHONE, turns=[
        Turn(tone(1), end="silence"), Turn(tone(3), end="silence"), Turn(tone(0.5), end="silence")]))
    assert result.case_number
    assert "<prosody" not in bodies[0]
    said_after = [b for b in bodies[1:] if "<Say" in b]
    assert said_after and all('<prosody rate="75%">' in b for b in said_after)  # to the last goodbye
    assert rig.call_session(result.call_sid).state["slow"] is True


async def test_confidential_at_the_read_back_by_voice(rig, fake_speech):
    fake_speech.say("隔壁 邻居 装修 噪音")
    fake_speech.say_in_grammar("保密")
    result = await rig.simulator().call(CallScript(from_number=KNOWN_PHONE, turns=[
        Turn(tone(3), end="silence"), Turn(tone(0.6), end="silence")]))
    assert any("需要为您保密，请说保密或按3" in h for h in result.heard)
    (case,) = rig.cases()
    assert result.case_number == case.number
    call = Call.of(rig.call_session(result.call_sid))
    assert call.state.confidential
    made = calls.petition_of(call, min_speech_s=2.0, hung_up=False, recovered=False, data_dir=rig.settings.data_dir)
    assert made.petition.confidential  # what the intake was given


async def test_confidential_by_key_3(rig, fake_speech):
    fake_speech.say("隔壁 邻居 装修 噪音")
    result = await rig.simulator().call(CallScript(from_number=KNOWN_PHONE, digits=[None, "3"], turns=[
        Turn(tone(3), end="silence")]))
    assert result.case_number
    assert rig.call_session(result.call_sid).state["confidential"] is True


async def test_confidential_said_in_the_petition_itself(rig, fake_speech):
    fake_speech.say("隔壁 邻居 半夜 装修 请 帮 我 保密")
    fake_speech.say_in_grammar("对")
    result = await rig.simulator().call(CallScript(from_number=KNOWN_PHONE, turns=[
        Turn(tone(4), end="silence"), Turn(tone(0.5), end="silence")]))
    assert any("我们会为您保密" in h for h in result.heard)  # the read-back says so, no need to ask
    assert rig.call_session(result.call_sid).state["confidential"] is True
    (case,) = rig.cases()
    assert case.description == "隔壁邻居半夜装修请帮我保密"


async def test_an_unknown_caller_confirms_the_address_by_voice(rig, fake_speech):
    fake_speech.say("楼道 里 的 灯 不亮 了", "阳光 花园 三 幢")
    fake_speech.say_in_grammar("对", "没错")
    result = await rig.simulator().call(CallScript(from_number=UNKNOWN_PHONE, turns=[
        Turn(tone(2.5), end="silence"), Turn(tone(0.5), end="silence"), Turn(tone(1.5)),
        Turn(tone(0.5), end="silence")]))
    assert any("是阳光花园3幢吗？请说对或者不对" in h for h in result.heard)
    (case,) = rig.cases()
    assert case.address_text == "阳光花园3幢" and case.grid_id == rig.district["micro"]
    assert "address_unconfirmed" not in (case.flags or [])


async def test_a_caller_who_hangs_up_while_talking_first_still_has_a_case(rig, fake_speech):
    fake_speech.say("小区 门口 的 路灯 坏 了")
    result = await rig.simulator().call(CallScript(from_number=KNOWN_PHONE, turns=[
        Turn(tone(5), end="hangup", hangup_after_s=4)]))
    assert result.status == "hung_up"
    (case,) = rig.cases()
    assert "caller_hung_up" in case.flags
    assert len(rig.recordings(case)) == 1


@pytest.fixture
async def no_model_rig(engine, tmp_path):
    r = await start_rig(engine, tmp_path, None)
    yield r
    await r.stop()


async def test_no_speech_model_names_the_keys_at_once_and_keys_work(no_model_rig):
    rig = no_model_rig
    result = await rig.simulator().call(CallScript(from_number=KNOWN_PHONE, digits=["1"], turns=[Turn(tone(3))]))
    assert result.heard[0].endswith(GREETING_END) and result.heard[1] == KEYS
    assert any("嘀的一声" in h for h in result.heard)
    (case,) = rig.cases()
    assert result.case_number == case.number and "transcript_pending" in case.flags


async def test_no_speech_model_a_caller_who_just_talks_is_filed(no_model_rig):
    rig = no_model_rig
    result = await rig.simulator().call(CallScript(from_number=KNOWN_PHONE, turns=[Turn(tone(4), end="silence")]))
    (case,) = rig.cases()
    assert result.case_number == case.number and "transcript_pending" in case.flags
    with session_scope(rig.engine) as s:
        row = s.exec(select(CallSession).where(CallSession.call_sid == result.call_sid)).one()
        assert row.case_id == case.id
    assert case.status in (CaseStatus.received, CaseStatus.dispatched)
