"""A case's recordings and photos, for accounts that may see the case, streamed from the
media store (``core.platform.media``: the data directory or a bucket) in chunks, never read whole.
Range requests are answered with 206 and their Content-Range (416 for a range past the
end), so the player can seek; each request is an audit row, since a recording is the
resident's own voice. A file still waiting in this instance's spool for the bucket is
served from the spool; a missing object is a 404 that says so ("录音文件缺失").

A resident's file is never trusted, even when its row is older than the type detection
(``core.platform.media_types``): it is served with the type re-checked against the allow-list (so
a row saying ``text/html`` goes out as a download), ``nosniff`` (a browser may not take
it for a script or a page), and a CSP of its own whose ``sandbox`` gives whatever opens it
an opaque origin with no scripts. Anything that is not audio a browser plays or an image
it shows is ``Content-Disposition: attachment``."""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict

from aiohttp import web
from sqlmodel import select

from console import casework, db
from console.access import hides_voice
from console.i18n import t
from console.views.common import lang, principal, who
from core.cases.models import Attachment
from core.people import audit
from core.platform import media_types, uploads
from core.platform.media import LocalStore, MediaMissing, MediaStore, MediaUnavailable

# Replaces the console's page CSP (the guard middleware only sets one where none is set).
FILE_CSP = "default-src 'none'; media-src 'self'; img-src 'self'; sandbox"


def file_headers(number: str, attachment_id: int, recorded_type: str | None) -> dict[str, str]:
    """The headers every resident's file goes out with."""
    mime = media_types.servable(recorded_type)
    headers = {
        "Content-Type": mime,
        "Cache-Control": "private, no-store",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": FILE_CSP,
        "Cross-Origin-Resource-Policy": "same-origin",
    }
    if not media_types.inline(mime):
        # a name of our own making (digits and a known extension): nothing of the sender's
        headers["Content-Disposition"] = (f'attachment; filename="case-{number}-file-{attachment_id}'
                                          f'{media_types.extension(mime)}"')
    return headers


def _locate(session, p, number: str, attachment_id: int, who_: tuple[str, str]):  # noqa: ANN001, ANN202
    case = casework.find_case(session, p, number)
    if case.shredded_at is not None:  # its files are gone; say "not found", never serve a leftover
        return None
    att = session.exec(select(Attachment).where(Attachment.id == attachment_id,
                                                Attachment.case_id == case.id)).first()
    if att is None:
        return None
    actor, remote = who_
    if hides_voice(p, case) and (att.kind in VOICES or media_types.servable(att.mime_type) in media_types.AUDIO):
        # A confidential case's voice, asked for by a role that may not hear it: refused, and
        # the attempt is on the record (committed: a refusal is no error of the transaction).
        audit.record(session, actor=actor, action="case.file_refused", target_type="case", target_id=case.number,
                     detail={"attachment": att.id, "kind": att.kind, "confidential": True}, remote=remote)
        return REFUSED
    detail = {"attachment": att.id, "kind": att.kind}
    if case.confidential:
        detail["confidential"] = True
    audit.record(session, actor=actor, action="case.file", target_type="case", target_id=case.number,
                 detail=detail, remote=remote)
    return case.number, att.path, att.mime_type, att.upload_pending, att.kind


REFUSED = "refused"


RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def byte_range(header: str | None, size: int) -> tuple[int, int] | None | bool:
    """The one range ``header`` asks for as (first, last) inclusive; ``None``: the whole
    file (no header, or one we do not serve in part: several ranges, another unit, bad
    syntax: RFC 9110 lets a server ignore those); ``False``: unsatisfiable (416)."""
    if not header:
        return None
    match = RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        count = int(last)
        if count == 0 or size == 0:
            return False
        return max(size - count, 0), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if last and int(last) < start:
        return None  # invalid: ignored
    if start >= size:
        return False
    return start, end


def source_of(store: MediaStore, key: str, pending: bool) -> MediaStore:
    """Where the bytes are read from: the spool while the file waits there, else the store."""
    if pending and not store.spool_is_store and store.spool_path(key).is_file():
        return LocalStore(store.spool_root)
    return store


VOICES = ("recording", "voice", "survey_comment")


def missing_text(request: web.Request, kind: str) -> str:
    return t(lang(request), "case.file_missing" if kind in VOICES else "case.file_missing_other")


