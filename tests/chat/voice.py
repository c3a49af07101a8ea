"""Real voice notes for tests: espeak-ng speaks, PyAV encodes Opus in an OGG container,
as Telegram's clients send them."""

from __future__ import annotations

import io
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from speech_models.audio import read_wav, resample


def speak(text: str, voice: str) -> tuple[bytes, int]:
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "say.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", "140", "-w", str(wav), text], check=True,
                       capture_output=True)
        audio = read_wav(wav)
    return audio.pcm, audio.sample_rate


def ogg_opus(pcm: bytes, sample_rate: int) -> bytes:
    """Mono pcm16 -> OGG/Opus at 48 kHz (Telegram voice notes)."""
    pcm48 = resample(pcm, sample_rate, 48000)
    samples = np.frombuffer(pcm48, dtype="<i2")
    out = io.BytesIO()
    with av.open(out, mode="w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=48000)
        stream.layout = "mono"
        stream.bit_rate = 32000
        frame_size = 960
        pts = 0
        for i in range(0, len(samples), frame_size):
            chunk = samples[i:i + frame_size]
            if len(chunk) < frame_size:
                chunk = np.pad(chunk, (0, frame_size - len(chunk)))
            frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = 48000
            frame.pts = pts
            frame.time_base = Fraction(1, 48000)
            pts += frame_size
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def voice_note(text: str, voice: str = "cmn-latn-pinyin") -> bytes:
    return ogg_opus(*speak(text, voice))
