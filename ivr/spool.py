"""The caller's live audio on its way to the media store, whatever the disk does.

Each turn's audio (a ``SegmentAudio``) is written crash-safe to the *spool*, the WAV at
``store.spool_path(key)`` under the data directory, frame by frame as it arrives
(``speech_models.audio.WavWriter``). Around that:

* **Parts while the call goes on.** With a store that is not the spool itself (a bucket),
  every ``spool_part_s`` seconds of audio (10 by default) what came since the last part is
  put as an object of its own, ``<key>.parts/00000``, ``00001``, … (S3 multipart needs
  5 MiB parts but the last; 10 s of phone audio is 160 KB). Parts are contiguous from the
  first byte, of equal size but the last, so a machine that vanishes mid-call loses at most
  the part not yet sent: ``assemble`` makes a WAV from them with a true header.
* **A finished turn is kept at once:** the whole WAV is put to the store, its sha256
  confirmed by reading it back, and only then are the spool file and the parts removed. A
  bucket that cannot be reached leaves the spool file for the store's upload job.
* **A spool that fails** (read-only, full, a write error mid-turn) loses nothing it can
  help: what the file holds stays, what follows is held in memory (bounded per call,
  ``spool_memory_s``) and put in parts to the store or, as a last resort, to the database
  (``audio_part`` rows, bounded per call, ``spool_database_s``). At the turn's end the
  WAV is made whole (the spool's head, then the parts) and put to the store; if the store
  will not take it either, it waits in the database for the ``keep_held_audio`` job, with
  its size and sha256 already known, so the case files now with everything captured.
  Audio beyond both bounds is lost, and counted: the case is flagged
  ``recording_incomplete`` with the seconds kept.

Nothing here raises into the socket: a turn's audio goes on being taken whatever fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from core.cases.models import Attachment
from core.platform import jobs
from core.platform.db import savepoint, session_scope
from core.platform.models import AudioPart, Job
from core.platform.runner import RetryLater
from core.platform.storage import resolve
from core.platform.uploads import delete_store_parts, part_key, record_uploaded  # noqa: F401 (ivr.calls and tests import them from here)
from speech_models.audio import WavWriter, _wav_header

log = logging.getLogger(__name__)

Db = Callable[..., Awaitable[Any]]
BYTES_PER_S = 16000  # pcm16 at 8 kHz
HEADER_BYTES = 44


# Moves a recording held in the database into the media store once the store takes it.
KEEP_HELD_JOB = jobs.declare("keep_held_audio", "ivr/spool.py: puts a recording held in the database into the media store")
KEEP_HELD_RETRY_S = 60.0


def wav_bytes(pcm: bytes, sample_rate: int = 8000) -> bytes:
    pcm = pcm[: len(pcm) - len(pcm) % 2]
    return _wav_header(sample_rate, len(pcm)) + pcm


# ---------------------------------------------------------------- the database, last resort


def save_part(engine: Engine, key: str, seq: int, start: int, data: bytes) -> None:
    with session_scope(engine) as session:
        try:
            with savepoint(session):
                session.add(AudioPart(key=key, seq=seq, start=start, data=data))
                session.flush()
        except IntegrityError:  # the same part again (a retry after a lost answer)
            pass


def held_parts(engine: Engine, key: str) -> list[tuple[int, int, bytes]]:
    """(seq, start, data) of a recording's parts in the database, in order."""
    with session_scope(engine) as session:
        rows = session.exec(select(AudioPart.seq, AudioPart.start, AudioPart.data)
                            .where(AudioPart.key == key).order_by(AudioPart.seq)).all()
        return [(int(seq), int(start), bytes(data)) for seq, start, data in rows]


def held_keys(engine: Engine) -> list[str]:
    with session_scope(engine) as session:
        return sorted(set(session.exec(select(AudioPart.key)).all()))


def queue_keep_held(engine: Engine, key: str, size: int, sha256: str) -> None:
    with session_scope(engine) as session:
        jobs.enqueue(session, KEEP_HELD_JOB, {"key": key, "size": size, "sha256": sha256},
                     dedupe_key=f"{KEEP_HELD_JOB}:{key}", max_attempts=1000)


