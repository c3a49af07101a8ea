"""The Media Streams socket: the caller's audio → WAV on disk + live local recognition.

Twilio opens one websocket per ``<Start><Stream>`` and sends JSON messages: ``connected``,
``start`` (with our ``<Parameter>``s in ``customParameters``), ``media`` (20 ms of 8 kHz
µ-law, base64), ``dtmf``, ``mark``, ``stop``. Twilio does not sign the socket, so the
``start`` message must carry the call's token; anything else is closed unheard.

Each turn of the caller (the petition, the address) is a *segment* with its own WAV file
and recogniser. Audio is written to disk as it arrives (durable first) and fed to the
transcriber off the event loop; the progress is saved to the ``CallSession`` every few
seconds, so a crash leaves the audio and most of the transcript for the recovery sweep.
A segment ends when the webhook after ``#``/silence asks (``end("webhook")``), on a
``#`` seen on the stream, on ``stop`` or when the socket drops.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web
from sqlalchemy import Engine

from ivr import calls
from speech_models.audio import MULAW_TABLE, WavWriter

log = logging.getLogger(__name__)

FRAME_BYTES = 160  # 20 ms of 8 kHz µ-law
MAX_PENDING_BYTES = 8000 * 10  # media before a valid start: keep at most 10 s


def frame_rms(mulaw: bytes) -> np.ndarray:
    """RMS of each 20 ms frame of µ-law audio (pcm16 scale)."""
    x = MULAW_TABLE[np.frombuffer(mulaw, dtype=np.uint8)].astype(np.float64)
    n = len(x) // FRAME_BYTES
    if n == 0:
        return np.zeros(0)
    return np.sqrt((x[: n * FRAME_BYTES].reshape(n, FRAME_BYTES) ** 2).mean(axis=1))


def speech_seconds(mulaw: bytes, threshold: float) -> float:
    return float((frame_rms(mulaw) > threshold).sum()) * 0.02


def pcm_speech_seconds(pcm: bytes, sample_rate: int, threshold: float) -> float:
    """Seconds of 20 ms pcm16 frames louder than ``threshold`` (same measure as live)."""
    x = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2").astype(np.float64)
    step = sample_rate // 50
    n = len(x) // step
    if n == 0:
        return 0.0
    rms = np.sqrt((x[: n * step].reshape(n, step) ** 2).mean(axis=1))
    return float((rms > threshold).sum()) * 0.02


def speech_pool(speech: Any, workers: int):
    """The app's ``SpeechPool``; a bare transcriber (tests) gets a pool of its own."""
    from speech_models.pool import SpeechPool

    if speech is None or isinstance(speech, SpeechPool):
        return speech
    if hasattr(speech, "open_stream"):
        return SpeechPool(speech, workers=workers)
    raise TypeError(f"not a transcriber or SpeechPool: {speech!r}")


