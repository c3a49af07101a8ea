"""ivr.handover across two hotline instances on one database: the instance holding a
call's Media Streams socket hands the turn to whichever instance serves the call's next
webhook, and when that webhook dies half-way, or the instances keep files each in a folder
of its own, the caller's petition is still filed with its recording.

Two real aiohttp hotline servers (each with its own data folder) share the test database;
the socket is a real websocket speaking the Media Streams protocol to instance A, and
instance B plays the webhook that follows the caller's ``#``."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import uuid

import aiohttp
import pytest
from sqlmodel import select

from core.cases.models import Attachment, CallSession, Case
from core.cases.queries import case_files
from core.platform.clock import utcnow
from core.platform.db import session_scope
from core.platform.instances import others_alive
from core.platform.media import LocalStore
from core.platform.models import AudioPart, StreamSegment
from ivr import calls
from ivr.spool import HANDOVER_COPY_SEQ, HEADER_BYTES
from ivr.state import Call
from tests.ivr.conftest import silence, start_rig, tone, wait_until
from tests.support.fake_transcriber import FakeTranscriber

CALLER = "+8613900007777"  # not a registered household: the case goes to triage


async def speak_on_socket(url: str, call_sid: str, token: str, segment: str, audio: bytes) -> aiohttp.ClientSession:
    """Twilio's Media Streams socket to ``url``: start, then ``audio`` (µ-law) in 20 ms frames;
    left open (the caller is still on the line). Returns the session holding it."""
    http = aiohttp.ClientSession()
    ws = await http.ws_connect(url.replace("http", "ws", 1) + "/twilio/stream")
    sid = "MZ" + uuid.uuid4().hex
    await ws.send_str(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    await ws.send_str(json.dumps({"event": "start", "streamSid": sid, "start": {
        "callSid": call_sid, "streamSid": sid, "tracks": ["inbound"],
        "customParameters": {"token": token, "segment": segment, "callSid": call_sid},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}))
    for n, i in enumerate(range(0, len(audio), 160)):
        await ws.send_str(json.dumps({"event": "media", "streamSid": sid, "media": {
            "track": "inbound", "chunk": str(n + 1), "timestamp": str(n * 20),
            "payload": base64.b64encode(audio[i:i + 160]).decode()}}))
    http._gridline_ws = ws  # closed with the session
    return http


async def two_rigs(engine, tmp_path, speech_a=None, **settings):
    """Instances A and B: two hotline servers, each with its own data folder, one database;
    ``speech_a``: A's recogniser (B has none)."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    a = await start_rig(engine, tmp_path / "a", speech_a, **settings)
    b = await start_rig(engine, tmp_path / "b", None, district=a.district, **settings)
    return a, b


def a_call_begun_on(engine, holder: str) -> tuple[str, str, str, str]:
    """A call whose menu webhook went to instance ``holder``: its petition turn begun.
    Returns (call_sid, segment, token, key)."""
    call_sid = "CA" + uuid.uuid4().hex
    calls.open_call(engine, call_sid, from_number=CALLER, to_number="+8657112345", status="in-progress",
                    holder=holder)
    call, (segment, token) = calls.apply(engine, call_sid, Call.begin_turn, "petition", holder=holder)
    return call_sid, segment, token, call.state.segments[segment].audio_path


def handover_row(engine, call_sid: str, segment: str) -> StreamSegment | None:
    with session_scope(engine) as s:
        return s.exec(select(StreamSegment).where(StreamSegment.call_sid == call_sid,
                                                  StreamSegment.segment == segment)).first()


def filed_recordings(engine, call_sid: str) -> tuple[CallSession, list[Attachment]]:
    with session_scope(engine) as s:
        call = s.exec(select(CallSession).where(CallSession.call_sid == call_sid)).one()
        files = list(case_files(s, call.case_id, "recording")) if call.case_id else []
        return call, files


