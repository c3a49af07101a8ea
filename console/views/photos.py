"""Photos added on the case page: a worker on a phone takes one with the camera (or picks
some from the album), the server keeps each as an upright JPEG without its metadata, in the
media store, attached to the case by the core's ``attach`` (one event, one audit row).

The form is multipart and may be megabytes, beyond the console's small form limit; so this
view reads the parts itself, with its own limits, and checks the CSRF token, which the form
sends first, itself (``checks_csrf_itself``)."""

from __future__ import annotations

import asyncio
import hmac
import os
import secrets

from aiohttp import web

from console import casework, db
from console.access import console_rules
from console.i18n import t
from console.views.cases import show
from console.views.common import lang, principal, who
from console.web import CSRF_TOKEN, PREFIX, error_page
from core import actions
from core.people import audit
from core.platform.clock import to_local, utcnow
from core.platform.images import resize_photo
from core.platform.media import MediaStore
from core.platform.uploads import FileRef, kept_file


class Refused(Exception):
    def __init__(self, status: int, key: str, **words: object) -> None:
        super().__init__(key)
        self.status, self.key, self.words = status, key, words


async def _read_form(request: web.Request, rules: dict) -> tuple[str, list[bytes]]:
    """(note, photos' bytes) from the multipart body; the CSRF token must come first."""
    limit = int(float(rules["photo_upload_mb"]) * 1024 * 1024)
    at_once = int(rules["photos_at_once"])
    try:
        reader = await request.multipart()
        first = await reader.next()
        sent = (await first.text()) if first is not None and first.name == "_csrf" else ""
    except (ValueError, AssertionError, KeyError):
        raise Refused(400, "photos.bad_form") from None
    expected = request.get(CSRF_TOKEN, "")
    if not expected or not hmac.compare_digest(expected, sent.strip()):
        raise Refused(403, "errors.csrf")
    note, photos = "", []
    while (part := await reader.next()) is not None:
        if part.name == "note" and not part.filename:
            note = (await part.text()).strip()
            continue
        if part.name != "photo" or not part.filename:
            await part.release()
            continue
        chunks, size = [], 0
        while chunk := await part.read_chunk(256 * 1024):
            size += len(chunk)
            if size > limit:
                raise Refused(413, "photos.too_big", mb=rules["photo_upload_mb"])
            chunks.append(chunk)
        if size:
            photos.append(b"".join(chunks))
        if len(photos) > at_once:
            raise Refused(413, "photos.too_many", n=at_once)
    if not photos:
        raise Refused(400, "photos.none")
    return note, photos


def _write_spool(store: MediaStore, key: str, data: bytes) -> None:
    target = store.spool_path(key)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)


def _keep_photo(store: MediaStore, spool: str, jpeg: bytes) -> FileRef:
    now = to_local(utcnow())  # the district's day, as case numbers use
    key = f"console/{now:%Y}/{now:%m}/photo-{now:%d%H%M%S}-{secrets.token_hex(6)}.jpg"
    _write_spool(store, key, jpeg)
    ref = kept_file(store, spool, "photo", key, "image/jpeg")
    assert ref is not None  # just written, never empty
    return ref


def _check(session, principal, number: str) -> None:  # noqa: ANN001
    if not principal.may("annotate"):
        raise casework.Forbidden()
    casework.find_case(session, principal, number)


def _attach(session, principal, number: str, refs: list[FileRef], note: str,  # noqa: ANN001
            who_: tuple[str, str]) -> None:
    _check(session, principal, number)
    case = casework.find_case(session, principal, number)
    case = actions.get_case(session, case.id, lock=True)
    linked = actions.attach(session, case, actor=principal.actor, files=refs, note=note or None)
    actor, remote = who_
    audit.record(session, actor=actor, action="case.photos", target_type="case", target_id=case.number,
                 detail={"photos": len(linked), "note": note[:200]}, remote=remote)


async def add_photos(request: web.Request) -> web.Response:
    p = principal(request)
    number = request.match_info["number"]
    language = lang(request)
    try:
        await db.run(request, _check, p, number)
    except casework.Forbidden:
        raise web.HTTPForbidden() from None
    rules = console_rules()
    try:
        note, photos = await _read_form(request, rules)
        jpegs = []
        for data in photos:
            try:
                jpegs.append(await asyncio.to_thread(resize_photo, data, int(rules["photo_side"])))
            except ValueError:
                raise Refused(415, "photos.not_photo") from None
    except Refused as refused:
        if refused.key == "errors.csrf":
            return error_page(request, 403, t(language, "errors.csrf"))
        return await show(request, error=t(language, refused.key, **refused.words), status=refused.status)
    services = request.config_dict[db.SERVICES]
    store: MediaStore = services.media
    refs = [await asyncio.to_thread(_keep_photo, store, services.spool, jpeg) for jpeg in jpegs]
    # each is in the store now, or waits in this spool for its upload job (the bucket was away)
    await db.run(request, _attach, p, number, refs, note, who(request))
    raise web.HTTPSeeOther(f"{PREFIX}/cases/{number}?done=photos")


add_photos.checks_csrf_itself = True  # type: ignore[attr-defined]


def setup(app: web.Application) -> None:
    app.router.add_post(r"/cases/{number:\d{1,16}}/photos", add_photos)

