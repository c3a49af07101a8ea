"""Disk faults under a live call (ivr.spool), through real calls: the simulated Twilio plays
the caller, webhooks signed, audio over the Media Streams socket.

* the spool folder cannot be made (a regular file where the folder should be: root
  ignores chmod): the call files its case with the whole recording, held in the database
  until the store takes it, then in the store byte for byte;
* the spool fills in the middle of the petition (a 64 KiB tmpfs): the head stays on disk,
  the rest is held and stored; nothing is lost;
* a spool that fills with the fallbacks bounded to almost nothing: the case is flagged
  ``recording_incomplete`` and its submit event says how many seconds were kept."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import update
from sqlmodel import select

from core.cases.models import Attachment, CaseEvent
from core.cases.queries import case_files
from core.platform import clock
from core.platform.db import session_scope
from core.platform.models import AudioPart, Job
from ivr.simulator import CallScript, Turn
from ivr.spool import KEEP_HELD_JOB
from speech_models.audio import MULAW_TABLE, read_wav

from .conftest import KNOWN_PHONE, silence, start_rig, tone

SPOKEN = tone(5.5) + silence(0.3)


def pcm_of(mulaw: bytes) -> bytes:
    return MULAW_TABLE[np.frombuffer(mulaw, dtype=np.uint8)].tobytes()


async def petition_call(rig, fake_speech):
    fake_speech.say("楼道 的 灯 坏 了")
    result = await rig.simulator().call(CallScript(from_number=KNOWN_PHONE, digits=[None, "1"],
                                                   turns=[Turn(SPOKEN)]))
    (case,) = rig.cases()
    assert result.case_number == case.number
    with session_scope(rig.engine) as s:
        (att,) = case_files(s, case.id, "recording")
    return case, att


def parts_held(engine) -> int:
    with session_scope(engine) as s:
        return len(s.exec(select(AudioPart)).all())


async def keep_held(rig) -> int:
    return await rig.hotline.services.jobs.run_once("main")


@pytest.fixture
def small_disk(tmp_path):
    """``tmp_path/recordings`` on a 64 KiB tmpfs (about two seconds of a call's audio)."""
    folder = tmp_path / "recordings"
    folder.mkdir()
    if shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def grow(folder: Path) -> None:
    subprocess.run(["mount", "-o", "remount,size=8m", str(folder)], check=True)


async def test_a_spool_folder_that_cannot_be_made_still_files_everything(engine, tmp_path, fake_speech):
    (tmp_path / "recordings").write_text("a file where the spool folder should be\n")
    rig = await start_rig(engine, tmp_path, fake_speech)
    try:
        case, att = await petition_call(rig, fake_speech)
        assert case.description == "楼道的灯坏了" and "recording_incomplete" not in (case.flags or [])
        assert att.size == 44 + len(SPOKEN) * 2 and parts_held(engine) > 0
        assert not rig.path(att.path).exists()  # nothing on the broken disk
        assert att.upload_pending  # the console says it waits to be stored
        (job,) = rig.jobs(KEEP_HELD_JOB)
        assert job.payload["sha256"] == att.sha256
        assert await keep_held(rig) == 1
        assert parts_held(engine) > 0  # the disk is still broken: it waits
        (tmp_path / "recordings").unlink()  # the operator fixes the disk
        with session_scope(engine) as s:
            s.execute(update(Job).where(Job.kind == KEEP_HELD_JOB).values(run_at=clock.utcnow() - timedelta(seconds=1)))
        assert await keep_held(rig) == 1
        body = rig.path(att.path).read_bytes()
        assert hashlib.sha256(body).hexdigest() == att.sha256 and parts_held(engine) == 0
        assert read_wav(rig.path(att.path)).pcm == pcm_of(SPOKEN)  # every sample the caller sent
        with session_scope(engine) as s:
            assert not s.get(Attachment, att.id).upload_pending
    finally:
        await rig.stop()


async def test_a_spool_that_fills_mid_petition_loses_nothing(engine, tmp_path, fake_speech, small_disk):
    rig = await start_rig(engine, tmp_path, fake_speech)
    try:
        case, att = await petition_call(rig, fake_speech)
        assert "recording_incomplete" not in (case.flags or [])
        assert att.size == 44 + len(SPOKEN) * 2
        spool_file = rig.path(att.path)
        assert 44 < spool_file.stat().st_size < att.size  # the head the disk took before it filled
        grow(small_disk)
        assert await keep_held(rig) == 1
        assert hashlib.sha256(spool_file.read_bytes()).hexdigest() == att.sha256
        assert read_wav(spool_file).pcm == pcm_of(SPOKEN)
        assert parts_held(engine) == 0
    finally:
        await rig.stop()


async def test_audio_kept_nowhere_flags_the_case_with_the_seconds_kept(engine, tmp_path, fake_speech, small_disk):
    rig = await start_rig(engine, tmp_path, fake_speech, spool_memory_s=0.5, spool_database_s=0.5, spool_part_s=0.4)
    try:
        case, att = await petition_call(rig, fake_speech)
        assert "recording_incomplete" in case.flags
        with session_scope(engine) as s:
            submit = s.exec(select(CaseEvent).where(CaseEvent.case_id == case.id,
                                                   CaseEvent.action == "submit")).one()
            assert s.exec(select(Attachment).where(Attachment.case_id == case.id)).one().id == att.id
        (detail,) = submit.data["recording_incomplete"].values()
        heard = len(SPOKEN) / 8000
        assert detail["heard_s"] == pytest.approx(heard, abs=0.05)
        assert 1.0 < detail["kept_s"] < heard - 1.0  # the disk's head and what the bounds held
        assert att.size == 44 + round(detail["kept_s"] * 16000)
    finally:
        await rig.stop()
