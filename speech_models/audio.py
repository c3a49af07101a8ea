"""Audio plumbing for speech recognition: µ-law, resampling, WAV files, container decoding.

Everything here works on mono signed 16-bit little-endian PCM (``pcm16``), the format
Vosk takes. Libraries do the work: the standard library's ``wave`` for Gridline's own
WAV files, FFmpeg through PyAV for resampling and every other format; the µ-law table
and the dither are a few lines of numpy. Nothing uses ``audioop`` (removed in Python 3.13).
"""

from __future__ import annotations

import io
import os
import struct
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np

__all__ = [
    "AudioError",
    "DecodedAudio",
    "MULAW_TABLE",
    "Resampler",
    "WavWriter",
    "decode_file",
    "dither",
    "mulaw_decode",
    "mulaw_encode",
    "read_wav",
    "repair_wav_header",
    "resample",
    "write_wav",
]


class AudioError(ValueError):
    """Audio that cannot be read: corrupt or unsupported file, wrong input type."""


# --- G.711 µ-law -------------------------------------------------------------------


def _build_mulaw_table() -> np.ndarray:
    # G.711: bytes are stored inverted; 3-bit exponent, 4-bit mantissa, bias 0x84.
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(u & 0x80, -magnitude, magnitude).astype("<i2")


MULAW_TABLE: np.ndarray = _build_mulaw_table()
MULAW_TABLE.setflags(write=False)


