"""A case's recordings and photos, for accounts that may see the case. Range requests are
answered with 206 (aiohttp's FileResponse), so the player can seek; each request is an
audit row, since a recording is the resident's own voice.

A resident's file is never trusted, even when its row is older than the type detection
(``core.media_types``): it is served with the type re-checked against the allow-list (so
a row saying ``text/html`` goes out as a download), ``nosniff`` (a browser may not take
it for a script or a page), and a CSP of its own whose ``sandbox`` gives whatever opens it
an opaque origin with no scripts. Anything that is not audio a browser plays or an image
it shows is ``Content-Disposition: attachment``."""

from __future__ import annotations

from aiohttp import web
from sqlmodel import select

from console import casework, db
from console.views.common import principal, who
from core import audit, media_types
from core.models import Attachment
from core.storage import resolve

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
    audit.record(session, actor=actor, action="case.file", target_type="case", target_id=case.number,
                 detail={"attachment": att.id, "kind": att.kind}, remote=remote)
    return case.number, att.path, att.mime_type


async def serve_file(request: web.Request) -> web.StreamResponse:
    p = principal(request)
    attachment_id = int(request.match_info["attachment"])
    try:
        found = await db.run(request, _locate, p, request.match_info["number"], attachment_id, who(request))
    except casework.Forbidden:
        raise web.HTTPForbidden() from None
    if found is None:
        raise web.HTTPNotFound()
    number, stored, recorded_type = found
    path = resolve(stored, request.config_dict[db.DATA_DIR])
    if not path.is_file():
        raise web.HTTPNotFound(text="the file is missing from the data directory")
    return web.FileResponse(path, headers=file_headers(number, attachment_id, recorded_type))


def setup(app: web.Application) -> None:
    app.router.add_get(r"/cases/{number:\d{1,16}}/files/{attachment:\d{1,12}}", serve_file)
