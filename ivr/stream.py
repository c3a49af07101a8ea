"""The Media Streams socket: the caller's audio → a WAV on disk, always; recognised live
when there is capacity, afterwards otherwise.

Twilio opens one websocket per ``<Start><Stream>`` and sends JSON messages: ``connected``,
``start`` (with our ``<Parameter>``s in ``customParameters``), ``media`` (20 ms of 8 kHz
µ-law, base64, with a ``timestamp`` in ms), ``dtmf``, ``mark``, ``stop``. Twilio does not
sign the socket, so the ``start`` message must carry the call's token; a stream with a
wrong token is closed unheard (4001). While the token is being checked (the database may
be away for a moment: the check is retried) the audio waits in memory, bounded.

Each turn of the caller (the petition, the address) is a *segment*. Its WAV is opened the
moment the stream is accepted, and every frame is written as it arrives, whether or not a
recogniser is free: the audio is the petition. A segment also gets a live recogniser if
one of the ``live capacity`` slots is free (``GRIDLINE_SPEECH_LIVE_STREAMS``); otherwise it
is recorded only and its words come from a ``transcribe_recording`` job after the case is
filed. Nothing here writes to the database: the flow (``ivr.web``) takes a segment's
``Recording`` when the turn ends and stores it with the call.

A segment stops taking audio when the stream says so (``stop``, ``#`` on the stream, the
socket drops) or, after the webhook that follows the caller's ``#``, once the frames that
were in flight have arrived: the stream has caught up with the moment of the webhook (by
the frames' timestamps), or has been quiet for ``drain_s``, and at most ``max_drain_s``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import WSCloseCode, WSMsgType, web
from tenacity import AsyncRetrying, RetryCallState

from core.platform import logcontext
from core.platform.retry import log_retry, retry_if_transient, short, transient, wait_backoff
from ivr import calls
from ivr.loudness import BargeIn, EndOfSpeech, speech_seconds
from ivr.spool import CallBudget, Placed, SegmentAudio, Spool
from ivr.state import Recording
from speech_models.audio import MULAW_TABLE
from speech_models.pool import SpeechPool

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024  # a media message is about 300 bytes
ANSWER_PREFIX = "answer-"  # segments of short answers (对 / 不对 / 保密): no live free recognition
NUMBER_PREFIX = "number-"  # a case number said: recognised freely, never the petition
WAIT_PREFIX = "wait-"  # the stream of a petition's 请稍候: kept; recognised only if the caller goes on over it
INVALID_STREAM = 4001  # the close code for a start without a call, token or segment, or a wrong token
VERDICT_WAIT_S = 5.0  # a socket that ended during its token check waits this long for the verdict
KEEP_FINISHED = 512  # finished segments remembered (for the flow's next round and the job)

Db = Callable[..., Awaitable[Any]]

# The stream's token check, when the database is away: the first pause, doubling up to the longest.
TOKEN_RETRY_FIRST_S = 0.1
TOKEN_RETRY_LONGEST_S = 2.0


def speech_pool(speech: Any, workers: int):
    """The app's ``SpeechPool``; a bare transcriber (tests) gets a pool of its own."""
    if speech is None or isinstance(speech, SpeechPool):
        return speech
    if hasattr(speech, "open_stream"):
        return SpeechPool(speech, workers=workers)
    raise TypeError(f"not a transcriber or SpeechPool: {speech!r}")


async def _wait(event: asyncio.Event, timeout: float) -> bool:
    if not event.is_set() and timeout > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
    return event.is_set()


