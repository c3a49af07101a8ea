"""Words said over 请稍候 are kept (issue 25). A petition turn ends after 0.6 s of quiet; when
its words are not recognised within ``[petition] wait_s`` the caller hears 请稍候 and the
webhook comes back. That wait opens a stream of its own (``wait-N``), watched for barge-in as
the read-back is: a caller who goes on over it moves the call to ``/twilio/petition/more``, the
rest is recorded (``more-N``) and the whole is read back once, joined. A silent caller hears
what they heard before.

The rig of ``test_barge_in`` (signed webhooks, the Media Streams socket, the fake Twilio's live
updates) with a recogniser slow on the first turn: slow enough that 请稍候 is said."""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET
from collections import deque
from dataclasses import dataclass, field

import pytest

from core.cases.queries import case_files
from core.platform.db import session_scope
from core.platform.storage import resolve
from ivr.simulator import CallScript, Turn
from tests.support.fake_transcriber import FakeTranscriber

from .conftest import KNOWN_PHONE, wait_until
from .test_barge_in import (
    FIRST,
    JOINED,
    THEN,
    caller,
    killed_while_the_rest_is_said,
    pausing_petition,
    segments,
    spoken_s,
)
from .test_end_of_speech import (  # noqa: F401 (fixtures)
    FLOW,
    fake,
    how,
    live_rig,
    mandarin,
    socket_and_webhook_instances,
)

PLEASE_WAIT = "请稍候。"
FIRST_TURN_S = 4.5  # the first turn's words take this long: longer than the rig's wait_s (3 s)


@dataclass
class SlowFirstTurn(FakeTranscriber):
    """The fake recogniser, slow to finish the streams it is told to (in the order opened)."""

    slow: deque = field(default_factory=deque)

    def open_stream(self, *args, **kw):
        stream = super().open_stream(*args, **kw)
        delay = self.slow.popleft() if self.slow else 0.0
        if delay:
            done = stream.finish

            def finish():
                time.sleep(delay)  # in a speech worker thread, as a busy decoder is
                return done()

            stream.finish = finish
        return stream


@pytest.fixture
def fake_speech() -> SlowFirstTurn:
    return SlowFirstTurn(confidence=0.9, slow=deque([FIRST_TURN_S]))


def names(rig, case) -> list[str]:
    return [p.name.rsplit("-", 2)[-2] + "-" + p.name.rsplit("-", 1)[-1] for p in rig.recordings(case)]


def verbs(body: str) -> list[tuple[str, str]]:
    """What the caller hears and where the call goes, streams left out."""
    return [(v.tag, "".join(v.itertext()) + (v.get("length") or "")) for v in ET.fromstring(body)
            if v.tag not in ("Start", "Stop")]


async def test_a_caller_who_goes_on_over_please_wait_is_kept_and_read_back_whole(
        live_rig, fake_speech, fake, tmp_path):  # noqa: F811
    fake_speech.say("小区 门口 的", "路灯 坏 了", "好 几 天 了")  # petition-1, wait-1, more-1
    petition = pausing_petition(tmp_path)
    result = await caller(live_rig, fake).call(CallScript(from_number=KNOWN_PHONE, digits=[None, "1"], turns=[
        Turn(petition, end="silence", goes_on=True)]))
    assert [url.split("?", 1)[1] for _, url in fake.redirects] == [
        "seg=petition-1&by=eos", "seg=wait-1&by=barge", "seg=more-1&by=eos"]
    assert how(result) == [("redirect", "open/done"), ("redirect", "petition/more"), ("redirect", "petition/done")]
    assert PLEASE_WAIT in result.heard and result.said_over_prompts >= 1
    assert sum(JOINED in h for h in result.heard) == 1
    assert not any("您反映的是：小区门口的对吗" in h.replace("。", "") for h in result.heard)  # no half read back
    (case,) = live_rig.cases()
    assert case.description == "小区门口的路灯坏了好几天了" and result.case_number == case.number
    parts = segments(live_rig, result.call_sid)
    assert parts["wait-1"]["speech_s"] > 0 and parts["more-1"]["speech_s"] > 0
    heard_s = sum(parts[n]["speech_s"] for n in ("petition-1", "wait-1", "more-1"))
    assert heard_s >= spoken_s(petition) - 0.04  # every word's audio, in one of the three parts
    assert names(live_rig, case) == ["petition-1.wav", "wait-1.wav", "more-1.wav"]
    more = result.bodies[next(i for i, (u, _) in enumerate(result.requests) if "/twilio/petition/more" in u)]
    stopped = {s.get("name") for s in ET.fromstring(more).iter("Stream") if s.get("url") is None}
    assert stopped == {"wait-1", "petition-1"}  # the wait's stream and the turn's own, both stopped


