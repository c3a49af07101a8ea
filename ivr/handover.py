"""A caller's turn handed from the instance that holds its Media Streams socket to the
instance that serves the call's next webhook, through the database.

Only the socket stays where it connected; Twilio's webhooks may land on any instance
(round-robin behind a balancer, no stickiness). Each segment the socket hears has a
``StreamSegment`` row: written when the stream opens (which instance holds it), when its
audio closes (where the WAV is, seconds, seconds of speech), and when recognition is over
(the transcript). The webhook's instance asks the socket's instance to stop taking audio
by writing ``end_requested`` on the row, and waits, bounded by the flow's waits, for the
audio and the words. A PostgreSQL ``NOTIFY`` on each write wakes the other side at once
(``core.platform.notify``); SQLite, and a missed notification, are covered by looking at the rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, delete, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from core.platform import instances
from core.platform.clock import utcnow
from core.platform.db import savepoint, session_scope
from core.platform.models import Instance, StreamSegment
from core.platform.notify import Listener, notify
from ivr.spool import save_handover_copy
from ivr.state import Recording, TurnKind

log = logging.getLogger(__name__)

END_CHANNEL = "gridline_segment_end"  # to the socket's instance: stop taking audio
HEARD_CHANNEL = "gridline_segment_heard"  # to waiters: the row moved on (opened, audio closed, done)
SEP = "\t"

Key = tuple[str, str]


# ---------------------------------------------------------------- rows (run off the loop)


def _row(session: Session, call_sid: str, segment: str) -> StreamSegment:
    """The turn's row, locked; made if it is not there yet (by whichever side comes first)."""
    stmt = select(StreamSegment).where(StreamSegment.call_sid == call_sid, StreamSegment.segment == segment)
    row = session.exec(stmt.with_for_update()).first()
    if row is not None:
        return row
    try:
        with savepoint(session):
            row = StreamSegment(call_sid=call_sid, segment=segment)
            session.add(row)
            session.flush()
        return row
    except IntegrityError:  # the other side made it a moment ago
        return session.exec(stmt.with_for_update()).one()


def _touch(session: Session, row: StreamSegment, channel: str, payload: str) -> StreamSegment:
    row.updated_at = utcnow()
    session.add(row)
    notify(session, channel, payload)
    session.flush()
    return row


def _set(session: Session, call_sid: str, segment: str, **values: Any) -> None:
    """The turn's row with ``values``: one UPDATE when it is there (the common case: the
    socket's instance made it when the stream opened), else made and locked as ``_row``
    does; either way the waiters are told."""
    table = StreamSegment.__table__
    done = session.execute(update(table).where(table.c.call_sid == call_sid, table.c.segment == segment)
                           .values(updated_at=utcnow(), **values))
    if done.rowcount == 1:
        notify(session, HEARD_CHANNEL, f"{call_sid}{SEP}{segment}")
        return
    row = _row(session, call_sid, segment)
    for name, value in values.items():
        setattr(row, name, value)
    _touch(session, row, HEARD_CHANNEL, f"{call_sid}{SEP}{segment}")


def opened(engine: Engine, instance_id: str, call_sid: str, segment: str, audio_path: str, live: bool) -> str | None:
    """The socket's instance took the stream; returns an end already asked for."""
    with session_scope(engine) as session:
        row = _row(session, call_sid, segment)
        row.instance_id, row.audio_path, row.live = instance_id, audio_path, live
        _touch(session, row, HEARD_CHANNEL, f"{call_sid}{SEP}{segment}")
        return row.end_requested


def audio_closed(engine: Engine, call_sid: str, segment: str, *, audio_path: str, duration: float, speech_s: float,
                 ended_by: str | None, live: bool = False, copy_from: str | None = None, instance_id: str = "",
                 folder: str | None = None) -> int:
    """The turn's audio is over. ``live``: its words are being recognised here (a recogniser
    opens with a turn's first audio, after the row was opened), so the instance serving the
    webhook waits the caller's wait for them, not a moment. ``copy_from`` (the finished WAV,
    when this instance keeps files in the local ``folder``): if an instance that keeps its
    files elsewhere is alive, the WAV goes into the database in the same commit, so
    whichever instance serves the call's next webhook, even one that cannot read this disk,
    files the turn with its recording. Returns the bytes copied."""
    with session_scope(engine) as session:
        _set(session, call_sid, segment, audio_path=audio_path, duration=duration, speech_s=speech_s,
             ended_by=ended_by, audio_closed=True, live=live)  # the row locked first, as before
        copied = 0
        if copy_from and folder and _elsewhere_alive(session, instance_id, Path(folder)):
            copied = save_handover_copy(session, audio_path, Path(copy_from))
        return copied


def _elsewhere_alive(session: Session, instance_id: str, folder: Path) -> list[str]:
    """Other instances holding a running lease that keep their files out of ``folder``."""
    cutoff = utcnow() - instances.lease_length()
    ids = session.exec(select(Instance.id).where(Instance.id != instance_id, Instance.heartbeat_at >= cutoff)).all()
    return instances.elsewhere(list(ids), folder)


