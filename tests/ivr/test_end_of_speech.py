"""Our own end-of-speech detection ends the caller's turn (issue 25: the caller's last word →
the next prompt). The instance holding the Media Streams socket hears the caller speak and
go quiet, and moves the call on with a live redirect through the real ``twilio`` REST client
to the fake Twilio (``tests/support/fake_twilio.py``), which has the simulator abandon its
<Record> and request the turn's webhook, signed. Twilio's own quiet and # stay the fallback.
What ended each turn is read from the simulator's ``turn_ends``, never from timings."""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import aiohttp
import pytest
from sqlmodel import select

from core.cases.models import CallSession
from core.places.address import spoken
from core.platform.db import session_scope
from ivr.config import FlowConfig
from ivr.flow import read_digits
from ivr.loudness import EndOfSpeech, frame_rms
from ivr.simulator import CallScript, Turn, audio_frames
from tests.support.fake_twilio import Callee, FakeTwilio

from . import test_address
from .conftest import KNOWN_PHONE, TOKEN, UNKNOWN_PHONE, silence, start_rig, tone, wait_until
from .survey_rig import RESIDENT_E164
from .test_address import CALLER as ADDRESS_CALLER
from .test_address import CHOICE

places = test_address.places  # the demo district's places (a fixture)

# Twilio's own quiet at the open question, as packaged: our detection must beat it by far.
FLOW = FlowConfig.load(stream={"hangup_grace_s": 0.3}, petition={"wait_s": 3.0}, confirm={"silence_s": 3})


async def socket_and_webhook_instances(engine, tmp_path, speech, fake):  # noqa: ANN001, ANN201
    """Instances A and B on one database behind B's public URL, both able to redirect a call
    through the fake Twilio: the tests send the caller's audio to A and every webhook to B."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    b = await start_rig(engine, tmp_path / "b", speech, flow=FLOW, twilio_account_sid=fake.account_sid,
                        twilio_api_url=fake.base_url)
    a = await start_rig(engine, tmp_path / "a", speech, flow=FLOW, district=b.district, public_url=b.url,
                        twilio_account_sid=fake.account_sid, twilio_api_url=fake.base_url)
    return a, b


@pytest.fixture
async def fake():
    async with FakeTwilio(auth_token=TOKEN) as twilio:
        yield twilio


@pytest.fixture
async def live_rig(engine, tmp_path, fake_speech, fake):
    """The hotline with the account's credentials: end-of-speech detection is on."""
    r = await start_rig(engine, tmp_path, fake_speech, flow=FLOW, twilio_account_sid=fake.account_sid,
                        twilio_api_url=fake.base_url)
    yield r
    await r.stop()


def mandarin(pinyin: str, tmp_path) -> bytes:
    """espeak-ng reading pinyin with tone numbers, as µ-law, from its first word to its last."""
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng not installed")
    path = tmp_path / "said.wav"
    subprocess.run(["espeak-ng", "-v", "cmn-latn-pinyin", "-a", "150", "-w", str(path), pinyin], check=True,
                   capture_output=True)
    mulaw = b"".join(audio_frames(path))
    loud = (frame_rms(mulaw) > 300).nonzero()[0]
    return mulaw[loud[0] * 160:(loud[-1] + 1) * 160]


def simulator(rig, fake):
    return fake.carry(rig.simulator())


def how(result) -> list[tuple[str, str]]:
    """(how each turn ended, the webhook path it went to)."""
    return [(by, url.split("?")[0].rsplit("/twilio/", 1)[-1]) for by, url in result.turn_ends]


def test_the_detector_wants_speech_after_the_prompt_then_quiet():
    loud, quiet = tone(0.6), silence(1.2)
    eos = EndOfSpeech(300, quiet_s=1.0, min_speech_s=0.5, arm_s=2.0)
    assert not eos.feed(loud + quiet)  # said over the prompt: not the turn
    assert not eos.feed(tone(0.3) + quiet)  # a cough is not enough
    assert not eos.feed(tone(0.4) + silence(0.8))  # a pause shorter than the quiet window
    assert eos.feed(tone(0.5) + silence(1.0))  # the words go on, then the whole quiet window
    assert not eos.feed(quiet)  # once