async def test_a_caller_silent_over_please_wait_hears_what_they_heard_before(live_rig, fake_speech, fake,  # noqa: F811
                                                                            tmp_path):
    fake_speech.say("小区 门口 的 路灯 坏 了 好 几 天 了")
    petition = mandarin(FIRST, tmp_path) + mandarin(THEN, tmp_path)
    result = await caller(live_rig, fake).call(CallScript(from_number=KNOWN_PHONE, digits=[None, "1"], turns=[
        Turn(petition, end="silence")]))
    assert how(result) == [("redirect", "open/done")]
    assert live_rig.hotline.registry.stats["barge_ins"] == 0
    waits = [i for i, body in enumerate(result.bodies) if PLEASE_WAIT in body]
    assert waits, "the recogniser was not slow enough for 请稍候"
    flow = live_rig.hotline.flow
    for i in waits:  # what is said and where it goes: the wait as it was, with no stream of its own
        url = result.requests[i + 1][0]
        assert "wait=wait-1" in url
        assert verbs(result.bodies[i]) == verbs(flow.wait("/twilio/open/done", seg="petition-1",
                                                          round=waits.index(i) + 1, wait="wait-1"))
    readback = result.bodies[waits[-1] + 1]
    assert JOINED in readback and '<Stream name="wait-1"' in readback.split("<Say")[0]  # stopped first
    assert result.heard.count(PLEASE_WAIT) == len(waits)
    assert sum("您反映的是" in h for h in result.heard) == 1
    (case,) = live_rig.cases()
    assert case.description == "小区门口的路灯坏了好几天了"
    assert names(live_rig, case) == ["petition-1.wav"]  # the wait's silence is not attached
    parts = segments(live_rig, result.call_sid)
    assert parts["wait-1"]["speech_s"] == 0 and parts["wait-1"]["ended_by"]
    assert not [n for n in parts if n.startswith("more-")]


async def test_a_hang_up_after_going_on_over_please_wait_files_every_part(live_rig, fake_speech, fake,  # noqa: F811
                                                                          tmp_path):
    fake_speech.say("小区 门口 的", "路灯 坏 了", "好 几 天 了")
    petition = pausing_petition(tmp_path)
    result = await caller(live_rig, fake).call(CallScript(from_number=KNOWN_PHONE, turns=[
        Turn(petition, end="silence", goes_on=True, rest_end="hangup")]))
    assert how(result)[:2] == [("redirect", "open/done"), ("redirect", "petition/more")]
    assert how(result)[-1] == ("hangup", "petition/done")
    (case,) = live_rig.cases()
    assert case.description == "小区门口的路灯坏了好几天了"
    assert "caller_hung_up" in (case.flags or [])
    assert names(live_rig, case) == ["petition-1.wav", "wait-1.wav", "more-1.wav"]
    parts = segments(live_rig, result.call_sid)
    assert sum(parts[n]["speech_s"] for n in ("petition-1", "wait-1", "more-1")) >= spoken_s(petition) - 0.04