def finished(engine: Engine, call_sid: str, segment: str, *, audio_path: str, duration: float, speech_s: float,
             ended_by: str | None, transcript: list[dict] | None, final: bool) -> None:
    with session_scope(engine) as session:
        _set(session, call_sid, segment, audio_path=audio_path, duration=duration, speech_s=speech_s,
             ended_by=ended_by, transcript=transcript, final=final, audio_closed=True, done=True)


def request_end(engine: Engine, call_sid: str, segment: str, reason: str) -> StreamSegment:
    """Ask whichever instance holds (or will hold) the stream to stop taking audio."""
    with session_scope(engine) as session:
        row = _row(session, call_sid, segment)
        if row.end_requested is None and not row.audio_closed:
            row.end_requested = reason[:16]
            _touch(session, row, END_CHANNEL, SEP.join((call_sid, segment, row.end_requested)))
        return row


def load(engine: Engine, call_sid: str, segment: str) -> StreamSegment | None:
    with session_scope(engine) as session:
        return session.exec(select(StreamSegment).where(StreamSegment.call_sid == call_sid,
                                                        StreamSegment.segment == segment)).first()


def end_requests(engine: Engine, keys: list[Key]) -> dict[Key, str]:
    """The ends asked for these turns (the socket's instance looks when it cannot listen)."""
    calls = sorted({sid for sid, _ in keys})
    with session_scope(engine) as session:
        rows = session.exec(select(StreamSegment.call_sid, StreamSegment.segment, StreamSegment.end_requested)
                            .where(StreamSegment.call_sid.in_(calls), StreamSegment.end_requested.is_not(None))).all()
    wanted = set(keys)
    return {(sid, seg): reason for sid, seg, reason in rows if (sid, seg) in wanted}


def forget_before(engine: Engine, before: datetime) -> int:
    with session_scope(engine) as session:
        return session.execute(delete(StreamSegment).where(StreamSegment.updated_at < before)).rowcount or 0


def recording_of(row: StreamSegment, kind: TurnKind) -> Recording:
    """The turn as the flow keeps it (the same shape ``ivr.stream.Segment.result`` gives)."""
    final = bool(row.final and row.done)
    finals = list(row.transcript or []) if final else []
    confs = [w["conf"] for s in finals for w in s.get("words", []) if "conf" in w]
    return Recording(
        kind=kind, audio_path=row.audio_path, speech_s=round(row.speech_s, 2), duration=round(row.duration, 2),
        text="".join(s.get("text", "") for s in finals), confidence=round(sum(confs) / len(confs), 4) if confs else None,
        segments=finals, final=final, deferred=not final, ended_by=row.ended_by or "open")


# ---------------------------------------------------------------- the two sides


