"""Real media made in the test, with the encoders a phone uses: PyAV for audio (OGG/Opus as
Telegram's voice notes, MP3, AAC in MP4, PCM WAV, Opus in WebM as a browser records),
Pillow for photos. Each one is a short, genuine file a browser plays or shows."""

from __future__ import annotations

import io
import math
import struct
import wave
from fractions import Fraction

import av
import numpy as np

# (container, codec, sample rate, samples per frame)
AUDIO_FORMATS = {
    "ogg": ("ogg", "libopus", 48000, 960),
    "mp3": ("mp3", "libmp3lame", 44100, 1152),
    "m4a": ("mp4", "aac", 44100, 1024),
    "webm": ("webm", "libopus", 48000, 960),
}


def tone(seconds: float, rate: int, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (3000 * np.sin(2 * math.pi * hz * t)).astype("<i2")


def audio(kind: str, seconds: float = 1.0) -> bytes:
    """A short tone in the given format (ogg, mp3, m4a, webm, wav)."""
    if kind == "wav":
        return wav(seconds)
    container, codec, rate, frame_size = AUDIO_FORMATS[kind]
    samples = tone(seconds, rate)
    out = io.BytesIO()
    with av.open(out, mode="w", format=container) as media:
        stream = media.add_stream(codec, rate=rate)
        stream.layout = "mono"
        pts = 0
        for i in range(0, len(samples), frame_size):
            chunk = samples[i:i + frame_size]
            if len(chunk) < frame_size:
                chunk = np.pad(chunk, (0, frame_size - len(chunk)))
            frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = rate
            frame.pts = pts
            frame.time_base = Fraction(1, rate)
            pts += frame_size
            for packet in stream.encode(frame):
                media.mux(packet)
        for packet in stream.encode(None):
            media.mux(packet)
    return out.getvalue()


def wav(seconds: float = 1.0, rate: int = 8000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(v)) for v in tone(seconds, rate)))
    return out.getvalue()


def image(kind: str, size: tuple[int, int] = (64, 48)) -> bytes:
    """A small photo-like picture (jpeg, png, webp)."""
    from PIL import Image

    pixels = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    pixels[..., 0] = np.linspace(0, 255, size[0], dtype=np.uint8)[None, :]
    pixels[..., 1] = np.linspace(0, 255, size[1], dtype=np.uint8)[:, None]
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, format={"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}[kind])
    return out.getvalue()