def mark_held(session: Any, key: str) -> None:
    """The attachments of ``key`` wait for the store (the console says so) until
    ``keep_held_audio`` has put the WAV there; in the caller's transaction."""

    for row in session.exec(select(Attachment).where(Attachment.path == key)).all():
        row.upload_pending = True
        session.add(row)


def drop_parts(engine: Engine, key: str) -> None:
    with session_scope(engine) as session:
        session.execute(delete(AudioPart).where(AudioPart.key == key))


# A finished turn's whole audio, left in the database by the instance that heard it when
# the instances keep files each in a local folder (no bucket): whichever instance files the
# call keeps it in its own folder (ivr.handover, ivr.calls). Not a part of a faulted spool.
HANDOVER_COPY_SEQ = -2


def save_handover_copy(session: Any, key: str, wav: Path) -> int:
    """The finished WAV at ``wav`` (its audio, without the header) as the database copy of
    ``key``, in the caller's transaction; returns the bytes copied (0: no audio, or the
    file cannot be read: the webhook's instance then files the turn without it)."""
    try:
        pcm = wav.read_bytes()[HEADER_BYTES:]
    except OSError as exc:
        log.warning("%s: no copy for the other instances (%s)", key, exc)
        return 0
    if not pcm:
        return 0
    with savepoint(session):
        session.execute(delete(AudioPart).where(AudioPart.key == key, AudioPart.seq == HANDOVER_COPY_SEQ))
        session.add(AudioPart(key=key, seq=HANDOVER_COPY_SEQ, start=0, data=pcm))
        session.flush()
    return len(pcm)


def drop_handover_copies(session: Any, keys: list[str]) -> None:
    """The turns of a call are filed (or the call ended without a case): their database
    copies go, in the caller's transaction."""
    if keys:
        session.execute(delete(AudioPart).where(AudioPart.key.in_(keys), AudioPart.seq == HANDOVER_COPY_SEQ))


def forget_handover_copies(engine: Engine, before: Any) -> int:
    """Copies of turns no call filed (the call never got that far), older than ``before``."""
    with session_scope(engine) as session:
        return session.execute(delete(AudioPart).where(AudioPart.seq == HANDOVER_COPY_SEQ,
                                                       AudioPart.created_at < before)).rowcount or 0


# ---------------------------------------------------------------- bounds per call


class CallBudget:
    """Bytes of audio each call holds in memory and in the database while its spool fails."""

    def __init__(self, memory_s: float, database_s: float):
        self.limits = {"memory": int(memory_s * BYTES_PER_S), "database": int(database_s * BYTES_PER_S)}
        self.used: dict[str, dict[str, int]] = {"memory": {}, "database": {}}

    def take(self, kind: str, call_sid: str, n: int) -> bool:
        used = self.used[kind]
        if used.get(call_sid, 0) + n > self.limits[kind]:
            return False
        used[call_sid] = used.get(call_sid, 0) + n
        return True

    def give(self, kind: str, call_sid: str, n: int) -> None:
        used = self.used[kind]
        left = used.get(call_sid, 0) - n
        if left > 0:
            used[call_sid] = left
        else:
            used.pop(call_sid, None)

    def held(self, kind: str = "memory") -> int:
        return sum(self.used[kind].values())