class KnownMissing:
    """Keys a download found missing in the store, remembered by this console (bounded, for
    ``forget_after`` seconds) so the case page can say "录音文件缺失" without asking the store
    about every file at every view. A later download that finds the object forgets it, and
    after ``forget_after`` the page offers the player again (the object may be back)."""

    def __init__(self, limit: int = 10_000, forget_after: float = 300.0):
        self.limit = limit
        self.forget_after = forget_after
        self._keys: OrderedDict[str, float] = OrderedDict()

    def add(self, key: str) -> None:
        self._keys[key] = time.monotonic()
        self._keys.move_to_end(key)
        while len(self._keys) > self.limit:
            self._keys.popitem(last=False)

    def discard(self, key: str) -> None:
        self._keys.pop(key, None)

    def __contains__(self, key: object) -> bool:
        seen = self._keys.get(key)  # type: ignore[arg-type]
        if seen is None:
            return False
        if time.monotonic() - seen > self.forget_after:
            self._keys.pop(key, None)  # type: ignore[arg-type]
            return False
        return True


MISSING = web.AppKey("known_missing_files", KnownMissing)


def _failed(session, keys: list[str]) -> dict[str, str]:  # noqa: ANN001
    return uploads.failed_keys(session, keys)


async def file_states(request: web.Request, files: list) -> dict[int, str]:
    """attachment id → "pending" (waiting in a spool for the bucket), "failed" (its upload
    was given up: kept in a spool) or "missing" (a download found no object), for the case
    page. From what the database and this process know: a page view costs no round trip
    to the store per file (the sha256 was confirmed when each was kept; a missing object
    is found when it is downloaded, and listed by ``gridline media check``)."""
    pending = [f.path for f in files if f.upload_pending]
    failed = await db.run(request, _failed, pending) if pending else {}
    states: dict[int, str] = {}
    for f in files:
        if f.upload_pending:
            states[f.id] = "failed" if f.path in failed else "pending"
        elif f.path in request.config_dict[MISSING]:
            states[f.id] = "missing"
    return states


async def serve_file(request: web.Request) -> web.StreamResponse:
    p = principal(request)
    attachment_id = int(request.match_info["attachment"])
    try:
        found = await db.run(request, _locate, p, request.match_info["number"], attachment_id, who(request))
    except casework.Forbidden:
        raise web.HTTPForbidden() from None
    if found is None:
        raise web.HTTPNotFound()
    if found == REFUSED:
        return web.Response(status=403, text=t(lang(request), "case.voice_refused"), content_type="text/plain",
                            charset="utf-8", headers={"X-Content-Type-Options": "nosniff"})
    number, key, recorded_type, pending, kind = found
    source = source_of(request.config_dict[db.SERVICES].media, key, pending)
    try:
        size = await asyncio.to_thread(source.stat, key)
    except (MediaMissing, OSError):
        size = None
    except MediaUnavailable:
        return web.Response(status=503, text=t(lang(request), "case.file_unreachable"), headers={"Retry-After": "5"})
    if size is None:
        request.config_dict[MISSING].add(key)
        return web.Response(status=404, text=missing_text(request, kind), content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})
    request.config_dict[MISSING].discard(key)
    headers = file_headers(number, attachment_id, recorded_type)
    headers["Accept-Ranges"] = "bytes"
    wanted = byte_range(request.headers.get("Range"), size)
    if wanted is False:
        headers["Content-Range"] = f"bytes */{size}"
        return web.Response(status=416, headers=headers)
    start, end = wanted if wanted else (0, size - 1)
    if wanted:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    response = web.StreamResponse(status=206 if wanted else 200, headers=headers)
    response.content_length = end - start + 1 if size else 0
    if request.method == "HEAD" or size == 0:
        await response.prepare(request)
        return response
    try:
        chunks = await asyncio.to_thread(source.open_range, key, start, end + 1)
    except MediaMissing:  # gone between the stat and now
        request.config_dict[MISSING].add(key)
        return web.Response(status=404, text=missing_text(request, kind), content_type="text/plain", charset="utf-8")
    except MediaUnavailable:
        return web.Response(status=503, text=t(lang(request), "case.file_unreachable"), headers={"Retry-After": "5"})
    await response.prepare(request)
    try:
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            await response.write(chunk)
    finally:  # a player that seeks drops the connection: the object's stream is closed all the same
        close = getattr(chunks, "close", None)
        if close is not None:
            await asyncio.to_thread(close)
    await response.write_eof()
    return response


def setup(app: web.Application) -> None:
    app[MISSING] = KnownMissing()
    app.router.add_get(r"/cases/{number:\d{1,16}}/files/{attachment:\d{1,12}}", serve_file)
