"""The Media Streams socket under bad conditions, hang-ups, and recovery after a restart."""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ET

import aiohttp
import psycopg
from sqlalchemy.exc import OperationalError

from ivr import calls
from ivr.simulator import CallScript, Turn
from speech_models.audio import read_wav

from .conftest import KNOWN_PHONE, UNKNOWN_PHONE, silence, start_rig, tone, wait_until
from .test_security import fixture, post


async def begin_petition(rig, call_sid: str, phone: str = KNOWN_PHONE) -> dict:
    """Webhooks up to the petition's <Record>; returns the stream's <Parameter>s."""
    base = {**fixture("voice_incoming.json"), "CallSid": call_sid, "From": phone, "Caller": phone}
    status, _ = await post(f"{rig.url}/twilio/voice", base)
    assert status == 200
    status, body = await post(f"{rig.url}/twilio/menu", {**base, "CallStatus": "in-progress", "Digits": "1"})
    stream = ET.fromstring(body).find("Start/Stream")
    return {"base": base, **{p.get("name"): p.get("value") for p in stream.findall("Parameter")}}


def start_message(params: dict) -> dict:
    msg = fixture("media_stream_start.json")
    msg["start"]["callSid"] = params["callSid"]
    msg["start"]["customParameters"] = {k: params[k] for k in ("token", "callSid", "segment")}
    return msg


def media(chunk: bytes, seq: int = 2) -> str:
    msg = fixture("media_stream_media.json")
    msg["media"]["payload"] = base64.b64encode(chunk).decode()
    msg["media"]["timestamp"] = str((seq - 2) * 20)
    msg["sequenceNumber"] = str(seq)
    return json.dumps(msg)


async def stream_audio(ws, audio: bytes, first_seq: int = 2) -> None:
    for i in range(0, len(audio), 160):
        await ws.send_str(media(audio[i : i + 160], first_seq + i // 160))


def ws_url(rig) -> str:
    return rig.url.replace("http", "ws", 1) + "/twilio/stream"


async def press_hash(rig, p: dict) -> str:
    status, body = await post(f"{rig.url}/twilio/petition/done?seg={p['segment']}",
                              {**p["base"], "CallStatus": "in-progress", "Digits": "#"})
    assert status == 200
    return body


async def test_malformed_messages_do_not_lose_audio(rig, fake_speech):
    fake_speech.say("路灯 坏 了")
    p = await begin_petition(rig, "CA" + "1" * 32)
    early = tone(0.5)
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(rig)) as ws:
        await ws.send_str(json.dumps(fixture("media_stream_connected.json")))
        await stream_audio(ws, early)  # media before start
        await ws.send_str(json.dumps(start_message(p)))
        await ws.send_str("{not json")
        await ws.send_str(json.dumps([1, 2, 3]))
        await ws.send_str(json.dumps({"event": "media", "media": {"payload": "***not base64***"}}))
        await ws.send_str(json.dumps({"event": "media", "media": "nonsense"}))
        await ws.send_str(json.dumps({"event": "party", "streamSid": "MZ1"}))
        await ws.send_bytes(b"\x00\x01binary")
        await ws.send_str(json.dumps(fixture("media_stream_mark.json")))
        await stream_audio(ws, tone(2.5), first_seq=100)
        await ws.send_str(json.dumps({"event": "start", "start": "again"}))  # a second start is ignored
        # the socket drops without a stop message
    stats = rig.hotline.registry.stats
    assert stats["bad_messages"] >= 4 and stats["unknown_events"] == 1 and stats["early_media"] > 0
    # the caller goes on: # ends the petition, which is read back
    assert "您反映的是：路灯坏了" in await press_hash(rig, p)
    seg = rig.call_session(p["callSid"]).state["segments"][p["segment"]]
    assert seg["duration"] == 3.0  # 0.5 s before start + 2.5 s after: nothing lost
    wav = read_wav(rig.path(seg["audio_path"]))
    assert wav.sample_rate == 8000 and wav.duration == 3.0


async def test_deeply_nested_json_is_refused_and_the_audio_goes_on(rig, fake_speech):
    """A message nested too deep for the JSON parser (RecursionError, not ValueError) is
    one bad message: the socket and the caller's audio after it survive."""
    fake_speech.say("楼道 灯 坏 了")
    p = await begin_petition(rig, "CA" + "5" * 32)
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(rig)) as ws:
        await ws.send_str(json.dumps(start_message(p)))
        await stream_audio(ws, tone(1.5))
        await ws.send_str("[" * 20_000 + "]" * 20_000)  # 40 kB: within the message size bound
        await ws.send_str('{"event": "media", "media": ' + '{"a":' * 8_000 + "1" + "}" * 8_001)
        await stream_audio(ws, tone(1.5), first_seq=200)
        body = await press_hash(rig, p)
        assert not ws.closed
    assert "您反映的是：楼道灯坏了" in body
    assert rig.hotline.registry.stats["bad_messages"] == 2
    seg = rig.call_session(p["callSid"]).state["segments"][p["segment"]]
    assert seg["duration"] == 3.0
    assert read_wav(rig.path(seg["audio_path"])).duration == 3.0


