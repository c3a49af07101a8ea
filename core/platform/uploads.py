"""Files that wait in a spool for the media store, and the job that takes them there.

When the bucket cannot be reached as a file is finished (``core.platform.media.keep`` answers
``pending``), the attachment is written all the same, with ``upload_pending``, and a
``media_upload`` job names the key and the spool it waits in (this instance: host and data
directory). The job uploads it, confirms the sha256 by reading it back, clears
``upload_pending`` (with an audit row), and only then deletes the spool copy. While the
bucket stays away the job waits ``media.upload_retry_seconds`` and tries again, as long as
it takes: a waiting file is never given up. An instance that claims the job but does not
hold the spool puts it back for the one that does.
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

from sqlalchemy import Engine, func
from sqlmodel import Session, select

from core.cases.models import Attachment
from core.people import audit
from core.platform import jobs
from core.platform.db import session_scope
from core.platform.media import MediaStore, MediaUnavailable, keep, sha256_of_file
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


def mark_waiting(session: Session, attachment: Attachment, spool: str) -> None:
    """``attachment``'s file could not be kept yet: flag it and queue its upload (in the
    caller's transaction, with the row)."""
    attachment.upload_pending = True
    session.add(attachment)
    digest = hashlib.sha256(f"{attachment.path}|{attachment.sha256}".encode()).hexdigest()[:40]
    jobs.enqueue(session, MEDIA_UPLOAD_JOB, {"key": attachment.path, "spool": spool},
                 dedupe_key=f"media_upload:{digest}", max_attempts=1000)


def pending_count(session: Session) -> int:
    """Attachments whose file still waits in a spool (/readyz, the console)."""
    return int(session.exec(select(func.count()).select_from(Attachment)
                            .where(Attachment.upload_pending == True)).one())  # noqa: E712


def _waiting_rows(session: Session, key: str) -> list[Attachment]:
    return list(session.exec(select(Attachment).where(Attachment.path == key,
                                                      Attachment.upload_pending == True)).all())  # noqa: E712


def record_uploaded(engine: Engine, key: str, size: int, sha256: str, *, outcome: str = "media_uploaded") -> int:
    """The file of ``key`` is in the store with this size and sha256: its rows wait no more."""
    with session_scope(engine) as session:
        rows = _waiting_rows(session, key)
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
        return "uploaded"
    if spool != here:
        raise NotHere(f"{key} waits in {spool}")
    if store.stat(key) is not None:
        stored = store.sha256(key)
        if not expected or stored.sha256 == expected:
            record_uploaded(engine, key, stored.size, stored.sha256)
            return "already"
    log.error("media upload %s: not in the spool of %s nor in %s: the file is lost", key, here, store.description)
    record_uploaded(engine, key, 0, expected or "", outcome="media_lost")
    return "lost"


def upload_handler(engine: Engine, store: MediaStore, here: str, retry: timedelta,
                   ) -> Callable[[object], Awaitable[None]]:
    """The ``media_upload`` handler for a job runner (``gridline.app`` registers it)."""

    async def handle(job) -> None:  # noqa: ANN001 (core.platform.models.Job)
        key = job.payload["key"]
        try:
            outcome = await asyncio.to_thread(upload_one, engine, store, key, job.payload.get("spool", ""), here)
        except MediaUnavailable as exc:
            log.warning("media upload %s waits: %s", key, exc)
            raise RetryLater(retry, str(exc)) from None
        except NotHere as exc:
            raise RetryLater(retry, str(exc)) from None
        log.info("media upload %s: %s", key, outcome)

    return handle


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
