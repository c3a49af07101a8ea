"""Files that wait in a spool for the media store, and the job that takes them there.

When the bucket cannot be reached as a file is finished (``core.platform.media.keep`` answers
``pending``), or a file is filed before it is uploaded (a call's recordings: the case row
is not held locked while the bucket answers; ``spooled_file``, then ``upload_after_commit``),
the attachment is written with ``upload_pending``, and a ``media_upload`` job names the key
and the spool it waits in (this instance: host and data directory). The upload (the job's,
or the one right after the commit) confirms the sha256 by reading the object back, clears
``upload_pending`` (with an audit row), and only then deletes the spool copy, and the
``<key>.parts/`` objects and database parts the live upload left of it.

While the bucket stays away the job tries again after ``media.upload_retry_seconds``, the
wait doubling up to ``media.upload_retry_longest_seconds``; after ``media.upload_attempts``
tries it gives up: the job is marked failed (with an audit row), and the attachment stays
``upload_pending`` with its file kept in the spool, shown as failed to upload on the case
page, in ``/readyz`` and by ``gridline media check``. The local file is never deleted. An
instance that claims the job but does not hold the spool puts it back for the one that does
(and that counts as a try: a spool whose machine is gone is given up on the same way).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine, delete, func, update
from sqlmodel import Session, select

from core.cases.models import Attachment
from core.people import audit
from core.platform import jobs
from core.platform.db import session_scope
from core.platform.media import MediaStore, MediaUnavailable, keep, sha256_of_file
from core.platform.models import AudioPart, Job, JobStatus
from core.platform.rules import load_rules
from core.platform.runner import RetryLater

log = logging.getLogger(__name__)

MEDIA_UPLOAD_JOB = jobs.declare("media_upload", "core/platform/uploads.py (gridline/app.py): a spooled file reaches the store")


@dataclass(frozen=True)
class FileRef:
    """A file kept in the media store (``core.platform.media.keep``), to become an ``Attachment``."""

    kind: str  # recording, voice, photo
    path: str  # its key: relative to the data directory (core.platform.storage.stored_path)
    mime_type: str | None = None  # read from the bytes (core.platform.media_types.detect), never a sender's word
    size: int | None = None
    sha256: str | None = None
    # The store could not take it yet: the spool it waits in (core.platform.uploads.spool_name).
    waiting_in: str | None = None


def spool_name(data_dir: str | Path) -> str:
    """Which spool a waiting file lies in: this machine and its data directory (two
    instances on one machine have a data directory each)."""
    return f"{socket.gethostname()}:{Path(data_dir).resolve()}"[:200]


@dataclass(frozen=True)
class UploadPolicy:
    """How the ``media_upload`` job tries (rules ``[media]``)."""

    first: timedelta
    longest: timedelta
    attempts: int

    @classmethod
    def from_rules(cls, rules: dict | None = None) -> UploadPolicy:
        media = (rules or load_rules())["media"]
        return cls(first=timedelta(seconds=float(media["upload_retry_seconds"])),
                   longest=timedelta(seconds=float(media["upload_retry_longest_seconds"])),
                   attempts=int(media["upload_attempts"]))

    def wait_after(self, attempts: int) -> timedelta:
        """The wait after the ``attempts``-th try failed: doubling from ``first``."""
        return min(self.first * 2 ** min(max(attempts - 1, 0), 30), self.longest)


def _job_key(path: str, sha256: str | None) -> str:
    digest = hashlib.sha256(f"{path}|{sha256}".encode()).hexdigest()[:40]
    return f"media_upload:{digest}"


def mark_waiting(session: Session, attachment: Attachment, spool: str) -> None:
    """``attachment``'s file is not in the store yet: flag it and queue its upload (in the
    caller's transaction, with the row)."""
    attachment.upload_pending = True
    session.add(attachment)
    jobs.enqueue(session, MEDIA_UPLOAD_JOB, {"key": attachment.path, "spool": spool},
                 dedupe_key=_job_key(attachment.path, attachment.sha256),
                 max_attempts=UploadPolicy.from_rules().attempts)


