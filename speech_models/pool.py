"""Speech recognition off the event loop, for aiohttp handlers.

``SpeechPool`` owns a bounded thread pool (see ``transcriber`` for why threads). Each
``PooledStream`` is an actor: ``feed()`` runs on the event loop, appends the audio to
the stream's WAV recording at once and queues it in memory; at most one recognition job
per stream is in flight, and it takes everything queued so far, so a stream's audio is
recognised in order and a stream that fell behind catches up in larger steps. When every
worker is busy nothing is dropped or blocked: audio keeps landing on disk and in the
queue until a worker is free.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .audio import WavWriter, mulaw_decode
from .transcriber import BLOCK_MS, Encoding, Segment, Transcriber, Transcript, TranscriptStream

__all__ = ["PooledStream", "SpeechPool", "observers"]

# Told of every recognition step done by any pool of this process: (mode, seconds of audio,
# seconds a speech thread worked on it), ``mode`` ``stream`` (live, a block at a time) or
# ``file`` (a whole recording or voice note). The ratio is the real-time factor; the
# server's /metrics counts them. Called on the event loop; must be quick and not raise.
RecognitionObserver = Callable[[str, float, float], None]
observers: list[RecognitionObserver] = []


def _tell(mode: str, audio_s: float, busy_s: float) -> None:
    for observer in observers:
        with contextlib.suppress(Exception):  # counting must never cost a caller's words
            observer(mode, audio_s, busy_s)


class PooledStream:
    """An open recognition stream; use from the event loop thread only."""

    def __init__(
        self,
        pool: SpeechPool,
        stream: TranscriptStream,
        recording: WavWriter | None,
    ):
        self._pool = pool
        self._stream = stream
        self._wav = recording
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        # Hand audio over in batches of one recogniser block: the recogniser would wait
        # for a full block anyway, and fewer, larger jobs mean fewer thread hand-offs
        # (each one has to re-acquire the GIL from the event loop).
        width = 1 if stream.encoding == "mulaw" else 2
        self._batch = stream.sample_rate * BLOCK_MS // 1000 * width
        self._bytes_per_second = stream.sample_rate * width
        self._job: asyncio.Future | None = None
        self._segments: asyncio.Queue[Segment | None] = asyncio.Queue()
        self._error: BaseException | None = None
        self._transcript: Transcript | None = None
        self._closing = False
        self._finals_queued = 0
        self.partial_text = ""
        self.bytes_fed = 0

    @property
    def recording(self) -> Path | None:
        """The WAV file the audio is written to (pcm16 at the stream's rate)."""
        return self._wav.path if self._wav else None

    @property
    def backlog(self) -> int:
        """Bytes received but not yet handed to the recogniser."""
        return self._pending_bytes

    @property
    def backlog_seconds(self) -> float:
        """Seconds of audio received but not yet handed to the recogniser."""
        return self._pending_bytes / self._bytes_per_second

    def feed(self, data: bytes) -> None:
        """Accept audio without waiting: written to disk now, recognised when a worker is free."""
        if self._closing:
            raise RuntimeError("stream is finished")
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"audio must be bytes, not {type(data).__name__}")
        data = bytes(data)
        if not data:
            return
        if self._wav is not None:
            pcm = mulaw_decode(data) if self._stream.encoding == "mulaw" else data
            self._wav.write(pcm)
        self._pending.append(data)
        self._pending_bytes += len(data)
        self.bytes_fed += len(data)
        self._kick()

    def _kick(self) -> None:
        if self._job is not None or self._error is not None:
            return
        if self._pending_bytes < self._batch and not (self._closing and self._pending):
            return
        chunk = b"".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        self._job = self._pool._stream_accept(self._stream, chunk, len(chunk) / self._bytes_per_second)
        self._job.add_done_callback(self._done)

    def _done(self, fut: asyncio.Future) -> None:
        self._job = None
        if fut.cancelled():
            return
        if (e := fut.exception()) is not None:
            self._error = e
            self._pending.clear()
            self._pending_bytes = 0
            return
        self._publish(fut.result())
        self._kick()

    def _publish(self, segments: Sequence[Segment]) -> None:
        for seg in segments:
            if seg.final:
                self._finals_queued += 1
            else:
                self.partial_text = seg.text
            self._segments.put_nowait(seg)

    async def segments(self) -> AsyncIterator[Segment]:
        """Partial and final segments as they are recognised; ends after ``finish()``."""
        while (seg := await self._segments.get()) is not None:
            yield seg

    async def finish(self) -> Transcript:
        """Wait for the queued audio, close the recording, return the transcript."""
        if self._transcript is not None:
            return self._transcript
        self._closing = True
        while self._job is not None:
            job = self._job
            with contextlib.suppress(Exception):  # the error is kept in self._error
                await asyncio.shield(job)
            # Awaiting a finished future does not yield, so its done-callback (which clears
            # or replaces _job) would never run and this loop would spin: yield once.
            await asyncio.sleep(0)
        try:
            if self._error is not None:
                raise self._error
            tail = b"".join(self._pending)
            self._pending.clear()
            self._pending_bytes = 0
            segs, transcript = await self._pool._stream_finish(self._stream, tail,
                                                               len(tail) / self._bytes_per_second)
            self._publish(segs)
            self._publish(transcript.segments[self._finals_queued :])
            self._transcript = transcript
            return transcript
        finally:
            if self._wav is not None:
                self._wav.close()
            self._segments.put_nowait(None)


SPEECH_NICENESS = 10