async def test_the_turn_ends_on_our_quiet_not_twilios(live_rig, fake_speech, fake, tmp_path):
    """The caller says the petition, pausing mid-sentence, and goes quiet: the open question
    and the read-back's 对 are each ended by our redirect, long before Twilio's quiet would
    have; one case, with every word."""
    fake_speech.say("小区 门口 的 路灯 坏 了 好 几 天 了")
    fake_speech.say_in_grammar("对")
    first, then = mandarin("xiao3 qu1 men2 kou3 de5", tmp_path), mandarin("lu4 deng1 huai4 le5 hao3 ji3 tian1 le5",
                                                                          tmp_path)
    petition = first + silence(0.8) + then  # a pause shorter than the quiet window does not end it
    result = await simulator(live_rig, fake).call(CallScript(from_number=KNOWN_PHONE, turns=[
        Turn(petition, end="silence"), Turn(mandarin("dui4", tmp_path), end="silence")]))
    assert how(result) == [("redirect", "open/done"), ("redirect", "petition/confirm")]
    assert [url.split("?", 1)[1] for _, url in fake.redirects] == ["seg=petition-1&by=eos", "seg=answer-1&by=eos"]
    assert sum("您反映的是：小区门口的路灯坏了好几天了" in h for h in result.heard) == 1
    (case,) = live_rig.cases()
    assert result.case_number == case.number and "transcript_unconfirmed" not in (case.flags or [])
    (recording,) = live_rig.recordings(case)
    session = live_rig.call_session(result.call_sid)
    spoken = (frame_rms(petition) > 300).sum() * 0.02
    assert session.state["segments"]["petition-1"]["speech_s"] >= spoken - 0.02  # both halves of the sentence
    assert recording.name.endswith("petition-1.wav")
    assert live_rig.hotline.registry.stats["turns_ended_by_us"] == 2


async def test_a_redirect_that_loses_the_race_to_twilios_own_end_changes_nothing(live_rig, fake_speech, fake):
    """Our redirect reaches the call only after <Record>'s own quiet ended the turn and was
    answered: the second end of the same turn is answered with the first one's TwiML, so the
    read-back is asked once, one case is filed, and no word is lost."""
    fake_speech.say("楼道 灯 不亮 了")
    fake_speech.say_in_grammar("对")
    release = fake.hold_updates()
    sim = simulator(live_rig, fake)
    script = CallScript(from_number=KNOWN_PHONE, call_sid="CA" + "e0" * 16, turns=[
        Turn(tone(2.5), end="silence"),  # Twilio's quiet ends it: our redirect is held at "Twilio"
        Turn(None, end="silence")])  # listening to the read-back when the redirect lands (or fetching it)
    task = asyncio.create_task(sim.call(script))
    try:
        await wait_until(lambda: fake.redirects, what="our redirect asked for")
        await wait_until(lambda: live_rig.call_session(script.call_sid).state.get("replies", {}).get("petition-1"),
                         what="the open turn ended by Twilio's own quiet, and answered")
    finally:
        release.set()
    result = await task
    ends = how(result)
    assert ends[:2] == [("quiet", "open/done"), ("redirect", "open/done")], ends
    assert {path for _, path in ends[2:]} <= {"petition/confirm"}, ends
    first, second = [body for (url, _), body in zip(result.requests, result.bodies, strict=True)
                     if "/twilio/open/done" in url]
    assert first == second and "answer-1" in first
    session = live_rig.call_session(result.call_sid)
    assert [name for name in session.state["segments"] if name.startswith("answer-")] == ["answer-1"]
    # the read-back once or twice (Twilio abandoned it while fetching, or while playing it), never another
    assert 1 <= sum("您反映的是：楼道灯不亮了" in h for h in result.heard) <= 2
    (case,) = live_rig.cases()
    assert case.description == "楼道灯不亮了" and result.case_number == case.number
    assert "transcript_unconfirmed" not in (case.flags or [])
    assert session.state["segments"]["petition-1"]["speech_s"] >= 2.4
    assert len(live_rig.recordings(case)) == 1