async def test_words_over_please_wait_whose_barge_in_failed_are_joined_by_the_next_round(
        live_rig, fake_speech, fake, tmp_path):  # noqa: F811
    """The barge-in redirect over 请稍候 fails: the wait plays out under the caller's words and
    the next round finds the turn's words in. The wait's stream heard the caller go on, so the
    call goes on the same way (the rest recorded, then the whole read back): nothing dropped."""
    fake_speech.say("小区 门口 的", "路灯 坏 了 好 几 天 了", "")
    petition = pausing_petition(tmp_path)
    sim = caller(live_rig, fake)
    task = asyncio.create_task(sim.call(CallScript(from_number=KNOWN_PHONE, digits=[None, "1"], turns=[
        Turn(petition, end="silence", goes_on=True)])))
    await wait_until(lambda: fake.redirects, what="the open turn ended by our redirect")
    fake.fail_next(500, operation="update", times=20)  # the barge-in (and every later redirect) fails
    result = await task
    ends = how(result)
    assert ends[0] == ("redirect", "open/done") and ("redirect", "petition/more") not in ends, ends
    registry = live_rig.hotline.registry
    assert registry.stats["barge_ins"] == 1 and registry.stats["turn_end_failures"] >= 1
    assert sum(JOINED in h for h in result.heard) == 1
    (case,) = live_rig.cases()
    assert case.description == "小区门口的路灯坏了好几天了" and result.case_number == case.number
    assert names(live_rig, case) == ["petition-1.wav", "wait-1.wav", "more-1.wav"]
    assert segments(live_rig, result.call_sid)["wait-1"]["speech_s"] >= spoken_s(mandarin(THEN, tmp_path)) - 0.04


@pytest.mark.slow
async def test_sigkill_after_going_on_over_please_wait_files_every_part(engine, tmp_path):
    """`gridline serve` (Korean Vosk, the fake Twilio's REST API), waiting a millisecond for words
    (``wait_s``: 请稍候 is said after every turn), is killed while the caller, who paused and
    went on over 请稍候, is saying the rest. Started again on the same data, it files one case
    with every part's recording: the first half, the wait's stream, and the rest."""
    call_sid, data, case, _ = await killed_while_the_rest_is_said(engine, tmp_path, wait_s=0.001, rest_s=1)
    assert "recovered_after_restart" in case.flags
    with session_scope(engine) as s:
        attached = [resolve(a.path, data).name for a in case_files(s, case.id, "recording")]
    assert [name.removeprefix(f"{call_sid}-") for name in attached] == ["petition-1.wav", "wait-1.wav", "more-1.wav"]


async def test_going_on_over_please_wait_heard_on_one_instance_served_by_another(engine, tmp_path, fake,  # noqa: F811
                                                                                 fake_speech):
    """The caller's audio goes to A, every webhook to B: B says 请稍候 and opens its stream, A
    hears the caller go on over it and redirects; B records the rest and joins the parts A
    handed over."""
    a, b = await socket_and_webhook_instances(engine, tmp_path, fake_speech, fake)
    try:
        fake_speech.say("小区 门口 的", "路灯 坏 了", "好 几 天 了")
        sim = caller(b, fake)
        sim.stream_server = a.url
        result = await sim.call(CallScript(from_number=KNOWN_PHONE, digits=[None, "1"], turns=[
            Turn(pausing_petition(tmp_path), end="silence", goes_on=True)]))
        assert [url.split("?", 1)[1] for _, url in fake.redirects] == [
            "seg=petition-1&by=eos", "seg=wait-1&by=barge", "seg=more-1&by=eos"]
        assert all(url.startswith(b.url) for url, _ in result.requests)
        assert a.hotline.registry.stats["barge_ins"] == 1 and b.hotline.registry.stats["barge_ins"] == 0
        assert PLEASE_WAIT in result.heard and sum(JOINED in h for h in result.heard) == 1
        (case,) = b.cases()
        assert case.description == "小区门口的路灯坏了好几天了" and result.case_number == case.number
        parts = segments(b, result.call_sid)  # each part as A handed it over (the WAVs are on A's disk)
        assert all(parts[n]["speech_s"] > 0 and parts[n]["ended_by"] for n in ("petition-1", "wait-1", "more-1"))
    finally:
        await a.stop()
        await b.stop()