@dataclass
class Segment:
    """One turn of the caller on the stream."""

    call_sid: str
    name: str
    kind: str  # petition | address
    path: Path
    registry: StreamRegistry
    done: asyncio.Event = field(default_factory=asyncio.Event)
    ended_by: str | None = None
    received: int = 0  # µ-law bytes
    speech_s: float = 0.0
    finals: list[dict] = field(default_factory=list)
    result: dict | None = None
    _accepting: bool = True
    _stream: Any = None  # speech_models.pool.PooledStream, or a bare WavWriter without a model
    _task: asyncio.Task | None = None
    _finishing: asyncio.Event = field(default_factory=asyncio.Event)

    async def open(self) -> None:
        pool = self.registry.pool
        if pool is not None:
            self._stream = await pool.open_stream(8000, encoding="mulaw", record_to=self.path, partials=False)
        else:
            self._stream = WavWriter(self.path, 8000)
        self._task = asyncio.create_task(self._run(), name=f"segment {self.call_sid} {self.name}")

    def feed(self, mulaw: bytes) -> None:
        """Written to disk at once; recognised when a speech worker is free."""
        if not self._accepting or not mulaw:
            return
        if isinstance(self._stream, WavWriter):
            self._stream.write(MULAW_TABLE[np.frombuffer(mulaw, dtype=np.uint8)].tobytes())
        else:
            self._stream.feed(mulaw)
        self.received += len(mulaw)
        self.speech_s += speech_seconds(mulaw, self.registry.speech_rms)

    def end(self, reason: str, drain_s: float = 0.0) -> None:
        """Stop taking audio (after ``drain_s`` for frames still in flight) and finalise."""
        if self.ended_by is not None:
            return
        self.ended_by = reason
        if drain_s > 0:
            asyncio.get_running_loop().call_later(drain_s, self._stop_taking)
        else:
            self._stop_taking()

    def _stop_taking(self) -> None:
        self._accepting = False
        self._finishing.set()

    async def wait(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.done.wait(), timeout)
        return self.done.is_set()

    def snapshot(self, final: bool) -> dict:
        text = "".join(s["text"] for s in self.finals)
        confs = [w["conf"] for s in self.finals for w in s.get("words", [])]
        return {
            "kind": self.kind,
            "audio_path": str(self.path),
            "text": text,
            "confidence": round(sum(confs) / len(confs), 4) if confs else None,
            "speech_s": round(self.speech_s, 2),
            "duration": round(self.received / 8000, 2),
            "segments": list(self.finals),
            "final": final,
            "ended_by": self.ended_by,
        }

    async def _collect(self) -> None:
        reg = self.registry
        last = time.monotonic()
        async for seg in self._stream.segments():
            if seg.final and seg.text:
                self.finals.append(seg.to_dict())
                if time.monotonic() - last >= reg.persist_every_s:
                    last = time.monotonic()
                    await reg.persist(self, final=False)

    async def _run(self) -> None:
        reg = self.registry
        collector = None
        try:
            await reg.persist(self, final=False)  # the WAV path is on record before any audio
            if not isinstance(self._stream, WavWriter):
                collector = asyncio.create_task(self._collect())
            await self._finishing.wait()
            self._accepting = False
            if isinstance(self._stream, WavWriter):
                self._stream.close()
            else:
                transcript = await self._stream.finish()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(collector, 1)
                self.finals = [s.to_dict() for s in transcript.segments if s.text]
        except Exception:
            log.exception("segment %s of call %s failed; the audio so far is kept", self.name, self.call_sid)
        finally:
            self._accepting = False
            if collector is not None and not collector.done():
                collector.cancel()
            self.result = self.snapshot(final=True)
            try:
                await reg.persist(self, final=True)
            except Exception:
                log.exception("could not save segment %s of call %s", self.name, self.call_sid)
            self.done.set()
            reg.finished(self)