async def test_a_late_second_end_of_a_turn_is_answered_as_the_first(live_rig, fake_speech, fake):
    """Twilio's own end (a #) of a turn our redirect already ended, arriving after the call
    moved on: the same answer again, no new question, no second case."""
    fake_speech.say("井盖 丢 了")
    fake_speech.say_in_grammar("对")
    sim = simulator(live_rig, fake)
    result = await sim.call(CallScript(from_number=KNOWN_PHONE, turns=[
        Turn(tone(2.5), end="silence"), Turn(tone(0.4), end="silence")]))
    assert how(result)[0] == ("redirect", "open/done")
    url, params = next((u, p) for u, p in result.requests if "/twilio/open/done" in u)
    late = url.replace("&by=eos", "")
    body = await sim.post(sim_http := aiohttp.ClientSession(), late, dict(params, Digits="#"), result)
    await sim_http.close()
    assert body == result.bodies[result.requests.index((url, params))]
    session = live_rig.call_session(result.call_sid)
    assert [name for name in session.state["segments"] if name.startswith("answer-")] == ["answer-1"]
    assert len(live_rig.cases()) == 1


async def test_a_failed_redirect_leaves_the_turn_to_twilios_quiet(live_rig, fake_speech, fake):
    fake_speech.say("垃圾 没人 清理")
    fake_speech.say_in_grammar("对")
    fake.fail_next(500, operation="update", times=5)
    result = await simulator(live_rig, fake).call(CallScript(from_number=KNOWN_PHONE, turns=[
        Turn(tone(2.5), end="silence"), Turn(tone(0.4), end="#")]))
    assert how(result)[0] == ("quiet", "open/done")
    (case,) = live_rig.cases()
    assert case.description == "垃圾没人清理" and result.case_number == case.number
    assert live_rig.hotline.registry.stats["turn_end_failures"] >= 1
    assert live_rig.hotline.registry.stats["turns_ended_by_us"] == 0


async def test_without_credentials_the_flow_is_twilios_quiet_as_before(rig, fake_speech, fake):
    """The rig without an account sid: no end-of-speech parameters in the TwiML, no REST call."""
    fake_speech.say("噪音 扰民")
    fake_speech.say_in_grammar("对")
    result = await simulator(rig, fake).call(CallScript(from_number=KNOWN_PHONE, turns=[
        Turn(tone(2.5), end="silence"), Turn(tone(0.4), end="silence")]))
    assert how(result) == [("quiet", "open/done"), ("quiet", "petition/confirm")]
    assert not [r for r in fake.requests if r.operation == "update"]
    assert all('name="end"' not in body for body in result.bodies)
    (case,) = rig.cases()
    assert case.description == "噪音扰民"


async def test_the_instance_holding_the_socket_redirects_and_another_serves_the_webhook(engine, tmp_path, fake,
                                                                                       fake_speech):
    """Two instances behind one public URL: the caller's audio goes to A, every webhook to B.
    A hears the end of speech and asks Twilio to move the call; B ends the turn with the
    words A handed over."""
    a, b = await socket_and_webhook_instances(engine, tmp_path, fake_speech, fake)
    try:
        fake_speech.say("井盖 丢 了 很 危险")
        sim = simulator(b, fake)
        sim.stream_server = a.url
        result = await sim.call(CallScript(from_number=KNOWN_PHONE, digits=[None, "1"], turns=[
            Turn(mandarin("jing3 gai4 diu1 le5 hen3 wei1 xian3", tmp_path), end="silence")]))
        assert how(result)[0] == ("redirect", "open/done")
        assert all(url.startswith(b.url) for url, _ in result.requests)  # every webhook went to B
        assert a.hotline.registry.stats["turns_ended_by_us"] == 1  # … and A, with the socket, redirected
        assert b.hotline.registry.stats["turns_ended_by_us"] == 0
        assert a.hotline.registry.of_call(result.call_sid) and not b.hotline.registry.of_call(result.call_sid)
        (case,) = b.cases()
        assert case.description == "井盖丢了很危险" and result.case_number == case.number
    finally:
        await a.stop()
        await b.stop()


