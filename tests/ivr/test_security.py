"""Signatures on every webhook, the per-call socket token, replays and duplicates."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from sqlmodel import select
from twilio.request_validator import RequestValidator

from core.cases.models import CallSession
from core.platform.db import session_scope
from ivr.simulator import CallResult, CallScript, Turn

from .conftest import FIXTURES, KNOWN_PHONE, TOKEN, tone

ROUTES = ["/twilio/voice", "/twilio/menu", "/twilio/petition/done", "/twilio/petition/confirm",
          "/twilio/address/done", "/twilio/address/confirm", "/twilio/case-status",
          "/twilio/operator/after", "/twilio/status"]


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


async def post(url: str, params: dict, *, sign_url: str | None = None, token: str = TOKEN,
               headers: dict | None = None) -> tuple[int, str]:
    signature = RequestValidator(token).compute_signature(sign_url or url, params)
    async with aiohttp.ClientSession() as http, http.post(
        url, data=params, headers={"X-Twilio-Signature": signature, **(headers or {})}
    ) as resp:
        return resp.status, await resp.text()


def sessions(engine) -> list[CallSession]:
    with session_scope(engine) as s:
        return list(s.exec(select(CallSession)).all())


async def test_real_twilio_parameters_are_accepted(rig):
    params = fixture("voice_incoming.json")
    status, body = await post(f"{rig.url}/twilio/voice", params)
    assert status == 200 and "<Gather" in body and 'voice="Polly.Zhiyu"' in body
    (session,) = sessions(rig.engine)
    assert session.call_sid == params["CallSid"] and session.from_number == params["From"]
    status, body = await post(f"{rig.url}/twilio/menu", fixture("gather_digits.json"))
    assert status == 200 and "<Record" in body and "<Stream" in body and 'track="inbound_track"' in body
    completed = {**fixture("status_completed.json"), "CallSid": params["CallSid"]}
    status, _ = await post(f"{rig.url}/twilio/status", completed)
    assert status == 200
    session = sessions(rig.engine)[0]
    assert session.status == "completed" and session.duration_s == 37 and session.ended_at is not None


@pytest.mark.parametrize("path", ROUTES)
async def test_forged_signature_is_refused_and_nothing_written(rig, path):
    params = fixture("voice_incoming.json")
    status, _ = await post(f"{rig.url}{path}", params, token="not-the-token")
    assert status == 403
    async with aiohttp.ClientSession() as http, http.post(f"{rig.url}{path}", data=params) as resp:
        assert resp.status == 403  # unsigned
    assert sessions(rig.engine) == []


async def test_tampered_parameters_are_refused(rig):
    params = fixture("voice_incoming.json")
    signature = RequestValidator(TOKEN).compute_signature(f"{rig.url}/twilio/voice", params)
    async with aiohttp.ClientSession() as http, http.post(
        f"{rig.url}/twilio/voice", data={**params, "From": "+8613000000000"},
        headers={"X-Twilio-Signature": signature},
    ) as resp:
        assert resp.status == 403
    assert sessions(rig.engine) == []


async def test_signature_against_public_url_behind_a_proxy(engine, tmp_path, fake_speech):
    """Twilio signs https://public.example/...; the proxy forwards plain HTTP to us."""
    from .conftest import start_rig

    rig = await start_rig(engine, tmp_path, fake_speech)
    try:
        params = fixture("voice_incoming.json")
        rig.hotline.settings.public_url = "https://hotline.example.org"
        status, _ = await post(f"{rig.url}/twilio/voice", params,
                               sign_url="https://hotline.example.org/twilio/voice")
        assert status == 200
        # No public URL match, but the proxy says how Twilio reached it.
        rig.hotline.settings.public_url = ""
        status, _ = await post(f"{rig.url}/twilio/voice", params, sign_url="https://gl.example/twilio/voice",
                               headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "gl.example"})
        assert status == 200
        status, _ = await post(f"{rig.url}/twilio/voice", params, sign_url="https://gl.example/twilio/voice")
        assert status == 403
    finally:
        await rig.stop()


async def test_socket_with_wrong_token_is_closed_unheard(rig):
    params = fixture("voice_incoming.json")
    await post(f"{rig.url}/twilio/voice", params)
    start = fixture("media_stream_start.json")
    start["start"]["callSid"] = params["CallSid"]
    start["start"]["customParameters"] = {"token": "guessed", "segment": "petition-1"}
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{rig.url.replace('http', 'ws')}/twilio/stream") as ws:
        await ws.send_str(json.dumps(fixture("media_stream_connected.json")))
        await ws.send_str(json.dumps(start))
        for _ in range(20):
            await ws.send_str(json.dumps(fixture("media_stream_media.json")))
        msg = await ws.receive()
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
    assert ws.close_code == 4001
    assert rig.hotline.registry.stats["rejected"] == 1
    assert not list((rig.settings.data_dir / "recordings").rglob("*.wav"))
    session = sessions(rig.engine)[0]
    # the open question's recording was planned before the greeting; nothing was written to it
    assert all(not seg.get("ended_by") and not seg.get("speech_s") for seg in session.state["segments"].values())