def failed_keys(session: Session, keys: list[str] | None = None) -> dict[str, str]:
    """Keys whose upload was given up (their ``media_upload`` job failed) → the spool the
    file is kept in. Only keys still waiting count (a file uploaded by hand afterwards, or
    by ``gridline media migrate``, is no longer failed)."""
    rows = session.exec(select(Job.payload).where(Job.kind == MEDIA_UPLOAD_JOB,
                                                  Job.status == JobStatus.failed)).all()
    spools = {str(p.get("key")): str(p.get("spool") or "") for p in rows if p and p.get("key")}
    if keys is not None:
        spools = {k: v for k, v in spools.items() if k in set(keys)}
    if not spools:
        return {}
    waiting = set(session.exec(select(Attachment.path).where(Attachment.path.in_(sorted(spools)),
                                                             Attachment.upload_pending == True)).all())  # noqa: E712
    return {k: v for k, v in spools.items() if k in waiting}


def failed_count(session: Session) -> int:
    """Attachments whose upload was given up (/readyz)."""
    return len(failed_keys(session))


def pending_count(session: Session) -> int:
    """Attachments whose file still waits in a spool (/readyz, the console)."""
    return int(session.exec(select(func.count()).select_from(Attachment)
                            .where(Attachment.upload_pending == True)).one())  # noqa: E712


def _waiting_rows(session: Session, key: str) -> list[Attachment]:
    return list(session.exec(select(Attachment).where(Attachment.path == key,
                                                      Attachment.upload_pending == True)).all())  # noqa: E712


def record_uploaded(engine: Engine, key: str, size: int, sha256: str, *, outcome: str = "media_uploaded") -> int:
    """The file of ``key`` is in the store with this size and sha256: its rows wait no more
    (and a queued job for it has nothing left to do)."""
    with session_scope(engine) as session:
        rows = _waiting_rows(session, key)
        queued = [_job_key(row.path, row.sha256) for row in rows]
        if queued:
            session.execute(update(Job).where(Job.dedupe_key.in_(queued), Job.status == JobStatus.queued)
                            .values(status=JobStatus.done).execution_options(synchronize_session=False))
        for row in rows:
            row.upload_pending = False
            if row.size is None:
                row.size = size
            if row.sha256 is None:
                row.sha256 = sha256
            session.add(row)
            audit.record(session, actor="system", action=outcome, target_type="attachment", target_id=row.id,
                         detail={"key": key, "size": size, "sha256": sha256, "case_id": row.case_id})
        return len(rows)


def expected_sha256(engine: Engine, key: str) -> str | None:
    """The sha256 the waiting rows of ``key`` recorded (``None``: no row waits for it)."""
    with session_scope(engine) as session:
        rows = _waiting_rows(session, key)
        if not rows:
            return None
        return next((r.sha256 for r in rows if r.sha256), "")


class NotHere(Exception):
    """The file waits in another instance's spool."""


def upload_one(engine: Engine, store: MediaStore, key: str, spool: str, here: str) -> str:
    """Take one waiting file to the store (blocking; the job's handler runs it in a thread).
    Returns what happened: ``uploaded``, ``already`` (a crash came between the upload and
    the row), ``dropped`` (no row waits for it: shredded meanwhile; the spool copy goes),
    ``lost`` (neither the spool nor the store has it). Raises ``MediaUnavailable`` (try
    again later) or ``NotHere``."""
    spooled = store.spool_path(key)
    expected = expected_sha256(engine, key)
    if expected is None:
        if spooled.exists() and not store.spool_is_store:
            spooled.unlink(missing_ok=True)
        return "dropped"
    if spooled.exists():
        size, digest = sha256_of_file(spooled)
        if expected and digest != expected:
            log.error("media upload %s: the spool copy's sha256 %s is not the recorded %s; uploading it anyway",
                      key, digest, expected)
        kept = keep(store, key)  # deletes the spool copy only after the read-back matched
        if kept.pending:
            raise MediaUnavailable(f"{store.description} still unreachable")
        record_uploaded(engine, key, kept.object.size, kept.object.sha256)
        drop_parts(engine, store, key)
        return "uploaded"
    if spool != here:
        raise NotHere(f"{key} waits in {spool}")
    if store.stat(key) is not None:
        stored = store.sha256(key)
        if not expected or stored.sha256 == expected:
            record_uploaded(engine, key, stored.size, stored.sha256)
            drop_parts(engine, store, key)
            return "already"
    log.error("media upload %s: not in the spool of %s nor in %s: the file is lost", key, here, store.description)
    record_uploaded(engine, key, 0, expected or "", outcome="media_lost")
    return "lost"


