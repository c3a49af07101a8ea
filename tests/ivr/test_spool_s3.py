"""Live audio reaches a real bucket (SeaweedFS, tests/support/seaweed.py) while the call goes
on: parts every ``spool_part_s`` of audio, the whole WAV (sha256 read back) when the turn
ends, then the spool file and the parts go; a bucket that goes away mid-call leaves the
WAV in the spool for the ``media_upload`` job; a machine that vanishes mid-call (SIGKILL,
its data folder deleted) loses at most the last part: another instance's recovery files
the case with the recording assembled from the parts."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import uuid
from datetime import timedelta

import pytest
from sqlmodel import select

from core.cases.models import Attachment, CallSession, Case
from core.cases.queries import case_files
from core.platform.db import session_scope
from core.platform.uploads import MEDIA_UPLOAD_JOB, upload_handler
from ivr.simulator import CallScript, Turn
from speech_models.audio import read_wav
from tests.support.serve import ServeProcess, database_url

from .conftest import KNOWN_PHONE, TOKEN, silence, start_rig, tone, wait_until
from .load import CallPlan, demo_phones, known_caller, place_calls

pytestmark = pytest.mark.slow


def parts_of(bucket, call_sid: str) -> dict[str, int]:
    return {k: v for k, v in bucket.objects().items() if call_sid in k and ".parts/" in k}


async def test_parts_reach_the_bucket_while_the_caller_speaks(engine, tmp_path, fake_speech, s3_bucket):
    rig = await start_rig(engine, tmp_path, fake_speech, media_url=s3_bucket.url, spool_part_s=1.0)
    try:
        fake_speech.say("电梯 坏 了")
        call_sid = "CA" + uuid.uuid4().hex
        spoken = tone(4.5) + silence(0.3)
        call = asyncio.create_task(rig.simulator(speed=1).call(CallScript(
            from_number=KNOWN_PHONE, digits=["1", "1"], turns=[Turn(spoken)], call_sid=call_sid)))
        seen = await wait_until(lambda: len(parts_of(s3_bucket, call_sid)) >= 2 and parts_of(s3_bucket, call_sid),
                                timeout=30, what="two parts in the bucket")
        assert not call.done()  # while the caller is still speaking
        assert all(size == 16000 for size in seen.values())  # one second of 8 kHz pcm16 each
        await call
        (case,) = rig.cases()
        with session_scope(engine) as s:
            (att,) = case_files(s, case.id, "recording")
        body = s3_bucket.read(att.path)
        assert hashlib.sha256(body).hexdigest() == att.sha256 and len(body) == att.size == 44 + len(spoken) * 2
        assert not att.upload_pending
        assert not rig.path(att.path).exists()  # the spool file went once the store confirmed it
        assert parts_of(s3_bucket, call_sid) == {}  # and so did the parts
    finally:
        call.cancel()
        await rig.stop()


async def test_a_bucket_that_goes_away_mid_call_gets_the_recording_later(engine, tmp_path, fake_speech,
                                                                          s3_bucket, seaweed):
    rig = await start_rig(engine, tmp_path, fake_speech, media_url=s3_bucket.url, spool_part_s=1.0)
    services = rig.hotline.services
    services.jobs.register(MEDIA_UPLOAD_JOB, upload_handler(engine, services.media, services.spool,
                                                            timedelta(seconds=1)))
    try:
        fake_speech.say("路灯 坏 了")
        call_sid = "CA" + uuid.uuid4().hex
        spoken = tone(5) + silence(0.3)
        call = asyncio.create_task(rig.simulator(speed=1).call(CallScript(
            from_number=KNOWN_PHONE, digits=["1", "1"], turns=[Turn(spoken)], call_sid=call_sid)))
        await wait_until(lambda: parts_of(s3_bucket, call_sid), timeout=30, what="a part in the bucket")
        await asyncio.to_thread(seaweed.stop)  # the bucket goes away while the caller speaks
        try:
            result = await call
            assert result.case_number  # the caller still hears their number
            (case,) = rig.cases()
            with session_scope(engine) as s:
                (att,) = case_files(s, case.id, "recording")
            assert att.upload_pending  # the console says it waits
            spooled = rig.path(att.path)
            assert hashlib.sha256(spooled.read_bytes()).hexdigest() == att.sha256
        finally:
            await asyncio.to_thread(seaweed.start)
        assert await services.jobs.run_once("main") >= 1
        body = s3_bucket.read(att.path)
        assert hashlib.sha256(body).hexdigest() == att.sha256 and len(body) == 44 + len(spoken) * 2
        with session_scope(engine) as s:
            assert not s.get(Attachment, att.id).upload_pending
        assert not spooled.exists()
    finally:
        await rig.stop()


@pytest.mark.one_database
async def test_a_machine_that_vanishes_mid_call_loses_at_most_the_last_part(engine, tmp_path, s3_bucket, seaweed):
    env = {**seaweed.env(), "GRIDLINE_MEDIA_URL": s3_bucket.url, "GRIDLINE_SPOOL_PART_S": "2",
           "GRIDLINE_TWILIO_AUTH_TOKEN": TOKEN, "GRIDLINE_SPEECH_MODEL": str(tmp_path / "no-model")}
    first = ServeProcess(tmp_path / "a", database_url(engine), env=env)
    await asyncio.to_thread(first.start)
    second = None
    try:
        call_sid = "CA" + uuid.uuid4().hex
        (phone,) = demo_phones(engine, 1)
        caller = asyncio.create_task(place_calls(first.url, TOKEN, [CallPlan(known_caller(phone, call_sid, tone(30)))],
                                                 speed=1))
        await wait_until(lambda: len(parts_of(s3_bucket, call_sid)) >= 3, timeout=60, what="three parts")
        spool_file = next((tmp_path / "a" / "recordings").rglob(f"{call_sid}-petition-1.wav"))
        first.kill()
        heard_s = (spool_file.stat().st_size - 44) / 16000  # what the vanished machine had received
        shutil.rmtree(tmp_path / "a")  # and its disk is gone with it
        await caller
        parts = parts_of(s3_bucket, call_sid)
        second = ServeProcess(tmp_path / "b", database_url(engine), env=env)
        await asyncio.to_thread(second.start)

        def filed():
            with session_scope(engine) as s:
                row = s.exec(select(CallSession).where(CallSession.call_sid == call_sid)).one()
                return s.get(Case, row.case_id) if row.case_id else None

        case = await wait_until(filed, timeout=60, what="the case filed by the other instance's recovery")
        assert "recovered_after_restart" in case.flags
        with session_scope(engine) as s:
            (att,) = case_files(s, case.id, "recording")
        body = s3_bucket.read(att.path)
        assert hashlib.sha256(body).hexdigest() == att.sha256 and len(body) == att.size
        kept_s = read_wav(body).duration
        assert kept_s == pytest.approx(len(parts) * 2.0)  # every part, whole
        assert heard_s - 2.0 <= kept_s <= heard_s  # at most the last part lost
        assert parts_of(s3_bucket, call_sid) == {}  # the parts went once the WAV was kept
        print(f"machine vanished mid-call: {heard_s:.2f} s received, {kept_s:.2f} s kept from {len(parts)} parts")
    finally:
        first.close()
        if second is not None:
            await asyncio.to_thread(second.close)