class Handover:
    """The hotline's side of the handover: writes the rows of the segments this process's
    sockets hear, carries out the ends other instances ask for, and waits for the turns
    whose socket is elsewhere."""

    def __init__(self, engine: Engine, db: Callable[..., Any], registry: Any, instance_id: str,
                 listener: Listener | None = None):
        self.engine = engine
        self.db = db
        self.registry = registry
        self.instance_id = instance_id
        self.listener = listener or Listener(engine)
        # Files in a local folder of this instance (no bucket), and instances sharing the
        # database (PostgreSQL): finished turns are copied for the others (audio_closed).
        spool = getattr(registry, "spool", None)
        store = getattr(spool, "store", None)
        self.copies_audio = engine.dialect.name == "postgresql" and (
            store is None or getattr(store, "spool_is_store", True))
        self.folder = str(getattr(registry, "data_dir", "")) or None  # where the instances mark themselves
        self._heard: dict[Key, asyncio.Event] = {}
        self._writes: dict[Key, asyncio.Task] = {}  # each segment's writes, in order
        self._poller: asyncio.Task | None = None
        self.copied_bytes = 0  # finished turns copied into the database for other instances
        self.listener.subscribe(END_CHANNEL, self._end_noted)
        self.listener.subscribe(HEARD_CHANNEL, self._heard_noted)
        registry.observers.append(self)

    async def start(self) -> None:
        await self.listener.start()
        self._poller = asyncio.get_running_loop().create_task(self._poll_ends(), name="segment end requests")

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None
        if self._writes:
            await asyncio.wait(list(self._writes.values()), timeout=5)
        await self.listener.stop()

    # -- this process holds the socket -------------------------------------------------------

    def _write(self, seg: Any, fn: Callable[..., Any], *args: Any, **kw: Any) -> None:
        key = (seg.call_sid, seg.name)
        before = self._writes.get(key)

        async def run() -> None:
            if before is not None:
                await asyncio.gather(before, return_exceptions=True)
            try:
                result = await self.db(fn, self.engine, *args, **kw)
            except Exception:
                log.exception("call %s %s: the handover row was not written; another instance serving "
                              "this call's webhook will not hear this turn", seg.call_sid, seg.name)
                return
            if fn is opened and result:  # an instance asked for the end before the stream opened
                seg.request_end(result, *self._drain(result))
            if fn is audio_closed and result:
                self.copied_bytes += result
                instances.warn_local_media(1, str(self.folder), "seen as a call's turn was copied through the database")

        # Not the registry's task set: its close() cancels those, and the last writes (a
        # shutdown ends every segment) must still reach the database.
        task = asyncio.get_running_loop().create_task(run(), name=f"handover {seg.call_sid} {seg.name}")
        self._writes[key] = task
        task.add_done_callback(lambda t: self._writes.pop(key, None) if self._writes.get(key) is t else None)

    def segment_opened(self, seg: Any) -> None:
        self._write(seg, opened, self.instance_id, seg.call_sid, seg.name, seg.stored_path, seg.live)

    def segment_audio_closed(self, seg: Any) -> None:
        rec = seg.result()
        # Without a bucket the WAV stays on this disk, which another instance cannot read: a
        # copy goes with the row (a faulted spool puts its audio in the database already).
        copy = str(seg.path) if self.copies_audio and getattr(seg.audio, "fault", None) is None else None
        self._write(seg, audio_closed, seg.call_sid, seg.name, audio_path=seg.stored_path, duration=rec.duration,
                    speech_s=rec.speech_s, ended_by=seg.ended_by, live=seg.live, copy_from=copy,
                    instance_id=self.instance_id, folder=self.folder)

    def segment_done(self, seg: Any) -> None:
        rec = seg.result()
        self._write(seg, finished, seg.call_sid, seg.name, audio_path=seg.stored_path, duration=rec.duration,
                    speech_s=rec.speech_s, ended_by=seg.ended_by, transcript=rec.segments if rec.final else None,
                    final=rec.final)

    def _drain(self, reason: str) -> tuple[float, float]:
        # After the webhook that follows #, frames in flight are still the turn; a hang-up ends it now.
        return (self.registry.drain_s, self.registry.max_drain_s) if reason != "hangup" else (0.0, 0.0)

    def _end(self, call_sid: str, segment: str, reason: str) -> None:
        seg = self.registry.segments.get((call_sid, segment))
        if seg is not None and seg.ended_by is None:
            seg.request_end(reason, *self._drain(reason))

    def _end_noted(self, payload: str) -> None:
        parts = payload.split(SEP)
        if len(parts) == 3:
            self._end(*parts)

    async def _poll_ends(self) -> None:
        """Without notifications (SQLite, or the listening connection down), the open
        segments' rows are looked at for ends asked for."""
        while True:
            await asyncio.sleep(self.listener.poll_seconds)
            if self.listener.connected:
                continue
            keys = [k for k, s in self.registry.segments.items() if s.ended_by is None]
            if not keys:
                continue
            try:
                asked = await self.db(end_requests, self.engine, keys)
            except Exception as exc:
                log.warning("could not look for segment end requests: %s", exc)
                continue
            for (call_sid, segment), reason in asked.items():
                self._end(call_sid, segment, reason)

    # -- another process holds the socket -----------------------------------------------------

    def _heard_noted(self, payload: str) -> None:
        parts = payload.split(SEP)
        if len(parts) == 2:
            event = self._heard.get((parts[0], parts[1]))
            if event is not None:
                event.set()

    async def _until(self, key: Key, row: StreamSegment | None, ready: Callable[[StreamSegment], bool],
                     timeout: float) -> StreamSegment | None:
        deadline = time.monotonic() + timeout
        event = self._heard.setdefault(key, asyncio.Event())
        try:
            while row is None or not ready(row):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                # A notification that came while the row was read has set the event: no wait then.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), min(left, self.listener.poll_seconds))
                event.clear()
                row = await self.db(load, self.engine, *key)
            return row
        finally:
            if self._heard.get(key) is event:
                self._heard.pop(key, None)

    async def take(self, call_sid: str, segment: str, reason: str, *, open_wait: float, audio_wait: float,
                   done_wait: Callable[[bool], float]) -> StreamSegment | None:
        """Ask for the end of a turn whose socket may be on another instance and wait:
        ``open_wait`` for its stream to be taken somewhere, ``audio_wait`` for its audio to
        close, ``done_wait(live)`` for its words. The row as it then is (``None``: no stream
        was ever taken for it)."""
        key = (call_sid, segment)
        row = await self.db(request_end, self.engine, call_sid, segment, reason)
        row = await self._until(key, row, lambda r: r.instance_id is not None, open_wait)
        if row is None or row.instance_id is None:
            return None
        row = await self._until(key, row, lambda r: r.audio_closed, audio_wait)
        if row is not None and row.audio_closed:
            row = await self._until(key, row, lambda r: r.done, done_wait(row.live))
        return row