async def test_a_survey_answer_said_ends_on_our_quiet(srig, fake, fake_speech, tmp_path):
    """The follow-up call: 解决了 and 满意, each said and followed by quiet, end their answer
    turns by our redirect, not the keypad's 5 s wait; so does the spoken comment (not
    <Record>'s 4 s of silence); the answers and the comment are recorded once."""
    fake.live_outbound = True
    case = srig.verified_case()
    survey = srig.survey(case.id)
    fake_speech.say_in_grammar("解决了", "满意")
    fake_speech.say("师傅 很 好")
    fake.callee(RESIDENT_E164, Callee("human", digits=[Turn(mandarin("jie3 jue2 le5", tmp_path)),
                                                       Turn(mandarin("man3 yi4", tmp_path))],
                                      speech=[tone(1.0)], end="silence"))
    await srig.run_calls()
    row = await srig.call_over(survey.id, 1, timeout=60)
    result = fake.played[row.call_sid]
    assert [(by, "/key?" in url and "by=eos" in url) for by, url in result.turn_ends[:2]] == [("redirect", True)] * 2
    (by, url), = result.turn_ends[2:]
    assert by == "redirect" and "/comment?" in url and "by=eos" in url
    survey = srig.survey(case.id)
    assert (survey.solved, survey.satisfied) == ("solved", "satisfied")
    assert [e.data["answer"] for e in srig.events(case.id, "survey_answer")] == ["solved", "satisfied"]
    (comment,) = srig.events(case.id, "survey_comment")  # taken once, with its words and its recording
    assert survey.comment == comment.reason == "师傅很好" and comment.data["attached"]


# -- the spoken case number and "是A，还是B？" (a Gather with keys, answered by key or voice) ------

def number_said_in_groups() -> bytes:
    """Ten digits said in three groups, pausing between them (shorter than number_quiet_s)."""
    return tone(0.9) + silence(0.4) + tone(0.9) + silence(0.4) + tone(0.5)


async def _file_one(rig, fake_speech, fake) -> str:
    fake_speech.say("小区 门口 的 路灯 坏 了")
    fake_speech.say_in_grammar("对")
    result = await simulator(rig, fake).call(CallScript(from_number=KNOWN_PHONE, turns=[
        Turn(tone(2.5), end="silence"), Turn(tone(0.4), end="silence")]))
    assert result.case_number
    fake_speech.reset()
    return result.case_number


async def test_a_case_number_said_in_groups_ends_on_our_quiet(live_rig, fake_speech, fake):
    """查询, then the number asked for and said in groups with pauses: the pauses between the
    groups do not end the turn; the quiet after the last group does, by our redirect, not the
    keypad's timeout; the status read is the number said."""
    number = await _file_one(live_rig, fake_speech, fake)
    fake_speech.say("查询", spoken(number))
    result = await simulator(live_rig, fake).call(CallScript(from_number=UNKNOWN_PHONE, digits=[
        None, Turn(number_said_in_groups())], turns=[Turn(tone(1.0), end="silence")]))
    assert any("请说出受理编号" in h for h in result.heard)
    assert ("redirect", "case-status") in how(result) and ("quiet", "case-status") not in how(result)
    assert any(url.endswith("/twilio/case-status?seg=number-1&by=eos") for _, url in fake.redirects)
    digits = read_digits(number, live_rig.hotline.flow.prompts)
    # read once (the sentence said [prompts] repeat times), not again for a second end
    assert sum(f"编号{digits}的诉求，目前" in h for h in result.heard) == live_rig.hotline.flow.repeat
    session = live_rig.call_session(result.call_sid)
    assert [n for n in session.state["segments"] if n.startswith("number-")] == ["number-1"]
    assert session.state["queried"] == [number] and session.outcome == "status_query"


