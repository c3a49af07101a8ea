"""The scripted fake transcriber the hotline, chat and pool tests use."""

from __future__ import annotations

from pathlib import Path

import pytest

from speech_models.audio import AudioError
from tests.support.fake_transcriber import FakeTranscriber, audio_key

DATA = Path(__file__).resolve().parents[1] / "speech_models" / "data"


def run(fake, data: bytes, **kw):
    s = fake.open_stream(8000, encoding="mulaw", **kw)
    for i in range(0, len(data), 160):
        s.accept(data[i : i + 160])
    return s.finish()


def test_queue_default_and_normalisation():
    fake = FakeTranscriber(default="听不清").say("三 号 楼 二 单元 路灯 坏 了", "一 三 八 零 零 一 三 八 零 零 零")
    a = run(fake, b"\xff" * 1600)
    b = run(fake, b"\xff" * 800)
    c = run(fake, b"\xff" * 800)
    assert (a.text, b.text, c.text) == ("3号楼2单元路灯坏了", "13800138000", "听不清")
    assert a.duration == pytest.approx(0.2) and a.confidence == pytest.approx(0.9)
    assert a.words[0].start == 0.0 and a.words[-1].end == pytest.approx(0.2)
    assert [s.received for s in fake.streams] == [1600, 800, 800]
    assert fake.transcripts == [a, b, c]


def test_script_by_audio_bytes_beats_the_queue():
    audio = bytes(range(256)) * 10
    fake = FakeTranscriber().say("queued")
    fake.script(audio, "scripted")
    assert run(fake, audio).text == "scripted"  # keyed by everything fed, however chunked
    assert run(fake, audio[:100]).text == ""  # queue was taken by the first stream


def test_script_by_hash_and_file():
    fake = FakeTranscriber()
    fake.script(DATA / "yes.ogg", "满意")
    assert fake.transcribe_file(DATA / "yes.ogg").text == "满意"
    fake.script(audio_key(b"\x01\x02"), "是")
    s = fake.open_stream(8000, encoding="pcm16")
    s.accept(b"\x01")
    s.accept(b"\x02")
    assert s.finish().text == "是"


def test_phrases_limit_the_fake_like_the_real_one():
    fake = FakeTranscriber().say("随便 说 的").say_in_grammar("满意", "我 不 知道")
    assert run(fake, b"\xff" * 160, phrases=["满意", "基本满意", "不满意"]).text == "满意"
    assert run(fake, b"\xff" * 160, phrases=["满意", "基本满意", "不满意"]).text == ""
    assert run(fake, b"\xff" * 160, phrases=["满意"]).text == ""  # nothing queued in grammar
    assert run(fake, b"\xff" * 160).text == "随便说的"  # the free queue was left alone
    assert fake.streams[0].phrases == ("满意", "基本满意", "不满意")


def test_fake_raises_on_corrupt_files_like_the_real_one():
    with pytest.raises(AudioError):
        FakeTranscriber(default="x").transcribe_file(DATA / "corrupt.ogg")


def test_fake_partials_and_reset():
    fake = FakeTranscriber(partials=True).say("你好")
    s = fake.open_stream(8000, encoding="mulaw")
    [partial] = s.accept(b"\xff" * 160)
    assert (partial.final, partial.text) == (False, "你好")
    assert s.accept(b"\xff" * 160) == []
    assert s.finish().segments[0].final
    fake.reset()
    assert fake.streams == [] and run(fake, b"\xff").text == ""


def test_fake_transcribe_pcm():
    fake = FakeTranscriber().say("好 的")
    t = fake.transcribe_pcm(bytes(32000), 16000)
    assert (t.text, t.duration) == ("好的", 1.0)