@dataclass
class Spool:
    """What every segment of a process shares: the store, the database, the bounds."""

    store: Any  # core.platform.media.MediaStore, or None: the data directory is the store
    data_dir: Path
    engine: Engine | None
    db: Db | None
    budget: CallBudget
    part_s: float = 10.0
    sample_rate: int = 8000
    name: str = ""  # this spool, for files that wait in it (core.platform.uploads.spool_name)
    stats: dict[str, int] = field(default_factory=lambda: {"parts_stored": 0, "parts_in_database": 0,
                                                            "spool_faults": 0, "bytes_lost": 0})

    @property
    def remote(self) -> bool:
        """Parts and the finished WAV go somewhere else than the spool folder."""
        return self.store is not None and not getattr(self.store, "spool_is_store", True)

    def path(self, key: str) -> Path:
        if self.store is not None:
            return Path(self.store.spool_path(key))

        return resolve(key, self.data_dir)

    @property
    def part_bytes(self) -> int:
        return max(2, int(self.part_s * BYTES_PER_S) // 2 * 2)


@dataclass
class Placed:
    """Where a finished turn's audio is: ``size``/``sha256`` of its WAV, ``held`` when it waits
    in the database for the store, ``kept_s``/``heard_s`` (less kept than heard: lost)."""

    key: str
    size: int | None = None
    sha256: str | None = None
    held: bool = False
    uploaded: bool = False
    kept_s: float = 0.0
    heard_s: float = 0.0
    fault: str | None = None

    @property
    def incomplete(self) -> bool:
        return self.kept_s + 0.02 < self.heard_s


class SegmentAudio:
    """One turn's audio: the spool file, parts, and the fallbacks when the spool fails."""

    def __init__(self, spool: Spool, call_sid: str, key: str):
        self.spool = spool
        self.call_sid = call_sid
        self.key = key
        self.path = spool.path(key)
        self.heard = 0  # pcm bytes received
        self.on_disk = 0  # pcm bytes safely in the spool file
        self.lost = 0
        self.fault: str | None = None
        self.remote = spool.remote
        # Parts: contiguous stretches of the audio from ``parts_from`` (0 with a bucket; where
        # the spool failed, without one).
        self.parts_from = 0
        self.unsent = bytearray()  # audio since the last part was cut
        self.queue: list[tuple[int, int, bytes]] = []  # (seq, start, data) cut, not yet stored
        self.queued_memory = 0  # bytes of the queue counted against the call's memory
        self.stored: dict[int, str] = {}  # seq -> "store" | "database"
        self.seq = 0
        self.parts_given_up = False  # a bucket long away: the spool file alone carries the turn
        self._sender: asyncio.Task | None = None
        self._closed = False
        self.wav: WavWriter | None = None
        try:
            self.wav = WavWriter(self.path, spool.sample_rate)
        except OSError as exc:
            self._spool_failed(exc, at_start=True)

    # -- taking audio -----------------------------------------------------------------

    @property
    def needs_parts(self) -> bool:
        return (self.remote and not self.parts_given_up) or self.fault is not None

    def write(self, pcm: bytes) -> None:
        """Never raises: the rest of the caller's audio must still be taken."""
        if self._closed or not pcm:
            return
        self.heard += len(pcm)
        if self.wav is not None:
            try:
                self.wav.write(pcm)
                self.on_disk += len(pcm)
            except OSError as exc:
                self._spool_failed(exc)
        if self.needs_parts and (self.wav is None or self.remote):
            self._hold(pcm)

    def _hold(self, pcm: bytes) -> None:
        if self.fault is not None and not self.spool.budget.take("memory", self.call_sid, len(pcm)):
            self.lost += len(pcm)
            self.spool.stats["bytes_lost"] += len(pcm)
            return
        if self.fault is not None:
            self.queued_memory += len(pcm)
        self.unsent += pcm
        part = self.spool.part_bytes
        while len(self.unsent) >= part:
            self._cut(bytes(self.unsent[:part]))
            del self.unsent[:part]

    def _cut(self, data: bytes) -> None:
        start = self.parts_from + self.seq * self.spool.part_bytes
        self.queue.append((self.seq, start, data))
        self.seq += 1
        self._send_soon()

    def _spool_failed(self, exc: OSError, *, at_start: bool = False) -> None:
        self.fault = f"{type(exc).__name__}: {exc.strerror or exc}"
        self.spool.stats["spool_faults"] += 1
        log.error("call %s: the spool cannot take %s (%s); %s held in memory and sent to the media store "
                  "or the database", self.call_sid, self.key, self.fault,
                  "the turn's audio is" if at_start else f"after {self.on_disk / BYTES_PER_S:.2f} s, the rest is")
        if self.wav is not None:
            with contextlib.suppress(OSError, ValueError):
                self.wav.close()
            with contextlib.suppress(OSError):  # what a failed write left half-written
                os.truncate(self.path, HEADER_BYTES + self.on_disk)
            self.wav = None
        if self.remote and not self.parts_given_up:
            # the parts carry the audio from its first byte already; this write's bytes were
            # held by write() only if they were not on disk: hold them now
            pass
        else:
            self.parts_from = self.on_disk
            self.unsent.clear()
            self.seq = 0
        if self.remote and self.parts_given_up:
            # The bucket gave up on parts earlier; the spool had the head. Parts now start here.
            self.parts_given_up = False
            self.parts_from = self.on_disk
            self.unsent.clear()
            self.seq = 0

    # -- sending parts ----------------------------------------------------------------

    def _send_soon(self) -> None:
        if self._sender is None or self._sender.done():
            try:
                self._sender = asyncio.get_running_loop().create_task(self._send(), name=f"parts {self.key}")
            except RuntimeError:  # no loop (a synchronous test): sent on close
                self._sender = None

    async def _send(self) -> None:
        while self.queue:
            seq, start, data = self.queue[0]
            where = await self._put_part(seq, start, data)
            if where is None:
                if self.fault is None:
                    # The spool has this audio: give up on parts for this turn rather than
                    # hold it twice; the finished WAV is uploaded (now, or by the job).
                    log.warning("call %s: parts of %s not stored; the spool file carries the turn",
                                self.call_sid, self.key)
                    self.parts_given_up = True
                    self.queue.clear()
                    self.unsent.clear()
                return  # held in memory; tried again with the next part
            self.queue.pop(0)
            self.stored[seq] = where
            if self.queued_memory:
                self.spool.budget.give("memory", self.call_sid, len(data))
                self.queued_memory -= len(data)

    async def _put_part(self, seq: int, start: int, data: bytes) -> str | None:
        spool = self.spool
        if self.remote:
            try:
                await asyncio.to_thread(spool.store.put_bytes, part_key(self.key, seq), data)
                spool.stats["parts_stored"] += 1
                return "store"
            except Exception as exc:  # the bucket is away (MediaUnavailable) or refuses
                log.warning("call %s: part %d of %s not stored in the media store: %s", self.call_sid, seq,
                            self.key, exc)
        if self.fault is None or spool.engine is None or spool.db is None:
            return None
        if not spool.budget.take("database", self.call_sid, len(data)):
            return None
        try:
            await spool.db(save_part, spool.engine, self.key, seq, start, data)
        except Exception:
            spool.budget.give("database", self.call_sid, len(data))
            log.exception("call %s: part %d of %s not stored in the database either", self.call_sid, seq, self.key)
            return None
        spool.stats["parts_in_database"] += 1
        return "database"

    # -- the end of the turn -----------------------------------------------------------

    def close(self) -> None:
        """No more audio (on the event loop: quick). ``finish`` then places it."""
        if self._closed:
            return
        self._closed = True
        if self.wav is not None:
            try:
                self.wav.close()
            except (OSError, ValueError) as exc:
                log.error("call %s: cannot finish %s: %s", self.call_sid, self.path, exc)
                # the audio is on disk; a header left behind is repaired when it is read
            self.wav = None
        if self.needs_parts and self.unsent:
            self._cut(bytes(self.unsent))
            self.unsent.clear()

    async def finish(self) -> Placed:
        """The finished turn kept: in the store (sha256 confirmed), or held with its size and
        sha256 known, or (default store, spool fine) where it is."""
        self.close()
        if self.needs_parts:
            if self._sender is not None:
                with contextlib.suppress(Exception):
                    await self._sender
            if self.queue:
                await self._send()
        placed = Placed(self.key, heard_s=self.heard / BYTES_PER_S, fault=self.fault)
        try:
            if self.fault is not None:
                await self._finish_faulted(placed)
            elif self.remote:
                await self._upload(placed)
            else:
                placed.kept_s = placed.heard_s
        finally:
            self._release()
        return placed

    def _release(self) -> None:
        if self.queued_memory:
            self.spool.budget.give("memory", self.call_sid, self.queued_memory)
            self.queued_memory = 0
        self.queue.clear()

    async def _upload(self, placed: Placed) -> None:
        store = self.spool.store
        placed.kept_s = placed.heard_s
        try:
            data = await asyncio.to_thread(self.path.read_bytes)
        except OSError as exc:
            log.error("call %s: %s unreadable: %s", self.call_sid, self.path, exc)
            return
        placed.size, placed.sha256 = len(data), hashlib.sha256(data).hexdigest()
        try:
            stored = await asyncio.to_thread(store.put_file, self.key, self.path)
        except Exception as exc:
            log.warning("call %s: %s waits in the spool for the media store: %s", self.call_sid, self.key, exc)
            return
        if (stored.size, stored.sha256) != (placed.size, placed.sha256):
            log.error("call %s: %s stored with sha256 %s, spool has %s; the spool file stays", self.call_sid,
                      self.key, stored.sha256, placed.sha256)
            return
        placed.uploaded = True
        with contextlib.suppress(OSError):
            self.path.unlink()
        await asyncio.to_thread(delete_store_parts, store, self.key, self.seq)

    async def _finish_faulted(self, placed: Placed) -> None:
        """Spool head + parts (from memory, the store, the database) → one WAV, put to the
        store; or held in the database with its sha256 known."""
        if not self.heard:  # the stream heard nothing (a turn skipped with a key): nothing to keep
            placed.kept_s = 0.0
            return
        spool = self.spool
        pcm = bytearray()
        head = self.parts_from
        if head:
            try:
                raw = await asyncio.to_thread(self.path.read_bytes)
                pcm += raw[HEADER_BYTES: HEADER_BYTES + head]
            except OSError as exc:
                log.error("call %s: the head of %s is unreadable: %s", self.call_sid, self.key, exc)
        if len(pcm) < head:
            self.lost += head - len(pcm)
            pcm += b"\0" * 0  # what could not be read is lost, not invented
        from_db = {}
        if spool.engine is not None and spool.db is not None and "database" in self.stored.values():
            from_db = {seq: data for seq, _, data in await spool.db(held_parts, spool.engine, self.key)}
        unsaved = {seq: data for seq, _, data in self.queue}
        for seq in range(self.seq):
            data = unsaved.get(seq) or from_db.get(seq)
            if data is None and self.stored.get(seq) == "store":
                with contextlib.suppress(Exception):
                    data = await asyncio.to_thread(spool.store.get_bytes, part_key(self.key, seq))
            if data is None:
                log.error("call %s: part %d of %s is lost", self.call_sid, seq, self.key)
                self.lost += spool.part_bytes
                continue
            pcm += data
        whole = wav_bytes(bytes(pcm), spool.sample_rate)
        placed.size, placed.sha256 = len(whole), hashlib.sha256(whole).hexdigest()
        placed.kept_s = round((len(whole) - HEADER_BYTES) / BYTES_PER_S, 2)
        if await self._put_whole(whole, placed):
            placed.uploaded = True
            return
        if self.queue:  # neither the store nor the database took the last of it: try once more
            for seq, start, data in list(self.queue):
                if spool.engine is None or spool.db is None:
                    break
                try:
                    await spool.db(save_part, spool.engine, self.key, seq, start, data)
                    self.queue.remove((seq, start, data))
                except Exception:
                    break
        if self.queue:
            log.error("call %s: %s could be stored nowhere; %.2f s of it lost", self.call_sid, self.key,
                      sum(len(d) for _, _, d in self.queue) / BYTES_PER_S)
            placed.kept_s -= sum(len(d) for _, _, d in self.queue) / BYTES_PER_S
            self.queue.clear()
        # the whole WAV waits in the database (its head as a part of its own) for the store
        if head and spool.engine is not None and spool.db is not None:
            with contextlib.suppress(Exception):
                await spool.db(save_part, spool.engine, self.key, -1, 0, bytes(pcm[:head]))
        placed.held = True
        if spool.engine is not None and spool.db is not None:
            try:
                await spool.db(queue_keep_held, spool.engine, self.key, placed.size, placed.sha256)
            except Exception:
                log.exception("call %s: the job that keeps %s later was not queued", self.call_sid, self.key)
        log.warning("call %s: %s (%.2f s) waits in the database for the media store", self.call_sid, self.key,
                    placed.kept_s)

    async def _put_whole(self, whole: bytes, placed: Placed) -> bool:
        spool = self.spool
        try:
            if spool.store is not None:
                stored = await asyncio.to_thread(spool.store.put_bytes, self.key, whole)
                ok = (stored.size, stored.sha256) == (placed.size, placed.sha256)
            else:
                return False  # no store but the failed spool folder itself
        except Exception as exc:
            log.warning("call %s: %s not stored in the media store: %s", self.call_sid, self.key, exc)
            return False
        if not ok:
            return False
        if spool.engine is not None and spool.db is not None:
            with contextlib.suppress(Exception):
                await spool.db(drop_parts, spool.engine, self.key)
        if self.remote:
            await asyncio.to_thread(delete_store_parts, spool.store, self.key, self.seq)
            with contextlib.suppress(OSError):  # (with the default store the spool file is the store's)
                self.path.unlink()
        return True


def held_parts_in(session: Any, key: str) -> list[tuple[int, int, bytes]]:
    rows = session.exec(select(AudioPart.seq, AudioPart.start, AudioPart.data)
                        .where(AudioPart.key == key).order_by(AudioPart.seq)).all()
    return [(int(seq), int(start), bytes(data)) for seq, start, data in rows]


def assemble(store: Any, engine: Engine | None, key: str, spool_file: Path | None = None,
             db_parts: list[tuple[int, int, bytes]] | None = None) -> bytes | None:
    """The recording under ``key`` made whole from what there is of it: the spool file (its
    header repaired: a crash leaves it behind), else the parts in the store (from the first
    byte, in order) or in the database (the spool's head as part -1, then parts from their
    ``start``). ``None`` when nothing of it is anywhere."""
    if spool_file is not None and spool_file.is_file() and spool_file.stat().st_size > HEADER_BYTES:
        raw = spool_file.read_bytes()
        return wav_bytes(raw[HEADER_BYTES:])
    pcm = bytearray()
    if store is not None and not getattr(store, "spool_is_store", True):
        seq = 0
        while True:
            try:
                pcm += store.get_bytes(part_key(key, seq))
            except Exception:
                break
            seq += 1
    if not pcm and (engine is not None or db_parts):
        rows = db_parts if db_parts is not None else held_parts(engine, key)
        copy = next((data for seq, _, data in rows if seq == HANDOVER_COPY_SEQ), None)
        if copy is not None:  # the whole turn, as the instance that heard it finished it
            return wav_bytes(copy)
        for seq, start, data in rows:
            if seq == -1 or start == len(pcm):
                pcm += data
            elif start > len(pcm):
                log.error("%s: audio %.2f–%.2f s is missing", key, len(pcm) / BYTES_PER_S, start / BYTES_PER_S)
                pcm += data
    if not pcm:
        return None
    return wav_bytes(bytes(pcm))


class KeepHeld:
    """``keep_held_audio``: the WAV assembled from its ``audio_part`` rows, checked against the
    sha256 the case was filed with, put to the store (sha256 confirmed), then the rows go.
    A store that still fails (the disk is still full) is tried again a minute later."""

    def __init__(self, engine: Engine, store: Any, db: Db):
        self.engine, self.store, self.db = engine, store, db

    async def handle(self, job: Job) -> None:
        p = job.payload or {}
        key = str(p["key"])
        whole = await self.db(_assemble_held, self.engine, key)
        if whole is None:
            log.info("%s: nothing held any more", key)
            return
        digest = hashlib.sha256(whole).hexdigest()
        if p.get("sha256") and digest != p["sha256"]:
            raise RuntimeError(f"{key}: the held parts make sha256 {digest}, the case was filed with {p['sha256']}")
        try:
            stored = await asyncio.to_thread(self.store.put_bytes, key, whole)
        except Exception as exc:
            raise RetryLater(timedelta(seconds=KEEP_HELD_RETRY_S), f"{key}: the media store does not take it: {exc}") \
                from None
        if stored.sha256 != digest:
            raise RetryLater(timedelta(seconds=KEEP_HELD_RETRY_S), f"{key}: stored with another sha256")
        await self.db(drop_parts, self.engine, key)

        await self.db(record_uploaded, self.engine, key, stored.size, stored.sha256)
        log.info("%s: %d bytes held in the database are in the media store now", key, len(whole))


def _assemble_held(engine: Engine, key: str) -> bytes | None:
    return assemble(None, engine, key)