class RecognitionSlots:
    """How many recognitions this process runs at once. A live stream takes a slot only if
    one is free (else its call is recorded and transcribed afterwards); a deferred
    transcription waits for one."""

    def __init__(self, capacity: int):
        self.capacity = max(0, capacity)
        self.live = 0
        self.jobs = 0
        self._freed: asyncio.Event | None = None

    @property
    def in_use(self) -> int:
        return self.live + self.jobs

    def _event(self) -> asyncio.Event:
        if self._freed is None:
            self._freed = asyncio.Event()
        return self._freed

    def try_take_live(self) -> bool:
        if self.in_use >= self.capacity:
            return False
        self.live += 1
        return True

    def give_live(self) -> None:
        self.live -= 1
        self._event().set()

    @contextlib.asynccontextmanager
    async def for_job(self) -> AsyncIterator[None]:
        while self.in_use >= self.capacity:
            freed = self._event()
            freed.clear()
            await freed.wait()
        self.jobs += 1
        try:
            yield
        finally:
            self.jobs -= 1
            self._event().set()


class Segment:
    """One turn of the caller on the stream: its WAV, and maybe a live recogniser."""

    def __init__(self, registry: StreamRegistry, call_sid: str, name: str, stored_path: str):
        self.registry = registry
        self.call_sid = call_sid
        self.name = name
        self.kind = ("answer" if name.startswith((ANSWER_PREFIX, NUMBER_PREFIX, WAIT_PREFIX)) else
                     "address" if name.startswith("address") else "petition")
        self.stored_path = stored_path
        # the spool file, the audio's home from the first frame on (or, when the spool fails,
        # memory, the media store, the database: ivr.spool)
        self.audio = SegmentAudio(registry.spool, call_sid, stored_path)
        self.path = self.audio.path
        self.placed: Placed | None = None
        self.received = 0  # µ-law bytes written
        self.late_bytes = 0  # arrived after the segment ended (not part of the turn)
        self.speech_s = 0.0
        self.ended_by: str | None = None
        self.accepting = True
        self.audio_closed = asyncio.Event()
        self.done = asyncio.Event()
        self.live = False  # has a live recognition slot
        self.final = False  # the live transcript is complete
        self.deferred = False  # the flow stopped waiting for the live transcript
        self.finals: list[dict] = []
        self.recognizer: Any = None  # speech_models.pool.PooledStream
        self._opening: asyncio.Task | None = None
        self._early: list[bytes] = []  # audio that came while the recogniser was opening
        self._finisher: asyncio.Task | None = None
        self._timers: list[asyncio.TimerHandle] = []
        self._last_frame = time.monotonic()
        self._last_ts: int | None = None
        self._target_ts: int | None = None
        # Our own end-of-speech detection (``watch_end``): the turn's webhook, and the detector.
        self.end_path: str | None = None
        self.end_of_speech: EndOfSpeech | None = None
        # Barge-in on a read-back's answer (``watch_barge``): where to move the call when the
        # caller goes on speaking over the read-back, the detector, and the audio so far (kept
        # in memory only while the read-back is said, for the recogniser opened then).
        self.barge_path: str | None = None
        self.barge: BargeIn | None = None
        self.barged = False
        self._held: list[bytes] = []

    def watch_end(self, end_path: str, detector: EndOfSpeech) -> None:
        """End this turn on the caller's quiet: once ``detector`` says so, the registry asks
        Twilio to move the call to ``end_path`` (the turn's webhook, with its identity)."""
        self.end_path = end_path
        self.end_of_speech = detector

    def watch_barge(self, barge_path: str, detector: BargeIn) -> None:
        """While the read-back is said, the caller going on speaking moves the call to
        ``barge_path`` (the petition's continuation) instead of waiting for an answer."""
        self.barge_path = barge_path
        self.barge = detector

    def _barged_in(self) -> None:
        """The caller is going on with their petition over the read-back: this stream's words
        are part of it, so they are recognised freely from the first frame (an answer's stream
        has no live recogniser of its own), and the answer's own end no longer applies."""
        held, self._held = self._held, []
        self.barge = None
        self.barged = True
        self.end_of_speech = None
        reg = self.registry
        if reg.pool is not None and not self.live:
            if reg.slots.try_take_live():
                self.live = True
                self._early = held
                self._opening = asyncio.create_task(self._open(), name=f"recogniser {self.call_sid} {self.name}")
            else:
                reg.stats["recording_only"] += 1
        reg.barged_in(self)

    # -- recognition --------------------------------------------------------------------

    def start_recognition(self) -> None:
        reg = self.registry
        if reg.pool is None:
            return  # no model in this process: recorded, transcribed by whoever has one
        if self.name.startswith(ANSWER_PREFIX) and reg.grammar_for(self.name) is None:
            # a hotline read-back's answer: its WAV is recognised in grammar mode once it ends
            # (ivr.web); a survey's answer turn has its phrase list here and is heard live
            return
        if self.name.startswith(WAIT_PREFIX):
            return  # a 请稍候's stream: a recogniser opens only when the caller goes on over it (barge-in)
        if not reg.slots.try_take_live():
            reg.stats["recording_only"] += 1
            log.info("call %s %s: all %d live recognitions busy; recording only, the words are "
                     "recognised after the case is filed", self.call_sid, self.name, reg.slots.capacity)
            return
        self.live = True
        self._opening = asyncio.create_task(self._open(), name=f"recogniser {self.call_sid} {self.name}")

    async def _open(self) -> None:
        try:
            # Opening may wait for a speech worker: the audio meanwhile goes to disk and to _early.
            stream = await self.registry.pool.open_stream(8000, encoding="mulaw", partials=False,
                                                          phrases=self.registry.grammar_for(self.name))
        except Exception:
            log.exception("call %s %s: the recogniser did not start; transcribed afterwards",
                          self.call_sid, self.name)
            self._early.clear()
            return
        for chunk in self._early:
            stream.feed(chunk)
        self._early.clear()
        self.recognizer = stream

    # -- audio ----------------------------------------------------------------------------

    def feed(self, mulaw: bytes, ts: int | None = None) -> None:
        """Written to disk at once; recognised live if this segment has a recogniser."""
        if not mulaw:
            return
        if not self.accepting:
            self.late_bytes += len(mulaw)
            return
        if not self.received:
            # The recogniser opens with the first audio: a turn skipped with a key (the open
            # question, a read-back) never holds a live slot.
            self.start_recognition()
        self.audio.write(MULAW_TABLE[np.frombuffer(mulaw, dtype=np.uint8)].tobytes())
        self.received += len(mulaw)
        self.speech_s += speech_seconds(mulaw, self.registry.speech_rms)
        self._last_frame = time.monotonic()
        if ts is not None:
            self._last_ts = ts
        if self.live:
            if self.recognizer is not None:
                self.recognizer.feed(mulaw)
            else:
                self._early.append(mulaw)
        if self.barge is not None and self.ended_by is None:
            self._held.append(mulaw)
            if self.barge.feed(mulaw):
                self._barged_in()
            elif self.barge.over:
                self.barge, self._held = None, []
        if self._target_ts is not None and ts is not None and ts >= self._target_ts:
            self._stop_taking()
        elif self.end_of_speech is not None and self.ended_by is None and self.end_of_speech.feed(mulaw):
            self.registry.speech_ended(self)

    def request_end(self, reason: str, drain_s: float = 0.0, max_drain_s: float = 0.0) -> None:
        """Stop taking audio: now, or (``drain_s`` > 0) once the frames in flight are in."""
        if self.ended_by is not None:
            return
        self.ended_by = reason
        if drain_s <= 0:
            self._stop_taking()
            return
        loop = asyncio.get_running_loop()
        if self._last_ts is not None:
            # Where the stream will be when it has caught up with this moment.
            behind_ms = (time.monotonic() - self._last_frame + drain_s) * 1000
            self._target_ts = self._last_ts + int(behind_ms)
        self._timers.append(loop.call_later(drain_s, self._check_quiet, drain_s))
        self._timers.append(loop.call_later(max(max_drain_s, drain_s), self._stop_taking))

    def _check_quiet(self, drain_s: float) -> None:
        if not self.accepting:
            return
        loop = asyncio.get_running_loop()
        idle = time.monotonic() - self._last_frame
        if idle < drain_s:
            self._timers.append(loop.call_later(drain_s - idle, self._check_quiet, drain_s))
            return
        # Frames the socket already received may be waiting for the reader task, which runs
        # after this callback: look again two loop turns later before calling it quiet.
        loop.call_soon(loop.call_soon, self._confirm_quiet, drain_s)

    def _confirm_quiet(self, drain_s: float) -> None:
        if time.monotonic() - self._last_frame >= drain_s:
            self._stop_taking()
        else:
            self._check_quiet(drain_s)

    def _stop_taking(self) -> None:
        if not self.accepting:
            return
        self.accepting = False
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self.audio.close()
        self.audio_closed.set()
        self.registry.notify("segment_audio_closed", self)
        self._finisher = asyncio.create_task(self._finish(), name=f"segment {self.call_sid} {self.name}")

    async def _finish(self) -> None:
        try:
            self.placed = await self.audio.finish()
        except Exception:
            log.exception("call %s %s: the audio was not placed", self.call_sid, self.name)
        try:
            if self._opening is not None:
                await self._opening
            if self.recognizer is not None:
                transcript = await self.recognizer.finish()
                self.finals = [s.to_dict() for s in transcript.segments if s.text]
                self.final = True
        except Exception:
            log.exception("call %s %s: live recognition failed; transcribed afterwards", self.call_sid, self.name)
        finally:
            if self.live:
                self.registry.slots.give_live()
            self.done.set()
            self.registry.finished(self)

    # -- what the flow takes --------------------------------------------------------------

    async def wait_audio(self, timeout: float) -> bool:
        return await _wait(self.audio_closed, timeout)

    async def wait_done(self, timeout: float) -> bool:
        return await _wait(self.done, timeout)

    def defer(self) -> None:
        """The caller could not wait: the words will come from the transcribe job."""
        if not self.done.is_set():
            self.deferred = True

    def result(self) -> Recording:
        final = self.final and self.done.is_set()
        finals = self.finals if final else []
        confs = [w["conf"] for s in finals for w in s.get("words", [])]
        return Recording(
            kind=self.kind,
            audio_path=self.stored_path,
            speech_s=round(self.speech_s, 2),
            duration=round(self.received / 8000, 2),
            text="".join(s["text"] for s in finals),
            confidence=round(sum(confs) / len(confs), 4) if confs else None,
            segments=list(finals),
            final=final,
            deferred=not final,
            ended_by=self.ended_by or "open",
            **self._placement(),
        )

    def _placement(self) -> dict:
        placed = self.placed
        if placed is None or not (placed.fault or placed.uploaded or placed.sha256):
            return {}
        return {"size": placed.size, "sha256": placed.sha256, "held": placed.held,
                "waiting_in": self.registry.spool.name if placed.sha256 and not placed.uploaded and not placed.held
                else None,
                "heard_s": round(placed.heard_s, 2), "kept_s": round(placed.kept_s, 2)}

    def transcript(self) -> dict | None:
        """The live transcript for the transcribe job, once final."""
        if not (self.final and self.done.is_set()):
            return None
        rec = self.result()
        return {"segment": self.name, "text": rec.text, "confidence": rec.confidence, "segments": rec.segments}


