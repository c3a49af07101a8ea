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


class EndOfSpeech:
    """The caller's turn is over: speech heard, then ``quiet_s`` without. Counted in audio
    time (20 ms frames, the same loudness measure as above), so it is the same whether the
    frames come at the pace of speech or in a burst after a stall. Speech counts only after
    ``arm_s`` (the prompt is being said until then: a 喂 over the greeting is not the turn),
    and the turn can end only after ``min_speech_s`` of it (a cough does not end it)."""

    def __init__(self, threshold: float, *, quiet_s: float, min_speech_s: float, arm_s: float = 0.0,
                 ongoing: bool = False):
        self.threshold = threshold
        # The caller is already mid-sentence (the rest of a turn they went on with over its
        # read-back): quiet from the first frame ends it, no new speech needed.
        self.ongoing = ongoing
        self.quiet_s = quiet_s
        self.min_speech_s = min_speech_s
        self.arm_s = arm_s
        self.heard_s = 0.0  # audio seen
        self.speech_s = 0.0  # speech after arm_s
        self.quiet_run_s = 0.0  # quiet since the last speech frame
        self.ended = False

    def feed(self, mulaw: bytes) -> bool:
        """True once, at the frame that ends the turn."""
        if self.ended:
            return False
        for rms in frame_rms(mulaw):
            self.heard_s += 0.02
            if self.heard_s <= self.arm_s:
                continue
            if rms > self.threshold:
                self.speech_s += 0.02
                self.quiet_run_s = 0.0
            else:
                self.quiet_run_s += 0.02
            # a little slack for float sums of 0.02
            spoke = self.ongoing or (self.speech_s > 0 and self.speech_s >= self.min_speech_s - 1e-6)
            if spoke and self.quiet_run_s >= self.quiet_s - 1e-6:
                self.ended = True
                return True
        return False


class BargeIn:
    """The caller goes on speaking while a prompt (the read-back) is being said: more than
    ``min_speech_s`` of speech (20 ms frames louder than the threshold: a cough is less)
    within the first ``within_s`` of the stream. After that the turn is an answer as usual."""

    def __init__(self, threshold: float, *, min_speech_s: float, within_s: float):
        self.threshold = threshold
        self.min_speech_s = min_speech_s
        self.within_s = within_s
        self.heard_s = 0.0
        self.speech_s = 0.0
        self.fired = False

    @property
    def over(self) -> bool:
        """The prompt has been said (or the caller barged in): nothing more to watch."""
        return self.fired or self.heard_s > self.within_s

    def feed(self, mulaw: bytes) -> bool:
        """True once, at the frame that makes it a barge-in."""
        if self.over:
            return False
        for rms in frame_rms(mulaw):
            self.heard_s += 0.02
            if self.heard_s > self.within_s:
                return False
            if rms > self.threshold:
                self.speech_s += 0.02
                if self.speech_s >= max(self.min_speech_s, 0.02) - 1e-6:
                    self.fired = True
                    return True
        return False
