"""How much of a recording is speech: 20 ms frames louder than a threshold. One measure for
the live stream (µ-law frames, ``ivr.stream``) and for a recording measured from its WAV
afterwards (pcm16, ``ivr.calls``, ``ivr.survey_calls``)."""

from __future__ import annotations

import numpy as np

from speech_models.audio import MULAW_TABLE

FRAME_BYTES = 160  # 20 ms of 8 kHz µ-law


def frame_rms(mulaw: bytes) -> np.ndarray:
    """RMS of each 20 ms frame of µ-law audio (pcm16 scale)."""
    x = MULAW_TABLE[np.frombuffer(mulaw, dtype=np.uint8)].astype(np.float64)
    n = len(x) // FRAME_BYTES
    if n == 0:
        return np.zeros(0)
    return np.sqrt((x[: n * FRAME_BYTES].reshape(n, FRAME_BYTES) ** 2).mean(axis=1))


def speech_seconds(mulaw: bytes, threshold: float) -> float:
    return float((frame_rms(mulaw) > threshold).sum()) * 0.02


def pcm_speech_seconds(pcm: bytes, sample_rate: int, threshold: float) -> float:
    """Seconds of 20 ms pcm16 frames louder than ``threshold`` (same measure as live)."""
    x = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2").astype(np.float64)
    step = sample_rate // 50
    n = len(x) // step
    if n == 0:
        return 0.0
    rms = np.sqrt((x[: n * step].reshape(n, step) ** 2).mean(axis=1))
    return float((rms > threshold).sum()) * 0.02
