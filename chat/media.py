"""Voice notes and photos: size checks, download through getFile, kept in the media store,
and transcription with our own speech recogniser (the same path as the hotline's
recordings).

Files are written to ``<data_dir>/chat/<yyyy>/<mm>/<kind>-<random>.<ext>`` (the spool) and
kept in the media store (``core.platform.media``) under that relative path, the key that the
``Attachment`` row records.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from telegram import Bot
from telegram.error import BadRequest, TelegramError

from chat.texts import MAX_DOWNLOAD
from core.platform import media_types
from core.platform.clock import to_local, utcnow
from core.platform.media import MediaMissing, MediaStore, fetched, keep
from core.platform.retry import transient
from speech_models.audio import AudioError

log = logging.getLogger(__name__)

MAX_VOICE_SECONDS = 5 * 60


def seconds(media_object: object) -> float:
    """A voice note's duration in seconds, as Telegram sent it (read from the raw data:
    PTB 22 is moving the attribute from int to timedelta)."""
    raw = media_object.to_dict().get("duration") if hasattr(media_object, "to_dict") else None
    if hasattr(raw, "total_seconds"):
        return raw.total_seconds()
    return float(raw or 0)


class TooBig(Exception):
    pass


class DownloadFailed(Exception):
    pass


class SpeechUnavailable(Exception):
    pass


class Unreadable(Exception):
    """The voice note could not be decoded (corrupt, not audio)."""


@dataclass
class Stored:
    path: str  # relative to the data directory
    size: int
    sha256: str
    mime_type: str  # read from the bytes (core.platform.media_types), never the type the sender declared
    waiting_in: str | None = None  # the store could not take it yet: it waits in this spool (core.platform.uploads)


def _write(root: Path, relative: str, data: bytes) -> str:
    """Keep the file durably; its type, as its bytes say."""
    target = root / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    return media_types.detect(target)


def _over_http(file_path: str | None) -> bool:
    return urlsplit(file_path or "").scheme in ("http", "https")


async def download(bot: Bot, file_id: str, declared_size: int | None, kind: str, ext: str,
                   data_dir: Path, *, local_mode: bool = False, store: MediaStore | None = None,
                   spool: str = "") -> Stored:
    """Fetch a file the resident sent and keep it. Raises ``TooBig`` before downloading
    anything over the Bot API's 20 MB, ``DownloadFailed`` when Telegram will not hand it out.
    A network problem is raised as it is (the update is handled again later).

    PTB reads a local file instead of downloading when the ``file_path`` that ``getFile``
    returns names a file that exists here; a Bot API server that is not ours to trust could
    make us store ``/etc/shadow`` as a photo. Only a local Bot API server (``local_mode``,
    ``GRIDLINE_TELEGRAM_LOCAL_MODE``) hands out local paths; otherwise a file comes over HTTP(S).

    The sender's ``mime_type`` is not asked for: the stored file's type is read from its bytes.
    It is written to the spool first, then kept in ``store`` (sha256 confirmed); when the
    bucket cannot be reached it waits in the spool (``waiting_in``) for a ``media_upload`` job."""
    if declared_size and declared_size > MAX_DOWNLOAD:
        raise TooBig()
    try:
        tg_file = await bot.get_file(file_id)
        if tg_file.file_size and tg_file.file_size > MAX_DOWNLOAD:
            raise TooBig()
        if not local_mode and not _over_http(tg_file.file_path):
            log.warning("the Bot API named a local file (%.80r) for %s %s: refused (GRIDLINE_TELEGRAM_LOCAL_MODE "
                        "is off)", tg_file.file_path, kind, file_id)
            raise DownloadFailed("the Bot API named a file on this machine, not a download")
        data = bytes(await tg_file.download_as_bytearray())
    except BadRequest as exc:
        if "too big" in str(exc).lower():
            raise TooBig() from exc
        raise DownloadFailed(str(exc)) from exc
    except TelegramError as exc:
        if transient(exc):
            raise
        raise DownloadFailed(str(exc)) from exc
    now = to_local(utcnow())  # the district's day, as case numbers use
    relative = f"chat/{now:%Y}/{now:%m}/{kind}-{now:%d%H%M%S}-{secrets.token_hex(6)}{ext}"
    mime_type = await asyncio.to_thread(_write, Path(data_dir), relative, data)
    stored = Stored(relative, len(data), hashlib.sha256(data).hexdigest(), mime_type)
    if store is not None:
        kept = await asyncio.to_thread(keep, store, relative)
        if kept.pending:
            stored.waiting_in = spool
    return stored


@dataclass
class Heard:
    text: str
    confidence: float
    transcript: list[dict]


async def transcribe(speech: object, path: Path | str, store: MediaStore | None = None) -> Heard:
    """Run the speech pool (or a bare transcriber, in a thread) on a stored voice note
    (``path``: a file, or with ``store`` a key of the media store)."""
    if speech is None:
        raise SpeechUnavailable()
    if store is not None:
        try:
            async with fetched(store, str(path)) as local:
                return await transcribe(speech, local)
        except MediaMissing as exc:
            raise Unreadable(str(exc)) from exc
    func = getattr(speech, "transcribe_file", None)
    if func is None:
        raise SpeechUnavailable()

    try:
        if inspect.iscoroutinefunction(func):
            result = await func(path)
        else:
            result = await asyncio.to_thread(func, path)
            if inspect.isawaitable(result):
                result = await result
    except AudioError as exc:
        raise Unreadable(str(exc)) from exc
    segments = [
        {"text": s.text, "start": s.start, "end": s.end, "confidence": round(s.confidence, 4)}
        for s in getattr(result, "segments", ())
    ]
    return Heard(result.text.strip(), float(result.confidence), segments)
