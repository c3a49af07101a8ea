"""The async pool: recognition off the event loop, audio on disk at once, nothing dropped."""

from __future__ import annotations

import asyncio
import threading

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from speech_models.audio import mulaw_decode, read_wav
from speech_models.pool import SpeechPool
from tests.support.fake_transcriber import FakeStream, FakeTranscriber
from tests.support.waiting import until

from .conftest import DATA


class SlowFake(FakeTranscriber):
    """A fake whose recognition takes time and can be held back."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.gate = threading.Event()
        self.inside = 0  # recognition calls that reached the gate
        self.chunks: list[bytes] = []

    def open_stream(self, *a, **kw):
        stream = super().open_stream(*a, **kw)
        accept = stream.accept

        def slow_accept(data, _accept=accept):
            with self._lock:
                self.inside += 1
            self.gate.wait(60)
            self.chunks.append(bytes(data))
            return _accept(data)

        stream.accept = slow_accept
        return stream


async def test_feed_never_waits_and_never_drops(tmp_path):
    fake = SlowFake().say("路灯 坏 了")
    async with SpeechPool(fake, workers=1, recordings=tmp_path) as pool:
        stream = await pool.open_stream(8000, encoding="mulaw")
        frames = [bytes([i]) * 160 for i in range(100)]  # 2 s of 20 ms frames
        for f in frames:  # the worker is held at the gate; feeding does not wait for it
            stream.feed(f)
        # durable first: every byte is on disk before any is recognised
        assert read_wav(stream.recording).pcm == mulaw_decode(b"".join(frames))
        assert fake.chunks == [] and stream.backlog >= 160 * 90  # queued, not lost
        fake.gate.set()
        transcript = await stream.finish()
    assert transcript.text == "路灯坏了" and transcript.duration == pytest.approx(2.0)
    assert b"".join(fake.chunks) == b"".join(frames)  # in order, all of it
    assert len(fake.chunks) < 100  # the backlog went over in larger steps
    assert read_wav(stream.recording).duration == pytest.approx(2.0)


async def test_many_streams_on_few_workers_all_finish(tmp_path):
    fake = FakeTranscriber()
    async with SpeechPool(fake, workers=2, recordings=tmp_path) as pool:
        streams = []
        for i in range(6):
            fake.say(f"第 {i} 个")
            streams.append(await pool.open_stream(8000, encoding="mulaw"))
        for _ in range(50):
            for s in streams:
                s.feed(b"\xff" * 160)
            await asyncio.sleep(0)
        transcripts = await asyncio.gather(*(s.finish() for s in streams))
    assert [t.text for t in transcripts] == [f"第{i}个" for i in range(6)]
    assert all(t.duration == pytest.approx(1.0) for t in transcripts)
    assert len(list(tmp_path.glob("*.wav"))) == 6


async def test_segments_iterator_and_record_to(tmp_path):
    fake = FakeTranscriber(partials=True).say("你好")
    async with SpeechPool(fake, workers=1) as pool:
        stream = await pool.open_stream(8000, encoding="pcm16", record_to=tmp_path / "call.wav")
        got = []

        async def consume():
            async for seg in stream.segments():
                got.append((seg.final, seg.text))

        task = asyncio.create_task(consume())
        stream.feed(bytes(1600))  # one 100 ms batch
        await until(lambda: stream.partial_text == "你好", message="the partial result")
        await stream.finish()
        await task
    assert got == [(False, "你好"), (True, "你好")]
    assert read_wav(tmp_path / "call.wav").duration == pytest.approx(0.1)
    with pytest.raises(RuntimeError):
        stream.feed(b"\x00\x00")


async def test_errors_surface_at_finish(tmp_path):
    class Broken(FakeTranscriber):
        def open_stream(self, *a, **kw):
            s = super().open_stream(*a, **kw)

            def boom(data):
                raise ValueError("decoder exploded")

            s.accept = boom
            return s

    async with SpeechPool(Broken(), workers=1, recordings=tmp_path) as pool:
        stream = await pool.open_stream()
        stream.feed(b"\xff" * 160)
        with pytest.raises(ValueError, match="exploded"):
            await stream.finish()
        assert read_wav(stream.recording).duration == pytest.approx(0.02)  # audio kept
        with pytest.raises(TypeError):
            (await pool.open_stream()).feed("text")  # type: ignore[arg-type]


async def test_transcribe_file_through_the_pool():
    fake = FakeTranscriber()
    fake.script(DATA / "yes.ogg", "好 的")
    async with SpeechPool(fake, workers=1) as pool:
        assert (await pool.transcribe_file(DATA / "yes.ogg")).text == "好的"
        assert isinstance(fake.streams[0], FakeStream)


async def test_http_is_served_while_every_worker_is_recognising(tmp_path):
    """Recognition runs off the event loop: with both workers held inside the recogniser,
    a route on the same loop still answers. (How fast it answers while real streams
    decode is measured by bench/speech.py, not asserted here.)"""
    async def ping(request):
        return web.Response(text="pong")

    app = web.Application()
    app.router.add_get("/ping", ping)
    fake = SlowFake().say("一", "二")
    async with TestClient(TestServer(app)) as client, SpeechPool(fake, workers=2) as pool:
        streams = [await pool.open_stream(8000, encoding="mulaw") for _ in range(2)]
        for s in streams:
            s.feed(b"\xff" * 800)  # one batch each: a recognition job per stream
        await until(lambda: fake.inside == 2, message="both workers inside the recogniser")
        for _ in range(5):
            resp = await client.get("/ping")
            assert await resp.text() == "pong"
        assert fake.chunks == []  # still held: the answers came while both workers were busy
        fake.gate.set()
        transcripts = await asyncio.gather(*(s.finish() for s in streams))
    assert [t.text for t in transcripts] == ["一", "二"]


async def test_recognition_threads_yield_the_cpu_to_webhooks():
    import os
    import sys

    from speech_models.pool import SPEECH_NICENESS

    pool = SpeechPool(FakeTranscriber(), workers=1)
    try:
        loop = asyncio.get_running_loop()
        own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        theirs = await loop.run_in_executor(
            pool._executor, lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
    finally:
        await pool.close()
    if sys.platform.startswith("linux"):
        assert theirs == min(own + SPEECH_NICENESS, 19)
    else:
        assert theirs >= own


def test_finish_right_after_a_job_completes_does_not_spin():
    """finish() called when the last recognition job has a result but its done-callback
    has not run yet (both queued in the same loop iteration) must still return."""
    outcome: dict = {}

    async def scenario():
        pool = SpeechPool(FakeTranscriber(default="好的"), workers=1)
        stream = await pool.open_stream(8000, encoding="mulaw")
        job = asyncio.get_running_loop().create_future()
        job.add_done_callback(stream._done)
        job.set_result([])  # result set; _done is only scheduled
        stream._job = job
        outcome["text"] = (await stream.finish()).text
        await pool.close()

    runner = threading.Thread(target=lambda: asyncio.run(scenario()), daemon=True)
    runner.start()
    runner.join(10)
    assert not runner.is_alive(), "finish() is spinning on a finished job"
    assert outcome["text"] == "好的"