async def test_database_error_in_the_token_check_keeps_the_audio(rig, fake_speech, monkeypatch):
    """The database is away when the stream starts: the token check is retried while the
    audio waits in memory, then all of it goes to the WAV and the case."""
    fake_speech.say("垃圾 桶 满 了")
    p = await begin_petition(rig, "CA" + "6" * 32)
    real = calls.stream_path
    failures = {"left": 12}  # more than Hotline.db's own retries absorb in one go

    def flaky(*args, **kw):
        if failures["left"] > 0:
            failures["left"] -= 1
            raise OperationalError("SELECT call_session", {}, psycopg.OperationalError("server closed the connection"))
        return real(*args, **kw)

    monkeypatch.setattr(calls, "stream_path", flaky)
    monkeypatch.setattr("ivr.database.RETRY_FOR_S", 0.2)
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(rig)) as ws:
        await ws.send_str(json.dumps(start_message(p)))
        await stream_audio(ws, tone(3))
        await wait_until(lambda: failures["left"] == 0, what="the token check to be retried")
        await wait_until(lambda: rig.hotline.registry.get(p["callSid"], p["segment"]), what="the segment")
        body = await press_hash(rig, p)
        assert not ws.closed
    assert "您反映的是：垃圾桶满了" in body
    assert rig.hotline.registry.stats["token_retries"] >= 1
    seg = rig.call_session(p["callSid"]).state["segments"][p["segment"]]
    assert seg["duration"] == 3.0 and read_wav(rig.path(seg["audio_path"])).duration == 3.0


async def test_dtmf_on_the_stream_ends_the_petition(rig, fake_speech):
    fake_speech.say("路灯 坏 了")
    p = await begin_petition(rig, "CA" + "2" * 32)
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(rig)) as ws:
        await ws.send_str(json.dumps(start_message(p)))
        await stream_audio(ws, tone(2.5))
        await ws.send_str(json.dumps(fixture("media_stream_dtmf.json")))
        await stream_audio(ws, tone(1), first_seq=300)  # after # nothing more is taken
        seg = await wait_until(lambda: rig.hotline.registry.get(p["callSid"], p["segment"]), what="the segment")
        assert await seg.wait_done(30)
        rec = seg.result()
        assert rec.final and rec.ended_by == "dtmf" and rec.text == "路灯坏了"
        assert rec.duration == 2.5
        assert read_wav(seg.path).duration == 2.5


async def test_hang_up_mid_petition_becomes_a_flagged_case(rig, fake_speech):
    fake_speech.say("楼上 漏水 很 严重")
    result = await rig.simulator().call(CallScript(
        from_number=KNOWN_PHONE, digits=["1"], turns=[Turn(tone(6), end="hangup", hangup_after_s=3)]))
    assert result.status == "hung_up"
    (case,) = rig.cases()
    assert "caller_hung_up" in case.flags
    assert case.description == "楼上漏水很严重"
    assert read_wav(rig.recordings(case)[-1]).duration == 3.0
    session = rig.call_session(result.call_sid)
    assert session.outcome == "hung_up_case" and session.case_id == case.id