async def test_a_turn_whose_webhook_died_after_asking_for_its_end_is_filed_with_its_recording(engine, tmp_path):
    """The deployment test's lost call, made certain. The socket is on A; the webhook after the
    caller's ``#`` lands on B, which asks A to end the turn, and dies before it stores the
    turn with the call: A has kept the whole WAV in the store (and removed its parts and its
    spool copy) by then. Nobody else tells the call the turn ended, so the recovery sweep
    files it. Before: the sweep found no spool file and no parts, measured nothing, and
    filed the call as "no petition"; the WAV in the store belonged to no case."""
    bucket = tmp_path / "bucket"  # a folder standing for the bucket both instances share
    a, b = await two_rigs(engine, tmp_path, media_url=f"file://{bucket}")
    socket = None
    try:
        call_sid, segment, token, key = a_call_begun_on(engine, b.hotline.instance.id)
        socket = await speak_on_socket(a.url, call_sid, token, segment, tone(4) + silence(0.3))
        await wait_until(lambda: (seg := a.hotline.registry.get(call_sid, segment)) is not None
                         and seg.received >= 4.3 * 8000, what="A hears the whole petition")

        # B serves the "#" webhook: it asks for the end through the database and waits for the turn ...
        hash_webhook = asyncio.ensure_future(b.hotline.collect(
            call_sid, segment, "petition", "webhook", open_wait=3.0, done_wait=lambda live: 3.0))
        await wait_until(lambda: (row := handover_row(engine, call_sid, segment)) is not None and row.done,
                         what="A ended the turn and handed it over")
        await wait_until(lambda: LocalStore(bucket).stat(key), what="A kept the whole WAV in the store")
        # ... and dies before it stores the turn with the call (its machine is gone).
        hash_webhook.cancel()
        await b.stop()
        b = None
        await socket._gridline_ws.close()  # Twilio ends the stream
        assert not (tmp_path / "a" / key).exists(), "A's spool copy goes once the store has the WAV"

        filed = await a.hotline.recover(utcnow())
        call, recordings = filed_recordings(engine, call_sid)

        assert call.outcome == "recovered_case" and call.case_id, (
            f"the call was filed as {call.outcome!r} ({[f.outcome for f in filed]}): the caller's petition is lost")
        (recording,) = recordings
        whole = LocalStore(bucket).get_bytes(key)
        assert recording.path == key and recording.size == len(whole) > HEADER_BYTES + 4 * 16000
        assert recording.sha256 == hashlib.sha256(whole).hexdigest() and not recording.upload_pending
        with session_scope(engine) as s:
            case = s.get(Case, call.case_id)
            assert "transcript_pending" in case.flags and "recovered_after_restart" in case.flags
    finally:
        if socket is not None:
            await socket.close()
        if b is not None:
            await b.stop()
        await a.stop()


async def test_the_webhooks_instance_waits_the_callers_wait_for_words_recognised_live_on_the_other(
        engine, tmp_path):
    """A recognises the turn live (its recogniser opens with the first audio, after the turn's
    row was written); B serves the webhook and must wait the caller's wait for those words,
    not a moment as for a turn recorded only (before: B read the row as opened, not live, and
    filed the turn without its words while A was still recognising them)."""
    a, b = await two_rigs(engine, tmp_path, FakeTranscriber(confidence=0.9).say("路灯 坏 了"))
    socket = None
    try:
        call_sid, segment, token, _ = a_call_begun_on(engine, b.hotline.instance.id)
        socket = await speak_on_socket(a.url, call_sid, token, segment, tone(2) + silence(0.3))
        await wait_until(lambda: (seg := a.hotline.registry.get(call_sid, segment)) is not None
                         and seg.received >= 2.3 * 8000, what="A hears the turn")
        assert a.hotline.registry.get(call_sid, segment).live

        seen: list[bool] = []

        def caller_wait(live: bool) -> float:
            seen.append(live)
            return 10.0 if live else 0.0

        got = await b.hotline.collect(call_sid, segment, "petition", "webhook", open_wait=3.0, done_wait=caller_wait)
        assert seen == [True]
        assert got.done and got.recording.final and got.recording.text == "路灯坏了"
    finally:
        if socket is not None:
            await socket.close()
        await b.stop()
        await a.stop()