class StreamRegistry:
    """Live segments of this process, per-call locks, and the socket handler."""

    def __init__(self, engine: Engine, speech: Any, recordings_dir: Path, stream_cfg: dict,
                 speech_workers: int = 2):
        self.engine = engine
        self.pool = speech_pool(speech, max(1, speech_workers))
        self._own_pool = self.pool is not speech
        self.recordings_dir = recordings_dir
        self.speech_rms = float(stream_cfg["speech_rms"])
        self.persist_every_s = float(stream_cfg["persist_every_s"])
        self.hangup_grace_s = float(stream_cfg["hangup_grace_s"])
        self.segments: dict[tuple[str, str], Segment] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # Called with (call_sid, segment) when a segment ended without the webhook asking:
        # the caller may have hung up. Set by ivr.web.
        self.on_orphan: Callable[[str, str], Awaitable[None]] | None = None
        self.stats = {"bad_messages": 0, "unknown_events": 0, "rejected": 0, "early_media": 0}
        self._tasks: set[asyncio.Task] = set()
        self._sockets: set[web.WebSocketResponse] = set()

    def lock(self, call_sid: str) -> asyncio.Lock:
        lk = self._locks.get(call_sid)
        if lk is None:
            lk = self._locks[call_sid] = asyncio.Lock()
        return lk

    async def mutate(self, call_sid: str, fn):
        async with self.lock(call_sid):
            return await asyncio.to_thread(calls.mutate, self.engine, call_sid, fn)

    def get(self, call_sid: str, name: str) -> Segment | None:
        return self.segments.get((call_sid, name))

    def live_for(self, call_sid: str) -> list[Segment]:
        return [s for (sid, _), s in self.segments.items() if sid == call_sid]

    async def persist(self, seg: Segment, final: bool) -> None:
        snap = seg.snapshot(final)

        def write(row, state):
            state.setdefault("segments", {})[seg.name] = snap
            if seg.kind == "petition" and (state.get("petition") or {}).get("segment") == seg.name:
                row.audio_path = snap["audio_path"]
                row.speech_seconds = snap["speech_s"]
                row.transcript = snap["segments"] or None

        await self.mutate(seg.call_sid, write)

    def finished(self, seg: Segment) -> None:
        self.segments.pop((seg.call_sid, seg.name), None)
        if seg.ended_by not in ("webhook", "hangup") and seg.kind == "petition" and self.on_orphan:
            task = asyncio.create_task(self._orphan_later(seg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _orphan_later(self, seg: Segment) -> None:
        await asyncio.sleep(self.hangup_grace_s)
        try:
            await self.on_orphan(seg.call_sid, seg.name)
        except Exception:
            log.exception("hang-up check of call %s failed", seg.call_sid)

    async def open_segment(self, call_sid: str, name: str) -> Segment:
        existing = self.get(call_sid, name)
        if existing is not None:
            return existing
        kind = "address" if name.startswith("address") else "petition"
        day = time.strftime("%Y%m%d")
        safe = "".join(c for c in f"{call_sid}-{name}" if c.isalnum() or c in "-_")
        path = self.recordings_dir / day / f"{safe}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        seg = Segment(call_sid, name, kind, path, self)
        self.segments[(call_sid, name)] = seg
        try:
            await seg.open()
        except Exception:
            self.segments.pop((call_sid, name), None)
            raise
        return seg

    async def close_sockets(self) -> None:
        """Server shutdown: close the sockets so their segments are finalised and saved."""
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"server shutdown")

    async def close(self) -> None:
        for seg in list(self.segments.values()):
            seg.end("shutdown")
        for seg in list(self.segments.values()):
            await seg.wait(5)
        for task in list(self._tasks):
            task.cancel()
        if self._own_pool and self.pool is not None:
            await self.pool.close()

    # -- the socket ---------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=1 << 20)
        await ws.prepare(request)
        self._sockets.add(ws)
        seg: Segment | None = None
        pending: list[bytes] = []
        pending_bytes = 0
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    if msg.type == WSMsgType.BINARY:
                        self.stats["bad_messages"] += 1
                    continue
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    self.stats["bad_messages"] += 1
                    continue
                if not isinstance(data, dict):
                    self.stats["bad_messages"] += 1
                    continue
                event = data.get("event")
                if event == "connected" or event == "mark":
                    continue
                if event == "start":
                    if seg is not None:
                        continue
                    seg = await self._start(data)
                    if seg is None:
                        self.stats["rejected"] += 1
                        await ws.close(code=4001, message=b"invalid stream token")
                        break
                    for chunk in pending:  # media that raced ahead of start: keep it
                        seg.feed(chunk)
                    pending.clear()
                elif event == "media":
                    media = data.get("media") if isinstance(data.get("media"), dict) else {}
                    if media.get("track", "inbound") not in ("inbound", "inbound_track"):
                        continue
                    try:
                        chunk = base64.b64decode(media.get("payload") or "", validate=True)
                    except (binascii.Error, ValueError, TypeError):
                        self.stats["bad_messages"] += 1
                        continue
                    if seg is not None:
                        seg.feed(chunk)
                    elif pending_bytes + len(chunk) <= MAX_PENDING_BYTES:
                        self.stats["early_media"] += 1
                        pending.append(chunk)
                        pending_bytes += len(chunk)
                elif event == "dtmf":
                    digit = (data.get("dtmf") or {}).get("digit") if isinstance(data.get("dtmf"), dict) else None
                    if seg is not None and digit == "#":
                        seg.end("dtmf")
                elif event == "stop":
                    if seg is not None:
                        seg.end("stop")
                    break
                else:
                    self.stats["unknown_events"] += 1
        finally:
            self._sockets.discard(ws)
            if seg is not None and seg.ended_by is None:
                seg.end("dropped")
        if not ws.closed:
            await ws.close()
        return ws

    async def _start(self, data: dict) -> Segment | None:
        start = data.get("start") if isinstance(data.get("start"), dict) else {}
        params = start.get("customParameters") if isinstance(start.get("customParameters"), dict) else {}
        call_sid = str(start.get("callSid") or params.get("callSid") or "")
        token = str(params.get("token") or "")
        name = str(params.get("segment") or "")
        if not call_sid or not token or not name or len(name) > 32:
            return None
        if not await asyncio.to_thread(calls.check_token, self.engine, call_sid, token):
            log.warning("stream for call %s refused: wrong token", call_sid)
            return None
        return await self.open_segment(call_sid, name)
