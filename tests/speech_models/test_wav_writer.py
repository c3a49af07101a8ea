"""``WavWriter`` keeps its header true while it writes, and ``repair_wav_header`` fixes a
file a crash cut short. Checked with the standard library's ``wave`` (which trusts the
header, as sox and players do) and, where installed, with sox itself."""

from __future__ import annotations

import shutil
import struct
import subprocess
import wave

import numpy as np
import pytest

from speech_models.audio import AudioError, WavWriter, read_wav, repair_wav_header, write_wav


def pcm(seconds: float, rate: int = 8000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (3000 * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes()


def header_frames(path) -> int:
    with wave.open(str(path), "rb") as w:
        return w.getnframes()


def test_header_is_true_every_second_while_writing(tmp_path):
    path = tmp_path / "live.wav"
    writer = WavWriter(path, 8000)
    audio = pcm(2.5)
    for i in range(0, len(audio), 320):  # 20 ms at a time, as the socket delivers it
        writer.write(audio[i : i + 320])
    # Not closed (as after SIGKILL): the header already covers all but the last second.
    frames = header_frames(path)
    assert 1.5 * 8000 <= frames <= 2.5 * 8000
    assert path.stat().st_size == 44 + len(audio)
    writer.close()
    assert header_frames(path) == 2.5 * 8000


def test_repair_makes_a_cut_recording_exact(tmp_path):
    path = tmp_path / "cut.wav"
    writer = WavWriter(path, 8000)
    audio = pcm(3.3)
    for i in range(0, len(audio), 320):
        writer.write(audio[i : i + 320])
    # The process dies here: no close, the last header update was at 3 s.
    assert header_frames(path) == 3 * 8000
    with open(path, "ab") as f:  # and the crash split a sample in two
        f.write(b"\x01")
    assert repair_wav_header(path) is True
    assert header_frames(path) == int(3.3 * 8000)
    assert path.stat().st_size == 44 + int(3.3 * 8000) * 2
    assert read_wav(path).pcm == pcm(3.3)
    assert repair_wav_header(path) is False  # already true: untouched


def test_repair_of_a_header_never_updated(tmp_path):
    path = tmp_path / "zero.wav"
    write_wav(path, b"", 8000)
    with open(path, "ab") as f:
        f.write(pcm(0.5))
    assert header_frames(path) == 0
    assert repair_wav_header(path)
    assert header_frames(path) == 4000


def test_repair_refuses_what_is_not_a_wav(tmp_path):
    path = tmp_path / "x.wav"
    path.write_bytes(b"not audio at all")
    with pytest.raises(AudioError):
        repair_wav_header(path)
    path.write_bytes(b"RIFF" + struct.pack("<I", 4) + b"WAVE")
    with pytest.raises(AudioError):
        repair_wav_header(path)


@pytest.mark.skipif(not shutil.which("sox"), reason="sox not installed")
def test_sox_reads_an_unclosed_recording(tmp_path):
    path = tmp_path / "live.wav"
    writer = WavWriter(path, 8000)
    writer.write(pcm(2.2))
    out = subprocess.run(["sox", "--i", "-D", str(path)], capture_output=True, text=True, check=True)
    assert float(out.stdout) >= 2.0
    repair_wav_header(path)
    out = subprocess.run(["sox", "--i", "-D", str(path)], capture_output=True, text=True, check=True)
    assert float(out.stdout) == pytest.approx(2.2)