def mulaw_decode(data: bytes | bytearray | memoryview) -> bytes:
    """µ-law bytes -> pcm16 bytes (two bytes per input byte)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise AudioError(f"µ-law audio must be bytes, not {type(data).__name__}")
    return MULAW_TABLE[np.frombuffer(data, dtype=np.uint8)].tobytes()


def mulaw_encode(pcm: bytes | np.ndarray) -> bytes:
    """pcm16 -> µ-law (used to make telephone-like audio for tests and benchmarks)."""
    x = pcm if isinstance(pcm, np.ndarray) else _pcm16_array(pcm)
    x = x.astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    mag = np.minimum(np.abs(x), 32635) + 0x84
    # exponent = position of the highest set bit above bit 7
    exponent = np.floor(np.log2(mag)).astype(np.int32) - 7
    exponent = np.clip(exponent, 0, 7)
    mantissa = (mag >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def _pcm16_array(pcm: bytes | bytearray | memoryview) -> np.ndarray:
    if not isinstance(pcm, bytes | bytearray | memoryview):
        raise AudioError(f"PCM audio must be bytes, not {type(pcm).__name__}")
    if len(pcm) % 2:
        raise AudioError(f"16-bit PCM needs an even number of bytes, got {len(pcm)}")
    return np.frombuffer(pcm, dtype="<i2")


# --- resampling --------------------------------------------------------------------


class Resampler:
    """Streaming resampler for pcm16: FFmpeg's swresample, through PyAV.

    State is carried across calls, so feeding a signal in chunks of any size gives
    exactly the samples that feeding it at once gives, without shifting it in time
    (``tests/speech_models/test_audio.py`` holds PyAV to that); ``flush()`` ends the
    signal and returns what the filter still holds.
    """

    def __init__(self, rate_in: int, rate_out: int):
        if rate_in <= 0 or rate_out <= 0:
            raise ValueError(f"sample rates must be positive: {rate_in} -> {rate_out}")
        self.rate_in, self.rate_out = rate_in, rate_out
        self.identity = rate_in == rate_out
        self._swr = None
        self._flushed = False

    def process(self, pcm: bytes | np.ndarray) -> bytes:
        """Feed pcm16 samples, get the resampled samples that are complete so far."""
        if self._flushed:
            raise RuntimeError("resampler already flushed")
        x = pcm if isinstance(pcm, np.ndarray) else _pcm16_array(pcm)
        if self.identity or not len(x):
            return x.astype("<i2").tobytes()
        if self._swr is None:
            self._swr = av.AudioResampler(format="s16", layout="mono", rate=self.rate_out)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(x, dtype=np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = self.rate_in
        return b"".join(_frame_bytes(f) for f in self._swr.resample(frame))

    def flush(self) -> bytes:
        """End of signal: the samples the filter still holds."""
        if self._flushed:
            return b""
        self._flushed = True
        if self._swr is None:
            return b""
        return b"".join(_frame_bytes(f) for f in self._swr.resample(None))


def resample(pcm: bytes, rate_in: int, rate_out: int) -> bytes:
    """Resample a whole pcm16 signal (same result as streaming it through ``Resampler``)."""
    r = Resampler(rate_in, rate_out)
    return r.process(pcm) + r.flush()


# Gaussian noise of a fixed seed, indexed by absolute sample position: the same audio
# always gets the same noise, however it is chunked.
_DITHER_NOISE = np.random.default_rng(20240).standard_normal(1 << 16)


def dither(pcm: bytes, offset: int = 0, level: float = 1.0) -> bytes:
    """Add deterministic Gaussian noise (std ``level`` LSB) to pcm16.

    Kaldi features take the log of filter-bank energies; band-limited telephone audio
    leaves the upper bands empty, and without a noise floor they fall to the log floor
    the model never saw in training. Kaldi's own dither draws from a process-global
    random state (so results vary run to run and between concurrent streams); this one
    is a pure function of ``offset`` (the index of the first sample in the stream).
    """
    if level <= 0 or not pcm:
        return pcm
    x = _pcm16_array(pcm).astype(np.float64)
    idx = (np.arange(len(x)) + offset) % len(_DITHER_NOISE)
    y = np.rint(x + level * _DITHER_NOISE[idx])
    return np.clip(y, -32768, 32767).astype("<i2").tobytes()


# --- WAV ---------------------------------------------------------------------------

_WAVE_PCM = 1
_CANONICAL_HEADER = 44  # RIFF, fmt and data chunk headers, as WavWriter writes them


@dataclass
class DecodedAudio:
    """Mono pcm16 at ``sample_rate``."""

    pcm: bytes
    sample_rate: int

    @property
    def duration(self) -> float:
        return len(self.pcm) / 2 / self.sample_rate if self.sample_rate else 0.0


def _wav_header(sample_rate: int, data_bytes: int) -> bytes:
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, _WAVE_PCM, 1, sample_rate, sample_rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


def write_wav(path: str | os.PathLike, pcm: bytes, sample_rate: int) -> Path:
    """Write mono pcm16 as a WAV file (atomically: temp file, then rename)."""
    path = Path(path)
    _pcm16_array(pcm)
    tmp = path.with_name(f".{path.name}.tmp")
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm)
    os.replace(tmp, path)
    return path


class WavWriter:
    """Appends pcm16 to a WAV file as it arrives, keeping the header true as it goes.

    Each ``write`` reaches the OS at once, so a crash (even SIGKILL) loses nothing already
    received. The header's sizes are rewritten after every ``header_every_s`` of audio
    (default one second) and on ``close``, so a file cut off by a crash is a valid WAV
    that at most misses its last second in tools that trust the header (sox, players);
    ``repair_wav_header`` makes it exact again. Why not a ``.part`` file renamed at the
    end: the path stays the same from the first byte, so the database can name it before
    any audio arrives and an operator can play a recording that is still growing.
    """

    def __init__(self, path: str | os.PathLike, sample_rate: int, *, header_every_s: float = 1.0):
        self.path = Path(path)
        self.sample_rate = sample_rate
        self.bytes_written = 0
        self._header_every = max(2, int(header_every_s * sample_rate) * 2)
        self._header_at = 0  # bytes_written when the header was last made true
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f: BinaryIO | None = open(self.path, "wb")  # noqa: SIM115 - lives as long as the writer
        self._f.write(_wav_header(sample_rate, 0))
        self._f.flush()

    def write(self, pcm: bytes) -> None:
        if self._f is None:
            raise RuntimeError(f"{self.path} is closed")
        self._f.write(pcm)
        self.bytes_written += len(pcm)
        if self.bytes_written - self._header_at >= self._header_every:
            self._update_header()
        self._f.flush()

    def _update_header(self) -> None:
        # Only whole samples count: a crash between the two bytes of a sample must not
        # leave a header that promises half of one.
        size = self.bytes_written - self.bytes_written % 2
        self._f.seek(4)
        self._f.write(struct.pack("<I", 36 + size))
        self._f.seek(40)
        self._f.write(struct.pack("<I", size))
        self._f.seek(0, os.SEEK_END)
        self._header_at = self.bytes_written

    def close(self) -> Path:
        if self._f is not None:
            self._update_header()
            self._f.close()
            self._f = None
        return self.path

    @property
    def closed(self) -> bool:
        return self._f is None

    def __enter__(self) -> WavWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def repair_wav_header(path: str | os.PathLike) -> bool:
    """Make the RIFF and data sizes of a WAV file cut short (a crash while recording)
    match the bytes on disk. Only a file whose ``data`` chunk is the last one is changed;
    a trailing half sample is cut off. Returns whether anything was rewritten."""
    path = Path(path)
    with open(path, "r+b") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise AudioError(f"{path}: not a RIFF/WAVE file")
        total = f.seek(0, os.SEEK_END)
        pos = 12
        while pos + 8 <= total:
            f.seek(pos)
            cid, size = f.read(4), struct.unpack("<I", f.read(4))[0]
            if cid == b"data":
                start = pos + 8
                usable = total - start
                usable -= usable % 2
                if size == usable and struct.unpack("<I", head[4:8])[0] == start + usable - 8:
                    return False
                if start + usable < total:
                    f.truncate(start + usable)
                f.seek(pos + 4)
                f.write(struct.pack("<I", usable))
                f.seek(4)
                f.write(struct.pack("<I", start + usable - 8))
                return True
            pos += 8 + size + (size & 1)
    raise AudioError(f"{path}: no data chunk")


def read_wav(source: str | os.PathLike | bytes) -> DecodedAudio:
    """Read a WAV file (``source`` may be its bytes) to mono pcm16 at the file's own rate.

    16-bit mono PCM, what Gridline records, is read by the standard library's ``wave``.
    Other encodings (8/24/32-bit, float, µ-law, several channels) are decoded by FFmpeg
    (PyAV), and so is a recording whose header was never finished (a crash while writing
    left its data size at 0): FFmpeg reads such a file to its end. Data that stops short
    of the size in the header is read as far as it goes.
    """
    raw = source if isinstance(source, bytes) else Path(source).read_bytes()
    name = "WAV data" if isinstance(source, bytes) else str(source)
    if len(raw) < 12 or raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        raise AudioError(f"{name}: not a RIFF/WAVE file")
    try:
        with wave.open(io.BytesIO(raw)) as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            frames = w.getnframes()
            data = w.readframes(frames) if (channels, width) == (1, 2) else b""
    except (wave.Error, EOFError):  # an encoding ``wave`` does not read, or no usable header
        return _decode_with_av(raw, name, None)
    if (channels, width) != (1, 2) or (frames == 0 and len(raw) > _CANONICAL_HEADER):
        return _decode_with_av(raw, name, None)
    return DecodedAudio(data[: len(data) - len(data) % 2], rate)


# --- any container, via PyAV -------------------------------------------------------


def decode_file(path: str | os.PathLike | bytes, sample_rate: int = 16000) -> DecodedAudio:
    """Decode any audio file (WAV, OGG/Opus, MP3, M4A, …) to mono pcm16 at ``sample_rate``.

    ``path`` may also be the file's bytes. Raises ``AudioError`` with the reason when the
    file is not audio or is corrupt; an empty but valid file gives empty audio.
    """
    name = "audio data" if isinstance(path, bytes) else str(path)
    if not isinstance(path, bytes):
        p = Path(path)
        if not p.is_file():
            raise AudioError(f"{name}: no such file")
        if p.stat().st_size == 0:
            raise AudioError(f"{name}: empty file")
    elif not path:
        raise AudioError("empty audio data")
    return _decode_with_av(path, name, sample_rate)


def _decode_with_av(path, name: str, sample_rate: int | None) -> DecodedAudio:
    """Mono pcm16 at ``sample_rate`` (``None``: the file's own rate)."""
    source = io.BytesIO(path) if isinstance(path, bytes) else str(path)
    out = bytearray()
    try:
        container = av.open(source, mode="r")
    except (av.FFmpegError, OSError, ValueError) as e:
        raise AudioError(f"{name}: not a readable audio file ({_av_reason(e)})") from None
    with container:
        streams = container.streams.audio
        if not streams:
            raise AudioError(f"{name}: the file has no audio stream")
        sample_rate = sample_rate or streams[0].rate
        resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
        try:
            for frame in container.decode(streams[0]):
                for f in resampler.resample(frame):
                    out += _frame_bytes(f)
            for f in resampler.resample(None):
                out += _frame_bytes(f)
        except (av.FFmpegError, OSError, ValueError) as e:
            # A voice note cut short still carries what was said before the damage;
            # a file with nothing decodable is an error.
            if not out:
                raise AudioError(f"{name}: corrupt audio ({_av_reason(e)})") from None
    return DecodedAudio(bytes(out), sample_rate)


def _frame_bytes(frame) -> bytes:
    # Packed s16 mono: the plane may be padded beyond the samples.
    return bytes(frame.planes[0])[: frame.samples * 2]


def _av_reason(e: Exception) -> str:
    return getattr(e, "strerror", None) or str(e) or type(e).__name__