async def test_keys_racing_our_redirect_of_a_case_number_get_one_answer(live_rig, fake_speech, fake):
    """The number keyed with # after our redirect ended the said turn (the two crossing): the
    keys get the first end's TwiML, the status is looked up once."""
    number = await _file_one(live_rig, fake_speech, fake)
    fake_speech.say("查询", spoken(number))
    sim = simulator(live_rig, fake)
    result = await sim.call(CallScript(from_number=UNKNOWN_PHONE, digits=[None, Turn(number_said_in_groups())],
                                       turns=[Turn(tone(1.0), end="silence")]))
    url, params = next((u, p) for u, p in result.requests if "/twilio/case-status" in u and "by=eos" in u)
    keyed = url.replace("&by=eos", "")
    async with aiohttp.ClientSession() as http:
        body = await sim.post(http, keyed, dict(params, Digits=number, FinishedOnKey="#"), result)
    assert body == result.bodies[result.requests.index((url, params))]
    session = live_rig.call_session(result.call_sid)
    assert session.state["queried"] == [number]


async def test_keys_still_answer_the_number_question_at_once(live_rig, fake_speech, fake):
    number = await _file_one(live_rig, fake_speech, fake)
    fake_speech.say("查询")
    result = await simulator(live_rig, fake).call(CallScript(from_number=UNKNOWN_PHONE, digits=[None, f"{number}#"],
                                                             turns=[Turn(tone(1.0), end="silence")]))
    digits = read_digits(number, live_rig.hotline.flow.prompts)
    assert any(f"编号{digits}的诉求，目前" in h for h in result.heard)
    assert not any("case-status" in url for _, url in fake.redirects)


@pytest.fixture
async def live_demo_rig(engine, tmp_path, fake_speech, fake, places):
    r = await start_rig(engine, tmp_path, fake_speech, flow=FLOW, district=places,
                        twilio_account_sid=fake.account_sid, twilio_api_url=fake.base_url)
    yield r
    await r.stop()


def stage_of(rig, call_sid: str) -> str | None:
    with session_scope(rig.engine) as session:
        row = session.exec(select(CallSession).where(CallSession.call_sid == call_sid)).first()
        return row.state.get("stage") if row is not None else None


def _choice_call(answer: str | Turn) -> CallScript:
    """Key 1 at the greeting, a petition (read back, 1), an address naming two buildings, then
    ``answer`` to "是A，还是B？"."""
    return CallScript(from_number=ADDRESS_CALLER, digits=["1", "1", answer],
                      turns=[Turn(tone(2.5), end="silence"), Turn(tone(1.5), end="silence")])