class _Connection:
    """One Media Streams socket: its start, the token check, and the audio until then."""

    def __init__(self, registry: StreamRegistry, ws: web.WebSocketResponse):
        self.registry = registry
        self.ws = ws
        self.started = False
        self.segment: Segment | None = None
        self.pending: list[tuple[bytes, int | None]] = []
        self.pending_bytes = 0
        self.dropped_bytes = 0
        self.end_reason: str | None = None
        self.closed_at: float | None = None
        self.turn_end: dict[str, str] = {}  # the TwiML's end / quiet / arm / barge parameters (end of speech)
        # How the socket is closed when the handler closes it: 4001 for a bad start or token.
        self.close_code = WSCloseCode.OK
        self.close_message = b""
        self.verdict = asyncio.Event()  # set once the token check knows the answer (or gave up)

    def start(self, data: dict) -> bool:
        start = data.get("start") if isinstance(data.get("start"), dict) else {}
        params = start.get("customParameters") if isinstance(start.get("customParameters"), dict) else {}
        call_sid = str(start.get("callSid") or params.get("callSid") or "")
        token = str(params.get("token") or "")
        name = str(params.get("segment") or "")
        if not call_sid or not token or not name or len(name) > 32 or len(call_sid) > 64 or \
                not all(c.isalnum() or c in "-_" for c in name):
            return False
        self.started = True
        self.turn_end = {k: str(params[k])[:200] for k in ("end", "quiet", "arm", "barge") if params.get(k)}
        logcontext.bind_call(call_sid)  # this socket's lines, and its tasks', name the call
        self.registry.connecting.add((call_sid, name))
        self.registry.spawn(self._verify(call_sid, token, name), f"stream token {call_sid}")
        return True

    def media(self, chunk: bytes, ts: int | None) -> None:
        if self.segment is not None:
            self.segment.feed(chunk, ts)
        elif self.end_reason is not None:
            pass  # after the turn ended on the stream (# or stop), while the token was checked
        elif self.pending_bytes + len(chunk) <= self.registry.max_pending_bytes:
            if not self.started:
                self.registry.stats["early_media"] += 1
            self.pending.append((chunk, ts))
            self.pending_bytes += len(chunk)
        else:
            self.dropped_bytes += len(chunk)

    def end(self, reason: str) -> None:
        if self.segment is not None:
            self.segment.request_end(reason)
        elif self.end_reason is None:
            self.end_reason = reason

    def closed(self) -> None:
        self.closed_at = time.monotonic()
        self.end("dropped")

    def refuse(self, reason: bytes) -> None:
        self.close_code, self.close_message = INVALID_STREAM, reason

    async def _verify(self, call_sid: str, token: str, name: str) -> None:
        try:
            await self._check_and_open(call_sid, token, name)
        finally:
            self.verdict.set()
            self.registry.connecting.discard((call_sid, name))
            self.registry.wake_waiters(call_sid, name)

    async def _check_and_open(self, call_sid: str, token: str, name: str) -> None:
        reg = self.registry

        def socket_gone_long_enough(_: RetryCallState) -> bool:
            # While the socket is open the caller is still talking: keep trying.
            return self.closed_at is not None and time.monotonic() - self.closed_at > reg.token_retry_s

        keep_trying = log_retry(log, lambda _: f"stream of call {call_sid} {name}: token check (audio kept in memory)")

        def counted(retry_state: RetryCallState) -> None:
            reg.stats["token_retries"] += 1
            keep_trying(retry_state)

        retrying = AsyncRetrying(retry=retry_if_transient, wait=wait_backoff(TOKEN_RETRY_FIRST_S, TOKEN_RETRY_LONGEST_S),
                                 stop=socket_gone_long_enough, before_sleep=counted, reraise=True)
        try:
            stored = await retrying(reg.db, calls.stream_path, reg.engine, call_sid, token, name)
        except Exception as exc:
            if transient(exc):
                log.error("stream of call %s %s: token not checked for %.0f s after the socket closed "
                          "(%s); %d bytes of audio not kept", call_sid, name, reg.token_retry_s, short(exc),
                          self.pending_bytes)
            else:
                log.exception("stream of call %s %s: token check failed; %d bytes of audio not kept",
                              call_sid, name, self.pending_bytes)
            return
        if stored is None:
            reg.stats["rejected"] += 1
            log.warning("stream for call %s refused: wrong token", call_sid)
            self.pending.clear()
            self.refuse(b"invalid stream token")
            if not self.ws.closed:
                await self.ws.close(code=self.close_code, message=self.close_message)
            return
        seg = reg.open_segment(call_sid, name, stored)
        if self.turn_end:  # only once the token says the call is ours
            reg.watch_end(seg, self.turn_end)
        for chunk, ts in self.pending:
            seg.feed(chunk, ts)
        self.pending.clear()
        self.segment = seg
        if self.dropped_bytes:
            log.error("call %s %s: %d bytes of audio beyond the in-memory bound while the token was "
                      "checked were not kept", call_sid, name, self.dropped_bytes)
        if self.end_reason is not None:
            seg.request_end(self.end_reason)
        reg.apply_end_request(seg)


