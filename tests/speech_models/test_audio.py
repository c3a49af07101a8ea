"""µ-law, resampling, dither, WAV and container decoding."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speech_models.audio import (
    MULAW_TABLE,
    AudioError,
    Resampler,
    WavWriter,
    decode_file,
    dither,
    mulaw_decode,
    mulaw_encode,
    read_wav,
    resample,
    write_wav,
)

from .conftest import DATA, require

# G.711 µ-law reference points (ITU-T G.711 table 2; bytes as transmitted, inverted).
MULAW_VECTORS = {
    0xFF: 0, 0x7F: 0,  # the two zeros
    0x80: 32124, 0x00: -32124,  # full scale
    0x8F: 16764, 0x0F: -16764,  # top of segment 7
    0xF0: 120, 0x70: -120,  # top of segment 0
    0xFE: 8, 0x7E: -8,  # smallest non-zero step
    0xEF: 132, 0xDF: 396, 0xCF: 924,  # first step of segments 1-3
}


def tone(freq: float, rate: int, seconds: float, amp: float = 10000.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def rms(pcm: bytes, trim: int = 200) -> float:
    x = np.frombuffer(pcm, "<i2").astype(np.float64)[trim:-trim]
    return float(np.sqrt(np.mean(x**2)))


# --- µ-law -------------------------------------------------------------------------


@pytest.mark.parametrize(("byte", "value"), sorted(MULAW_VECTORS.items()))
def test_mulaw_known_vectors(byte, value):
    assert MULAW_TABLE[byte] == value
    assert np.frombuffer(mulaw_decode(bytes([byte])), "<i2")[0] == value


def test_mulaw_table_is_symmetric_and_monotonic():
    pos = MULAW_TABLE[0x80:][::-1].astype(int)  # 0xFF .. 0x80: 0 .. 32124
    assert (np.diff(pos) > 0).all()
    assert (MULAW_TABLE[:0x80] == -MULAW_TABLE[0x80:]).all()


def test_mulaw_matches_sox(tmp_path):
    require(shutil.which("sox") is not None, "sox is not installed")
    raw = bytes(range(256)) * 4
    (tmp_path / "x.ul").write_bytes(raw)
    sox = subprocess.run(
        ["sox", "-t", "raw", "-r", "8000", "-e", "mu-law", "-b", "8", "-c", "1", str(tmp_path / "x.ul"),
         "-t", "raw", "-e", "signed", "-b", "16", "-"],
        check=True, capture_output=True,
    ).stdout
    ours = np.frombuffer(mulaw_decode(raw), "<i2").astype(int)
    theirs = np.frombuffer(sox, "<i2").astype(int)
    assert (ours == theirs).all()


def test_mulaw_encode_roundtrip():
    table = MULAW_TABLE.tobytes()
    assert mulaw_decode(mulaw_encode(table)) == table
    assert mulaw_encode(np.array([0, 32767, -32768], dtype="<i2")) == bytes([0xFF, 0x80, 0x00])


def test_mulaw_decode_rejects_non_bytes():
    with pytest.raises(AudioError, match="must be bytes"):
        mulaw_decode("\x00\x01")  # type: ignore[arg-type]


# --- resampling --------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 3000),
    rates=st.sampled_from([(8000, 16000), (16000, 8000), (48000, 16000), (22050, 16000), (16000, 16000)]),
)
def test_resample_length(n, rates):
    rin, rout = rates
    x = np.random.default_rng(n).integers(-20000, 20000, n).astype("<i2").tobytes()
    got = len(resample(x, rin, rout)) // 2
    if n >= rin // 100:  # 10 ms or more: the whole signal, to within a sample
        assert abs(got - n * rout / rin) <= 1
    else:  # shorter than the filter: swresample may keep part of it back
        assert got <= -(-n * rout // rin)


@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.integers(1, 700), min_size=1, max_size=30),
       rates=st.sampled_from([(8000, 16000), (16000, 8000), (44100, 16000)]))
def test_resample_streaming_equals_offline(cuts, rates):
    """Why the hand-written resampler could go: PyAV's gives the same samples however
    the signal is chunked (1 sample to 700 at a time), so a call's transcript cannot
    depend on how its audio arrived."""
    x = np.random.default_rng(len(cuts)).integers(-30000, 30000, sum(cuts)).astype("<i2")
    r = Resampler(*rates)
    out, pos = b"", 0
    for c in cuts:
        out += r.process(x[pos : pos + c].tobytes())
        pos += c
    out += r.flush()
    assert out == resample(x.tobytes(), *rates)


@pytest.mark.parametrize(("rin", "rout"), [(8000, 16000), (16000, 8000), (48000, 16000)])
def test_resample_keeps_level_of_passband_tone(rin, rout):
    src = tone(1000, rin, 1.0)
    out = resample(src, rin, rout)
    assert rms(out) == pytest.approx(rms(src), rel=0.01)


def test_resample_does_not_shift_time():
    # a click at 0.5 s stays at 0.5 s
    x = np.zeros(8000, "<i2")
    x[4000] = 20000
    y = np.frombuffer(resample(x.tobytes(), 8000, 16000), "<i2")
    assert abs(int(np.argmax(np.abs(y))) - 8000) <= 1


def test_downsampling_removes_what_cannot_be_represented():
    # 6 kHz cannot exist at 8 kHz: it must be filtered, not folded to 2 kHz
    out = resample(tone(6000, 16000, 1.0), 16000, 8000)
    assert rms(out) < 0.01 * 10000


def test_resample_rejects_odd_pcm():
    with pytest.raises(AudioError, match="even number of bytes"):
        resample(b"\x00\x01\x02", 8000, 16000)


def test_dither_is_deterministic_by_position():
    x = bytes(4000)
    whole = dither(x, 0)
    assert dither(x[:1000], 0) + dither(x[1000:], 500) == whole
    noise = np.frombuffer(whole, "<i2").astype(float)
    assert 0.7 < noise.std() < 1.4


# --- WAV ---------------------------------------------------------------------------


def test_wav_roundtrip(tmp_path):
    pcm = tone(440, 8000, 0.5)
    write_wav(tmp_path / "a.wav", pcm, 8000)
    audio = read_wav(tmp_path / "a.wav")
    assert (audio.pcm, audio.sample_rate) == (pcm, 8000)
    assert audio.duration == pytest.approx(0.5)


def test_wav_writer_survives_a_crash(tmp_path):
    w = WavWriter(tmp_path / "rec.wav", 8000)
    w.write(b"\x01\x00" * 800)
    # no close(): the header still says 0 bytes, as after a crash
    assert read_wav(tmp_path / "rec.wav").pcm == b"\x01\x00" * 800
    w.write(b"\x02\x00" * 800)
    w.close()
    assert read_wav(tmp_path / "rec.wav").duration == pytest.approx(0.2)


def test_wav_cut_short_is_read_as_far_as_it_goes(tmp_path):
    pcm = tone(440, 8000, 0.5)
    write_wav(tmp_path / "a.wav", pcm, 8000)
    cut = (tmp_path / "a.wav").read_bytes()[:-2001]  # the header still promises all of it
    assert read_wav(cut).pcm == pcm[:len(cut) - 44 - 1]


def test_mulaw_wav_decodes_exactly_like_the_g711_table():
    """µ-law WAVs (the ``wave`` module cannot read them) go through FFmpeg."""
    ulaw = bytes(range(256)) * 8
    header = (b"RIFF" + struct.pack("<I", 4 + 26 + 8 + len(ulaw)) + b"WAVEfmt "
              + struct.pack("<IHHIIHHH", 18, 7, 1, 8000, 8000, 1, 8, 0)
              + b"data" + struct.pack("<I", len(ulaw)))
    audio = read_wav(header + ulaw)
    assert (audio.pcm, audio.sample_rate) == (mulaw_decode(ulaw), 8000)


@pytest.mark.parametrize("args", [["-e", "mu-law", "-b", "8"], ["-e", "unsigned", "-b", "8"],
                                  ["-e", "signed", "-b", "24"], ["-e", "floating-point", "-b", "32"],
                                  ["-c", "2", "-e", "signed", "-b", "16"]])
def test_read_wav_formats_written_by_sox(tmp_path, args):
    require(shutil.which("sox") is not None, "sox is not installed")
    src = tmp_path / "src.wav"
    write_wav(src, tone(500, 8000, 0.5), 8000)
    dst = tmp_path / "dst.wav"
    subprocess.run(["sox", str(src), *args, str(dst)], check=True)
    audio = read_wav(dst)
    assert audio.sample_rate == 8000
    assert len(audio.pcm) == 8000
    assert rms(audio.pcm) == pytest.approx(10000 / np.sqrt(2), rel=0.03)


@pytest.mark.parametrize("blob", [b"", b"RIFF", b"RIFF\x00\x00\x00\x00WAVEjunk", b"hello world" * 10])
def test_read_wav_garbage(blob):
    with pytest.raises(AudioError):
        read_wav(blob)


# --- containers ------------------------------------------------------------------------


def test_decode_ogg_opus_fixture():
    audio = decode_file(DATA / "yes.ogg", 16000)
    assert audio.sample_rate == 16000
    assert 1.7 < audio.duration < 2.0
    assert rms(audio.pcm) > 500  # there is speech in it


def test_decode_corrupt_ogg_is_a_clear_error():
    with pytest.raises(AudioError, match="corrupt.ogg: not a readable audio file"):
        decode_file(DATA / "corrupt.ogg")


def test_decode_truncated_ogg_keeps_what_is_there(tmp_path):
    data = (DATA / "yes.ogg").read_bytes()
    cut = tmp_path / "cut.ogg"
    cut.write_bytes(data[:-400])
    audio = decode_file(cut, 16000)
    assert 0.5 < audio.duration < decode_file(DATA / "yes.ogg", 16000).duration


@pytest.mark.parametrize(("content", "match"), [(b"", "empty file"), (b"not audio at all" * 50, "not a readable")])
def test_decode_bad_files(tmp_path, content, match):
    p = tmp_path / "x.ogg"
    p.write_bytes(content)
    with pytest.raises(AudioError, match=match):
        decode_file(p)


def test_decode_missing_file(tmp_path):
    with pytest.raises(AudioError, match="no such file"):
        decode_file(tmp_path / "nope.wav")


def test_decode_bytes_and_wav_resampling(tmp_path):
    write_wav(tmp_path / "a.wav", tone(300, 8000, 1.0), 8000)
    audio = decode_file((tmp_path / "a.wav").read_bytes(), 16000)
    assert audio.duration == pytest.approx(1.0)
    ogg = decode_file((DATA / "yes.ogg").read_bytes(), 8000)
    assert ogg.sample_rate == 8000 and ogg.duration > 1.5


def test_decode_mp3_made_by_pyav(tmp_path):
    import av

    path = tmp_path / "a.mp3"
    with av.open(str(path), "w") as out:
        s = out.add_stream("libmp3lame" if "libmp3lame" in av.codecs_available else "mp3", rate=16000)
        x = np.frombuffer(tone(400, 16000, 1.0), "<i2")
        for i in range(0, len(x), 1152):
            f = av.AudioFrame.from_ndarray(x[i : i + 1152].reshape(1, -1), format="s16", layout="mono")
            f.sample_rate = 16000
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode(None):
            out.mux(p)
    audio = decode_file(path, 16000)
    assert 0.9 < audio.duration < 1.2
    assert isinstance(Path(path), Path)