async def test_a_choice_said_ends_on_our_quiet(live_demo_rig, fake_speech, fake, places):
    """"是洋坊新村一幢，还是九幢？" answered 九幢: the caller's short quiet ends it, by our
    redirect, not the keypad's timeout; the place is the one said. A key pressed as the
    redirect lands (the two crossing) gets the same answer: one choice, one case."""
    # the open question's stream hears the greeting's quiet (key 1 ends it): no words
    fake_speech.say("", "楼道 里 的 灯 不亮 了", "洋坊 新村 一 幢 和 九 幢", "九 幢")
    sim = simulator(live_demo_rig, fake)
    result = await sim.call(_choice_call(Turn(tone(0.8))))
    assert any(CHOICE in h for h in result.heard)
    assert ("redirect", "address/choice") in how(result) and ("quiet", "address/choice") not in how(result)
    (case,) = live_demo_rig.cases()
    assert result.case_number == case.number and case.grid_id == places["building"]
    address = live_demo_rig.call_session(result.call_sid).state["address"]
    assert (address["chosen"], address["chosen_by"]) == (2, "voice")
    url, params = next((u, p) for u, p in result.requests if "/twilio/address/choice" in u and "by=eos" in u)
    async with aiohttp.ClientSession() as http:
        body = await sim.post(http, url.replace("&by=eos", ""), dict(params, Digits="1"), result)
    assert body == result.bodies[result.requests.index((url, params))]
    address = live_demo_rig.call_session(result.call_sid).state["address"]
    assert (address["chosen"], address["chosen_by"]) == (2, "voice")
    (again,) = live_demo_rig.cases()
    assert again.grid_id == places["building"]


async def test_a_key_still_answers_the_choice(live_demo_rig, fake_speech, fake, places):
    fake_speech.say("", "楼道 里 的 灯 不亮 了", "洋坊 新村 一 幢 和 九 幢")
    result = await simulator(live_demo_rig, fake).call(_choice_call("1"))
    (case,) = live_demo_rig.cases()
    assert result.case_number == case.number and case.grid_id == places["other_building"]
    address = live_demo_rig.call_session(result.call_sid).state["address"]
    assert (address["chosen"], address["chosen_by"]) == (1, "key")
    assert not any("address/choice" in url for _, url in fake.redirects)


async def test_the_keypad_timeout_racing_our_redirect_of_a_choice_gets_one_answer(live_demo_rig, fake_speech, fake,
                                                                                   places):
    """Our redirect reaches the call only after the choice's keypad timed out and was
    answered: the late redirect gets the same TwiML; one choice, one case."""
    fake_speech.say("", "楼道 里 的 灯 不亮 了", "洋坊 新村 一 幢 和 九 幢", "九 幢")
    sim = simulator(live_demo_rig, fake)
    script = _choice_call(Turn(tone(0.8)))
    script.call_sid = "CA" + "c4" * 16
    released = None
    task = asyncio.create_task(sim.call(script))
    try:
        await wait_until(lambda: stage_of(live_demo_rig, script.call_sid) == "address_choice",
                         what="the choice asked")
        released = fake.hold_updates()  # the choice's redirect is held at "Twilio"
        await wait_until(lambda: any("address/choice" in url for _, url in fake.redirects),
                         what="our redirect of the choice asked for", timeout=30)
        await wait_until(lambda: live_demo_rig.call_session(script.call_sid).state.get("replies", {})
                         .get("address-choice-1"), what="the choice ended by the keypad's timeout, and answered",
                         timeout=30)
        # held until the call is over: on a busy machine the rest of the call may still be
        # playing when the redirect is let go, and it would land in the call (tested below
        # by posting it as Twilio would)
        await asyncio.wait_for(asyncio.shield(task), timeout=60)
    finally:
        if released is not None:
            released.set()
    result = await task
    assert [e for e in how(result) if e[1] == "address/choice"] == [("quiet", "address/choice")], how(result)
    # the held redirect, as Twilio makes it when it lands (the call may be over by then)
    (late,) = [url for _, url in fake.redirects if "address/choice" in url]
    url, params = next((u, p) for u, p in result.requests if "/twilio/address/choice" in u)
    async with aiohttp.ClientSession() as http:
        body = await sim.post(http, late, {k: v for k, v in params.items() if k != "Digits"}, result)
    assert body == result.bodies[result.requests.index((url, params))]
    (case,) = live_demo_rig.cases()
    assert result.case_number == case.number and case.grid_id == places["building"]
    address = live_demo_rig.call_session(result.call_sid).state["address"]
    assert (address["chosen"], address["chosen_by"]) == (2, "voice")