async def test_hang_up_with_too_little_speech_leaves_only_the_call_record(rig, fake_speech):
    fake_speech.say("喂")
    result = await rig.simulator().call(CallScript(
        from_number=KNOWN_PHONE, digits=["1"], turns=[Turn(tone(1) + silence(3), end="hangup")]))
    assert rig.cases() == []
    session = rig.call_session(result.call_sid)
    assert session.outcome == "no_petition" and session.status == "completed"
    assert rig.path(session.audio_path).is_file()  # the audio is kept all the same


async def test_hang_up_after_readback_files_what_was_heard(rig, fake_speech):
    fake_speech.say("路灯 坏 了")
    result = await rig.simulator().call(CallScript(
        from_number=UNKNOWN_PHONE, digits=["1"], turns=[Turn(tone(2.5))], hangup_after_prompts=None))
    # digits ran out at the read-back: the caller said nothing twice → confirmed as unconfirmed,
    # then hung up during the address question
    (case,) = rig.cases()
    assert case.description == "路灯坏了"
    assert rig.call_session(result.call_sid).case_id == case.id


async def test_socket_drop_without_status_callback_still_files(rig, fake_speech):
    """No status callback and no webhook after the socket died: after the grace period
    the petition is filed as a hang-up."""
    fake_speech.say("电梯 坏 了")
    p = await begin_petition(rig, "CA" + "3" * 32)
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(rig)) as ws:
        await ws.send_str(json.dumps(start_message(p)))
        await stream_audio(ws, tone(3))
    (case,) = await wait_until(rig.cases, what="the hang-up case")
    assert "caller_hung_up" in case.flags and case.description == "电梯坏了"


async def test_recovery_after_restart(engine, tmp_path, fake_speech):
    """The server stops mid-petition, before any webhook took the turn: at the next start
    the recording becomes a case at once (start-up does not wait for recognition) and the
    transcribe job, through the speech pool, gives it its words."""
    rig = await start_rig(engine, tmp_path, fake_speech)
    fake_speech.say("路灯 坏 了")  # what the live recogniser of the first process hears
    p = await begin_petition(rig, "CA" + "4" * 32)
    ws_session = aiohttp.ClientSession()
    ws = await ws_session.ws_connect(ws_url(rig))
    await ws.send_str(json.dumps(start_message(p)))
    await stream_audio(ws, tone(3))
    seg = await wait_until(lambda: rig.hotline.registry.get(p["callSid"], p["segment"]), what="the segment")
    await wait_until(lambda: seg.received == 3 * 8000, what="all audio written")
    rig.hotline.registry.on_orphan = None  # the process is going: nobody files it now
    await rig.stop()
    await ws_session.close()
    assert rig.cases() == []

    fake_speech.say("小区 路灯 坏 了")  # what the transcribe job hears in the WAV
    rig2 = await start_rig(engine, tmp_path, fake_speech, district=rig.district)
    try:
        (case,) = await wait_until(rig2.cases, what="the recovered case")
        assert "recovered_after_restart" in case.flags
        assert read_wav(rig2.recordings(case)[-1]).duration == 3.0
        session = rig2.call_session(p["callSid"])
        assert session.outcome == "recovered_case" and session.case_id == case.id
        case = await wait_until(lambda: (c := rig2.case(case.id)) and "transcript_pending" not in (c.flags or [])
                                and c, what="the transcript")
        assert case.description == "小区路灯坏了"
        await wait_until(lambda: [j.status for j in rig2.jobs()] == ["done"], what="the job to be done")
        # a second sweep finds nothing more to do
        from core.platform.clock import utcnow

        assert await rig2.hotline.recover(utcnow()) == []
    finally:
        await rig2.stop()