class StreamRegistry:
    """The segments of this process, the live-recognition slots, and the socket handler."""

    def __init__(self, engine: Any, pool: Any, data_dir: Path, stream_cfg: dict, *, live_capacity: int,
                 db: Db, max_pending_s: float = 130.0, spool: Spool | None = None):
        self.engine = engine
        self.pool = pool
        self.data_dir = Path(data_dir)
        self.db = db
        self.spool = spool or Spool(store=None, data_dir=self.data_dir, engine=engine, db=db,
                                    budget=CallBudget(600.0, 1800.0))
        self.speech_rms = float(stream_cfg["speech_rms"])
        self.hangup_grace_s = float(stream_cfg["hangup_grace_s"])
        self.drain_s = float(stream_cfg["drain_s"])
        self.max_drain_s = float(stream_cfg["max_drain_s"])
        self.token_retry_s = float(stream_cfg["token_retry_s"])
        self.max_pending_bytes = int(max_pending_s * 8000)
        self.slots = RecognitionSlots(live_capacity if pool is not None else 0)
        self.segments: dict[tuple[str, str], Segment] = {}  # open
        self.recent: OrderedDict[tuple[str, str], Segment] = OrderedDict()  # finished, newest last
        self._end_requests: dict[tuple[str, str], str] = {}
        self._opened: dict[tuple[str, str], asyncio.Event] = {}
        self.connecting: set[tuple[str, str]] = set()  # start received, token being checked
        # Called with (call_sid, segment) when a petition segment ended without the flow
        # asking: the caller may have hung up. Set by ivr.web.
        self.on_orphan: Callable[[str, str], Awaitable[None]] | None = None
        # Told of each segment opened, whose audio closed, done (ivr.handover writes them down
        # for the instance that serves the call's next webhook).
        self.observers: list[Any] = []
        # Segment name prefix → the phrase list its recogniser is built with (Vosk grammar
        # mode), for short answers: a follow-up's "answer-solved-…" turns (ivr.survey_web).
        self.grammars: dict[str, tuple[str, ...]] = {}
        # Our own end-of-speech detection: rules.toml [hotline.end_of_speech] and what moves
        # the call on (a live redirect through Twilio's REST API), both set by ivr.web when on.
        self.end_of_speech: dict | None = None
        self.on_speech_end: Callable[[Segment], Awaitable[None]] | None = None
        self.on_barge_in: Callable[[Segment], Awaitable[None]] | None = None
        self.stats = {"bad_messages": 0, "unknown_events": 0, "rejected": 0, "early_media": 0,
                      "recording_only": 0, "token_retries": 0, "turns_ended_by_us": 0, "turn_end_failures": 0,
                      "barge_ins": 0}
        self._tasks: set[asyncio.Task] = set()
        self._sockets: set[web.WebSocketResponse] = set()

    def spawn(self, coro, name: str) -> asyncio.Task:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- segments -----------------------------------------------------------------------

    def get(self, call_sid: str, name: str) -> Segment | None:
        key = (call_sid, name)
        return self.segments.get(key) or self.recent.get(key)

    def of_call(self, call_sid: str) -> list[Segment]:
        return [s for (sid, _), s in [*self.recent.items(), *self.segments.items()] if sid == call_sid]

    def grammar_for(self, name: str) -> tuple[str, ...] | None:
        """The phrases a segment's recogniser may hear (``None``: free recognition)."""
        for prefix, phrases in self.grammars.items():
            if name.startswith(prefix):
                return phrases
        return None

    def open_segment(self, call_sid: str, name: str, stored_path: str) -> Segment:
        existing = self.get(call_sid, name)
        if existing is not None:  # Twilio reconnected the same stream
            return existing
        seg = Segment(self, call_sid, name, stored_path)
        self.segments[(call_sid, name)] = seg
        self.notify("segment_opened", seg)
        self.wake_waiters(call_sid, name)
        return seg

    def watch_end(self, seg: Segment, params: dict[str, str]) -> None:
        """The turn's TwiML asked for our end-of-speech detection (``ivr.flow.Flow.listen``)."""
        cfg, end = self.end_of_speech, params.get("end", "")
        if cfg is None or self.on_speech_end is None or not end.startswith("/twilio/") or "seg=" not in end:
            return
        quiet = params.get("quiet")
        try:
            arm_s = min(max(0.0, float(params.get("arm") or 0.0)), 120.0)
        except ValueError:
            arm_s = 0.0
        barging = bool(cfg.get("barge_in"))
        if quiet == "answer":
            quiet_s, min_speech_s = cfg["answer_quiet_s"], cfg["answer_min_speech_s"]
        elif quiet == "number":  # a case number said in groups (each longer than a cough), pausing between them
            quiet_s, min_speech_s = cfg["number_quiet_s"], cfg["min_speech_s"]
        elif quiet in ("barge", "more") and barging:  # a petition whose read-back listens on
            quiet_s, min_speech_s = cfg["barge_quiet_s"], cfg["min_speech_s"]
        else:
            quiet_s, min_speech_s = cfg["quiet_s"], cfg["min_speech_s"]
        seg.watch_end(end, EndOfSpeech(self.speech_rms, arm_s=arm_s, quiet_s=float(quiet_s),
                                       min_speech_s=float(min_speech_s), ongoing=quiet == "more"))
        barge = params.get("barge", "")
        if barging and self.on_barge_in is not None and barge.startswith("/twilio/") and "seg=" in barge:
            seg.watch_barge(barge, BargeIn(self.speech_rms, min_speech_s=float(cfg["min_speech_s"]),
                                           within_s=arm_s))

    def barged_in(self, seg: Segment) -> None:
        """The caller went on speaking over the read-back: stop it now (a live redirect)."""
        self.stats["barge_ins"] += 1
        if self.on_barge_in is not None:
            self.spawn(self.on_barge_in(seg), f"barge-in {seg.call_sid} {seg.name}")

    def speech_ended(self, seg: Segment) -> None:
        """The caller spoke and went quiet: move the call on now (not after Twilio's quiet)."""
        if self.on_speech_end is not None:
            self.spawn(self.on_speech_end(seg), f"end of speech {seg.call_sid} {seg.name}")

    def notify(self, what: str, seg: Segment) -> None:
        for observer in self.observers:
            try:
                getattr(observer, what)(seg)
            except Exception:  # an observer must not cost the caller's audio
                log.exception("call %s %s: %s observer failed", seg.call_sid, seg.name, what)

    def wake_waiters(self, call_sid: str, name: str) -> None:
        opened = self._opened.pop((call_sid, name), None)
        if opened is not None:
            opened.set()

    def request_end(self, call_sid: str, name: str, reason: str) -> Segment | None:
        """End a turn on the flow's word; remembered if its stream has not opened yet."""
        seg = self.get(call_sid, name)
        if seg is None:
            self._end_requests[(call_sid, name)] = reason
            return None
        seg.request_end(reason, self.drain_s, self.max_drain_s)
        return seg

    def apply_end_request(self, seg: Segment) -> None:
        reason = self._end_requests.pop((seg.call_sid, seg.name), None)
        if reason is not None:
            seg.request_end(reason, self.drain_s, self.max_drain_s)

    async def wait_segment(self, call_sid: str, name: str, timeout: float) -> Segment | None:
        """The turn's segment, waiting up to ``timeout`` for its stream to open (or to be
        refused)."""
        seg = self.get(call_sid, name)
        if seg is None and timeout > 0:
            opened = self._opened.setdefault((call_sid, name), asyncio.Event())
            await _wait(opened, timeout)
            seg = self.get(call_sid, name)
            if seg is None:
                self._opened.pop((call_sid, name), None)
        return seg

    def forget_call(self, call_sid: str) -> None:
        for key in [k for k in self._end_requests if k[0] == call_sid]:
            del self._end_requests[key]

    def finished(self, seg: Segment) -> None:
        key = (seg.call_sid, seg.name)
        self.segments.pop(key, None)
        self.recent[key] = seg
        self.notify("segment_done", seg)
        while len(self.recent) > KEEP_FINISHED:
            self.recent.popitem(last=False)
        if seg.ended_by not in ("webhook", "hangup", "shutdown") and seg.kind == "petition" and self.on_orphan:
            self.spawn(self._orphan_later(seg), f"hang-up check {seg.call_sid}")

    async def _orphan_later(self, seg: Segment) -> None:
        await asyncio.sleep(self.hangup_grace_s)
        try:
            await self.on_orphan(seg.call_sid, seg.name)
        except Exception:
            log.exception("hang-up check of call %s failed", seg.call_sid)

    @property
    def live_recognitions(self) -> int:
        return self.slots.live

    @property
    def open_sockets(self) -> int:
        """Media Streams sockets connected to this process: calls whose audio comes here."""
        return len(self._sockets)

    # -- lifecycle ------------------------------------------------------------------------

    async def close_sockets(self) -> None:
        """Server shutdown: close the sockets so their segments are finished."""
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"server shutdown")

    async def close(self) -> None:
        for seg in list(self.segments.values()):
            seg.request_end("shutdown")
        for seg in list(self.segments.values()):
            await seg.wait_done(5)
        for task in list(self._tasks):
            task.cancel()

    # -- the socket ---------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=MAX_MESSAGE_BYTES)
        await ws.prepare(request)
        self._sockets.add(ws)
        conn = _Connection(self, ws)
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    if msg.type == WSMsgType.BINARY:
                        self.stats["bad_messages"] += 1
                    continue
                try:
                    if not self._message(conn, msg.data):
                        break
                except Exception:  # a bug must not cost the rest of the caller's audio
                    self.stats["bad_messages"] += 1
                    log.exception("media stream message not understood; the stream goes on")
                if conn.started and conn.segment is None and conn.ws.closed:
                    break
        finally:
            self._sockets.discard(ws)
            conn.closed()
        if conn.started and not conn.verdict.is_set() and not ws.closed:
            # The stream ended (stop) while its token was being checked: a wrong token is
            # still answered with 4001, not a plain close that looks like success.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(conn.verdict.wait(), VERDICT_WAIT_S)
        if not ws.closed:
            await ws.close(code=conn.close_code, message=conn.close_message)
        return ws

    def _message(self, conn: _Connection, text: str) -> bool:
        """Handle one message; ``False`` ends the socket."""
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):  # not JSON, or nested too deep to parse
            self.stats["bad_messages"] += 1
            return True
        if not isinstance(data, dict):
            self.stats["bad_messages"] += 1
            return True
        event = data.get("event")
        if event in ("connected", "mark"):
            return True
        if event == "start":
            if conn.started:
                return True
            if not conn.start(data):
                self.stats["rejected"] += 1
                log.warning("stream refused: a start without a call, token or segment")
                conn.refuse(b"invalid stream start")  # the handler closes with it
                return False
        elif event == "media":
            media = data.get("media") if isinstance(data.get("media"), dict) else {}
            if media.get("track", "inbound") not in ("inbound", "inbound_track"):
                return True
            try:
                chunk = base64.b64decode(media.get("payload") or "", validate=True)
            except (binascii.Error, ValueError, TypeError):
                self.stats["bad_messages"] += 1
                return True
            try:
                ts = int(media.get("timestamp"))
            except (TypeError, ValueError):
                ts = None
            conn.media(chunk, ts)
        elif event == "dtmf":
            dtmf = data.get("dtmf") if isinstance(data.get("dtmf"), dict) else {}
            if dtmf.get("digit") == "#":
                conn.end("dtmf")
        elif event == "stop":
            conn.end("stop")
            return False
        else:
            self.stats["unknown_events"] += 1
        return True