@pytest.fixture
def two_instances_without_a_bucket(engine):
    if engine.dialect.name != "postgresql":
        pytest.skip("instances share one PostgreSQL (on SQLite one instance owns the database file)")


async def test_without_a_bucket_the_webhooks_instance_files_the_turn_heard_on_the_other(
        engine, tmp_path, two_instances_without_a_bucket):
    """Each instance keeps files in its own data folder. The socket is on A, the ``#`` webhook
    on B, which cannot read A's disk. A copies the finished turn into the database with its
    handover row; B files the case with the recording, kept in B's folder, and the copy goes.
    Before: B filed nothing ("no petition") and the caller heard goodbye."""
    a, b = await two_rigs(engine, tmp_path)
    socket = None
    try:
        await wait_until(lambda: a.hotline.handover.copies_audio and instances_alive(engine) >= 2,
                         what="both instances hold a lease")
        call_sid, segment, token, key = a_call_begun_on(engine, a.hotline.instance.id)
        audio = tone(3) + silence(0.2)
        socket = await speak_on_socket(a.url, call_sid, token, segment, audio)
        await wait_until(lambda: (seg := a.hotline.registry.get(call_sid, segment)) is not None
                         and seg.received >= len(audio), what="A hears the whole petition")

        heard = await b.hotline.heard(call_sid, segment, "petition", round_=3)  # B's "#" webhook
        await b.hotline.apply(call_sid, Call.turn_heard, segment, heard)
        filed = await b.hotline.file(call_sid)

        assert filed.number, "the petition heard on A is filed by B"
        call, (recording,) = filed_recordings(engine, call_sid)
        on_a, on_b = (tmp_path / "a" / key).read_bytes(), (tmp_path / "b" / key).read_bytes()
        assert on_b == on_a, "B keeps the WAV A heard, byte for byte"
        assert recording.path == key and recording.size == len(on_b) and not recording.upload_pending
        assert recording.sha256 == hashlib.sha256(on_b).hexdigest()
        assert len(on_b) == HEADER_BYTES + 2 * len(audio)  # every frame the caller said
        assert audio_parts(engine, key) == []  # the copy is gone once the case is filed
        assert a.hotline.handover.copied_bytes == 2 * len(audio)
    finally:
        if socket is not None:
            await socket.close()
        await b.stop()
        await a.stop()


async def test_a_turn_the_socket_instance_served_itself_leaves_no_copy_behind(
        engine, tmp_path, two_instances_without_a_bucket):
    """The copy is for another instance; when the socket's own instance files the call, the
    copy is dropped in the case's transaction."""
    a, b = await two_rigs(engine, tmp_path)
    socket = None
    try:
        await wait_until(lambda: instances_alive(engine) >= 2, what="both instances hold a lease")
        call_sid, segment, token, key = a_call_begun_on(engine, a.hotline.instance.id)
        socket = await speak_on_socket(a.url, call_sid, token, segment, tone(3))
        await wait_until(lambda: (seg := a.hotline.registry.get(call_sid, segment)) is not None
                         and seg.received >= 3 * 8000, what="A hears the whole petition")
        heard = await a.hotline.heard(call_sid, segment, "petition", round_=3)
        copies = await wait_until(lambda: audio_parts(engine, key), what="A's copy for B")
        assert copies == [HANDOVER_COPY_SEQ]  # made while B was alive
        await a.hotline.apply(call_sid, Call.turn_heard, segment, heard)
        assert (await a.hotline.file(call_sid)).number
        assert audio_parts(engine, key) == []
        assert not (tmp_path / "b" / key).exists()
    finally:
        if socket is not None:
            await socket.close()
        await b.stop()
        await a.stop()


def instances_alive(engine) -> int:
    return len(others_alive(engine, ""))


def audio_parts(engine, key: str) -> list[int]:
    with session_scope(engine) as s:
        return [p.seq for p in s.exec(select(AudioPart).where(AudioPart.key == key)).all()]