@pytest.mark.parametrize("case", ["no token", "no call", "wrong token, then stop", "wrong token, unknown call"])
async def test_a_stream_without_its_token_is_closed_with_4001(rig, case, caplog):
    """A start without a token was closed with 1000 (the handler's plain close raced the
    spawned 4001), and so was a wrong token when the stream stopped before the check ended.
    Every refusal is now 4001, as documented, with one WARNING line and no audio kept."""
    import logging

    params = fixture("voice_incoming.json")
    await post(f"{rig.url}/twilio/voice", params)
    start = fixture("media_stream_start.json")
    start["start"]["callSid"] = "CA00000000000000000000000000000998" if "unknown" in case else params["CallSid"]
    custom = {"no token": {"segment": "petition-1"}, "no call": {"token": "x", "segment": "petition-1"}}
    start["start"]["customParameters"] = custom.get(case, {"token": "guessed", "segment": "petition-1"})
    if case == "no call":
        start["start"]["callSid"] = ""
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{rig.url.replace('http', 'ws')}/twilio/stream") as ws:
        await ws.send_str(json.dumps(fixture("media_stream_connected.json")))
        await ws.send_str(json.dumps(start))
        await ws.send_str(json.dumps(fixture("media_stream_media.json")))
        if "stop" in case:
            await ws.send_str(json.dumps({"event": "stop", "sequenceNumber": "4", "streamSid": start["streamSid"]}))
        msg = await ws.receive()
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
    assert ws.close_code == 4001
    assert rig.hotline.registry.stats["rejected"] == 1
    refused = [r for r in caplog.records if "refused" in r.getMessage() and r.name == "ivr.stream"]
    assert len(refused) == 1 and refused[0].levelno == logging.WARNING
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not list((rig.settings.data_dir / "recordings").rglob("*.wav"))


@pytest.mark.parametrize("path", ["/twilio/case-status", "/twilio/operator/after"])
async def test_a_signed_webhook_for_an_unknown_call_gets_a_polite_goodbye(rig, path, caplog):
    """A signed request naming a CallSid we have no row for logged a full NotFound traceback.
    Now: valid TwiML that says sorry and hangs up, one WARNING line, nothing written."""
    import logging
    import xml.etree.ElementTree as ET

    params = {**fixture("voice_incoming.json"), "CallSid": "CA00000000000000000000000000000999",
              "Digits": "2611220001#", "DialCallStatus": "no-answer"}
    status, body = await post(f"{rig.url}{path}", params)
    assert status == 200
    root = ET.fromstring(body)
    assert root.tag == "Response" and [el.tag for el in root] == ["Say", "Hangup"]
    assert "没有找到这通电话的记录" in root[0].text
    warned = [r for r in caplog.records if "unknown call CA00000000000000000000000000000999" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING and path in warned[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert sessions(rig.engine) == []


async def test_replayed_call_never_makes_a_second_case(rig, fake_speech):
    fake_speech.say("路灯 坏 了")
    sim = rig.simulator()
    result = await sim.call(CallScript(from_number=KNOWN_PHONE, digits=["1", "1"], turns=[Turn(tone(2.5))]))
    (case,) = rig.cases()
    # Twilio retries: every webhook of the call again, in order, and the confirmation many times at once.
    replay = CallResult(result.call_sid)
    async with aiohttp.ClientSession() as http:
        for url, params in list(result.requests):
            await sim.post(http, url, params, replay)
        confirm = next((u, p) for u, p in result.requests if "/twilio/petition/confirm" in u)
        await asyncio.gather(*(sim.post(http, *confirm, replay) for _ in range(5)))
    assert [c.id for c in rig.cases()] == [case.id]
    assert rig.call_session(result.call_sid).case_id == case.id


async def test_concurrent_duplicate_first_webhooks_make_one_session(rig):
    params = fixture("voice_incoming.json")
    results = await asyncio.gather(*(post(f"{rig.url}/twilio/voice", params) for _ in range(6)))
    assert all(status == 200 for status, _ in results)
    assert len(sessions(rig.engine)) == 1


async def raw_post(url: str, body: bytes, content_type: str, headers: dict | None = None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.post(
        url, data=body, headers={"Content-Type": content_type, "X-Twilio-Signature": "x", **(headers or {})}
    ) as resp:
        return resp.status, await resp.text()


BAD_BODIES = {
    "not UTF-8": (b"CallSid=CA1&From=\xff\xfe\xfd", "application/x-www-form-urlencoded"),
    "percent-encoded bytes that are not UTF-8": (b"CallSid=CA1&From=%ff%fe", "application/x-www-form-urlencoded"),
    "a declared charset we do not read": (b"CallSid=CA1", "application/x-www-form-urlencoded; charset=latin-1"),
    "malformed multipart": (b"--xx\r\nContent-Disposition: form-data; name=\"CallSid\"\r\n\r\nCA1\r\n--x",
                            "multipart/form-data; boundary=xx"),
    "multipart with a bad boundary": (b"garbage", "multipart/form-data; boundary="),
    "JSON": (b'{"CallSid": "CA1"}', "application/json"),
}


@pytest.mark.parametrize("what", list(BAD_BODIES))
async def test_a_malformed_body_is_a_clear_400_without_a_traceback(rig, caplog, what):
    body, content_type = BAD_BODIES[what]
    for path in ("/twilio/voice", "/twilio/status"):
        status, text = await raw_post(f"{rig.url}{path}", body, content_type)
        assert status == 400, (what, status, text)
        assert text  # says what was wrong
    assert not [r for r in caplog.records if r.exc_info or r.levelname in ("ERROR", "CRITICAL")]
    assert sessions(rig.engine) == []


async def test_an_oversized_body_is_refused_before_it_is_read(rig, caplog):
    params = fixture("voice_incoming.json")
    padded = {**params, "Padding": "x" * 100_000}
    status, _ = await post(f"{rig.url}/twilio/voice", padded)  # signed correctly, but too big
    assert status == 413
    chunked_status, _ = await raw_post(f"{rig.url}/twilio/voice", b"CallSid=CA1&" + b"x" * 200_000,
                                       "application/x-www-form-urlencoded")
    assert chunked_status == 413
    assert not [r for r in caplog.records if r.exc_info]
    assert sessions(rig.engine) == []
    status, _ = await post(f"{rig.url}/twilio/voice", params)  # and the server carries on
    assert status == 200