def part_key(key: str, seq: int) -> str:
    """The ``seq``-th part of a recording sent while the call went on (``ivr.spool``)."""
    return f"{key}.parts/{seq:05d}"


def delete_store_parts(store: MediaStore | None, key: str, count: int | None = None) -> None:
    """Remove ``<key>.parts/…`` from the store (``count`` of them, or as many as there are)."""
    if store is None or getattr(store, "spool_is_store", True):
        return
    seq = 0
    while count is None or seq < count:
        name = part_key(key, seq)
        try:
            if count is None and store.stat(name) is None:
                return
            store.delete(name)
        except Exception as exc:  # left for `gridline media check`; the whole file is safe
            log.warning("part %s not deleted: %s", name, exc)
            if count is None:
                return
        seq += 1


def drop_parts(engine: Engine, store: MediaStore, key: str) -> None:
    """The whole file of ``key`` is confirmed in the store: the parts the live upload left
    of it (in the bucket after an outage mid-call, or in the database) are no longer needed."""
    delete_store_parts(store, key)
    with session_scope(engine) as session:
        session.execute(delete(AudioPart).where(AudioPart.key == key))


class GaveUp(Exception):
    """The upload was tried ``media.upload_attempts`` times: the job fails (the file stays)."""


def count_try(engine: Engine, job_id: int) -> int:
    """One more failed try of an upload job; returns how many there were. Counted in the
    payload: a job put back for later (``RetryLater``) does not count a claim attempt."""
    with session_scope(engine) as session:
        job = session.get(Job, job_id)
        tries = int((job.payload or {}).get("tries", 0)) + 1
        job.payload = {**(job.payload or {}), "tries": tries}
        session.add(job)
        return tries


def give_up(engine: Engine, job_id: int, key: str, spool: str, why: str, tries: int) -> int:
    """Record that ``key``'s upload is given up: an audit row per waiting attachment, and
    the job at its last attempt (so the failure that follows is final). The rows stay
    ``upload_pending`` and the file stays in ``spool``."""
    with session_scope(engine) as session:
        job = session.get(Job, job_id)
        job.max_attempts = job.attempts
        session.add(job)
        rows = _waiting_rows(session, key)
        for row in rows:
            audit.record(session, actor="system", action="media_upload_failed", target_type="attachment",
                         target_id=row.id, detail={"key": key, "spool": spool, "tries": tries,
                                                   "why": why[:500], "case_id": row.case_id})
        return len(rows)