def _lower_thread_priority() -> None:
    """Recognition yields the CPU to webhooks and database work when cores are busy: on
    Linux a thread has its own nice value. Elsewhere this is a no-op."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), SPEECH_NICENESS)


class SpeechPool:
    """Bounded async facade over a ``Transcriber``.

    ``workers`` threads run recognition; ``recordings`` is where stream audio is kept
    (one WAV per stream unless the caller names the file).
    """

    def __init__(
        self,
        transcriber: Transcriber,
        workers: int | None = None,
        recordings: str | os.PathLike | None = None,
    ):
        self.transcriber = transcriber
        self.info = getattr(transcriber, "info", None)  # the model (speech_models.catalogue.InstalledModel)
        self.workers = workers or os.cpu_count() or 1
        self.recordings = Path(recordings) if recordings else None
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="speech",
                                            initializer=_lower_thread_priority)
        self._in_flight = 0
        self._streams: weakref.WeakSet[PooledStream] = weakref.WeakSet()  # open, for backlog_seconds

    @property
    def busy(self) -> int:
        """Recognition jobs submitted and not yet done (running or waiting for a worker)."""
        return self._in_flight

    def backlog_seconds(self) -> float:
        """Audio of the open streams that waits for the recogniser (seconds, all streams)."""
        return sum(stream.backlog_seconds for stream in list(self._streams) if not stream._closing)

    def _recognise(self, mode: str, audio_s: float | Callable[[object], float], fn, *args) -> asyncio.Future:
        """``fn(*args)`` in a speech thread, timed there (the work, not the wait for a
        thread) and told to ``observers`` with its seconds of audio (or a function of the
        result that gives them)."""
        busy = [0.0]

        def timed():
            started = time.perf_counter()
            try:
                return fn(*args)
            finally:
                busy[0] = time.perf_counter() - started

        fut = self._submit(timed)

        def done(f: asyncio.Future) -> None:
            if f.cancelled() or f.exception() is not None:
                return
            seconds = audio_s(f.result()) if callable(audio_s) else audio_s
            if seconds > 0:
                _tell(mode, seconds, busy[0])

        fut.add_done_callback(done)
        return fut

    # What a PooledStream asks of its pool; a pool of recogniser processes does these
    # over a pipe instead (speech_models.procpool).

    def _stream_accept(self, stream, chunk: bytes, audio_s: float) -> asyncio.Future:
        """Segments of ``chunk`` fed to ``stream`` (the backend's stream object)."""
        return self._recognise("stream", audio_s, stream.accept, chunk)

    def _stream_finish(self, stream, tail: bytes, audio_s: float) -> asyncio.Future:
        """``(segments of tail, transcript)`` once ``stream`` has its last audio."""

        def last_step() -> tuple[list[Segment], Transcript]:
            segs = stream.accept(tail) if tail else []
            return segs, stream.finish()

        return self._recognise("stream", audio_s, last_step)

    async def _open_backend_stream(self, sample_rate: int, encoding: Encoding,
                                   phrases: Sequence[str] | None, partials: bool):
        # Creating a recogniser compiles the phrase grammar and may load the model.
        return await self._submit(
            lambda: self.transcriber.open_stream(sample_rate, phrases, encoding, partials=partials)
        )

    def _submit(self, fn, *args) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        self._in_flight += 1
        fut = loop.run_in_executor(self._executor, fn, *args)

        def done(_):
            self._in_flight -= 1

        fut.add_done_callback(done)
        return fut

    async def warm_up(self) -> None:
        """Load the model in a worker (call at startup so the first caller doesn't wait)."""
        await self._submit(self.transcriber.warm_up)

    async def open_stream(
        self,
        sample_rate: int = 8000,
        *,
        encoding: Encoding = "mulaw",
        phrases: Sequence[str] | None = None,
        record_to: str | os.PathLike | None = None,
        partials: bool = True,
    ) -> PooledStream:
        """Open a stream (Twilio Media Streams default: 8 kHz µ-law).

        Audio is recorded to ``record_to``, else to a new file under ``recordings``,
        else not at all.
        """
        stream = await self._open_backend_stream(sample_rate, encoding, phrases, partials)
        path = Path(record_to) if record_to else None
        if path is None and self.recordings is not None:
            path = self.recordings / f"{uuid.uuid4().hex}.wav"
        wav = WavWriter(path, sample_rate) if path is not None else None
        pooled = PooledStream(self, stream, wav)
        self._streams.add(pooled)
        return pooled

    async def accepts_phrases(self, phrases: Sequence[str]) -> bool:
        """Whether the model can take this phrase list (none of its words in the vocabulary:
        no). Known at once after the first ask, so a refused list never waits for a worker."""
        grammar = getattr(self.transcriber, "grammar", None)
        if grammar is None:
            return True
        try:
            await asyncio.to_thread(grammar, list(phrases))
        except ValueError:
            return False
        return True

    async def transcribe_file(
        self, path: str | os.PathLike | bytes, phrases: Sequence[str] | None = None
    ) -> Transcript:
        """Decode and transcribe a file (e.g. a chat voice note) in a worker."""
        return await self._recognise("file", lambda transcript: getattr(transcript, "duration", 0.0),
                                     self.transcriber.transcribe_file, path, phrases)

    async def transcribe_pcm(
        self, pcm: bytes, sample_rate: int, phrases: Sequence[str] | None = None
    ) -> Transcript:
        return await self._recognise("file", len(pcm) / (2 * sample_rate),
                                     self.transcriber.transcribe_pcm, pcm, sample_rate, phrases)

    async def close(self) -> None:
        """Wait for running jobs and stop the workers."""
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)

    async def __aenter__(self) -> SpeechPool:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