def upload_handler(engine: Engine, store: MediaStore, here: str, policy: UploadPolicy | timedelta,
                   ) -> Callable[[object], Awaitable[None]]:
    """The ``media_upload`` handler for a job runner (``gridline.app`` registers it).
    ``policy``: the retry waits and the bound (a plain ``timedelta``: that wait, and the
    rules' bound)."""

    if isinstance(policy, timedelta):
        policy = UploadPolicy(first=policy, longest=policy, attempts=UploadPolicy.from_rules().attempts)

    async def handle(job) -> None:  # noqa: ANN001 (core.platform.models.Job)
        key = job.payload["key"]
        spool = job.payload.get("spool", "")
        try:
            outcome = await asyncio.to_thread(upload_one, engine, store, key, spool, here)
        except (MediaUnavailable, NotHere) as exc:
            tries = await asyncio.to_thread(count_try, engine, job.id)
            if tries >= policy.attempts:
                await asyncio.to_thread(give_up, engine, job.id, key, spool, str(exc), tries)
                log.error("media upload %s given up after %d tries (%s); the file stays in %s", key, tries,
                          exc, spool or "the spool")
                raise GaveUp(f"given up after {tries} tries: {exc}") from None
            if isinstance(exc, MediaUnavailable):
                log.warning("media upload %s waits (try %d of %d): %s", key, tries, policy.attempts, exc)
            raise RetryLater(policy.wait_after(tries), str(exc)) from None
        log.info("media upload %s: %s", key, outcome)

    return handle


def upload_after_commit(engine: Engine, store: MediaStore, keys: list[str], here: str) -> dict[str, str]:
    """Upload files that were just filed as waiting in this instance's spool (the case's
    transaction is committed: no row is locked while the bucket answers). What cannot be
    uploaded now is left to its ``media_upload`` job. Blocking. Returns key → outcome."""
    done: dict[str, str] = {}
    for key in keys:
        try:
            done[key] = upload_one(engine, store, key, here, here)
        except (MediaUnavailable, NotHere) as exc:
            log.warning("%s waits in the spool for the media store: %s", key, exc)
            done[key] = "waiting"
        except Exception:
            log.exception("%s: upload after filing failed; its media_upload job tries again", key)
            done[key] = "waiting"
    return done


def spooled_file(store: MediaStore, spool: str, kind: str, key: str, mime_type: str | None, *,
                 min_bytes: int = 1) -> FileRef | None:
    """A finished spool file as the ``FileRef`` that files it *before* it is uploaded: its
    size and sha256 read from the spool, ``waiting_in`` this spool (the upload comes after
    the commit, ``upload_after_commit``, or by its job). With the default store the spool
    is the store: nothing waits. A file no longer in the spool is as ``kept_file`` finds it."""
    spooled = store.spool_path(key)
    if spooled.is_file():
        if spooled.stat().st_size < min_bytes:
            return None
        size, digest = sha256_of_file(spooled)
        return FileRef(kind=kind, path=key, mime_type=mime_type, size=size, sha256=digest,
                       waiting_in=None if store.spool_is_store else spool)
    return kept_file(store, spool, kind, key, mime_type, min_bytes=min_bytes)


def kept_file(store: MediaStore, spool: str, kind: str, key: str, mime_type: str | None, *,
              min_bytes: int = 1) -> FileRef | None:
    """A finished spool file kept in the store, as the ``FileRef`` that attaches it: its
    size and sha256, and ``waiting_in`` when the store could not take it yet. ``None``
    when there is no such file (or it is under ``min_bytes``: a WAV header and no audio).

    Filing may run again (a retried webhook, a transaction that failed after the upload):
    a file no longer in the spool is then taken from the store as it was kept."""
    spooled = store.spool_path(key)
    if spooled.is_file():
        if spooled.stat().st_size < min_bytes:
            return None
        kept = keep(store, key)
        return FileRef(kind=kind, path=key, mime_type=mime_type, size=kept.object.size, sha256=kept.object.sha256,
                       waiting_in=spool if kept.pending else None)
    if store.spool_is_store:
        return None
    try:
        size = store.stat(key)
        if size is None or size < min_bytes:
            return None
        stored = store.sha256(key)
    except MediaUnavailable:  # it was kept (the spool copy goes only then); its numbers later
        log.warning("%s: in the store, which cannot be reached now: attached without size", key)
        return FileRef(kind=kind, path=key, mime_type=mime_type)
    return FileRef(kind=kind, path=key, mime_type=mime_type, size=stored.size, sha256=stored.sha256)
