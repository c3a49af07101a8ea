"""A case's recordings and photos, for accounts that may see the case. Range requests are
answered with 206 (aiohttp's FileResponse), so the player can seek; each request is an
audit row, since a recording is the resident's own voice."""

from __future__ import annotations

from aiohttp import web
from sqlmodel import select

from console import casework, db
from console.views.common import principal, who
from core import audit
from core.models import Attachment
from core.storage import resolve


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
    return att.path, att.mime_type


async def serve_file(request: web.Request) -> web.StreamResponse:
    p = principal(request)
    try:
        found = await db.run(request, _locate, p, request.match_info["number"],
                             int(request.match_info["attachment"]), who(request))
    except casework.Forbidden:
        raise web.HTTPForbidden() from None
    if found is None:
        raise web.HTTPNotFound()
    stored, mime = found
    path = resolve(stored, request.config_dict[db.DATA_DIR])
    if not path.is_file():
        raise web.HTTPNotFound(text="the file is missing from the data directory")
    headers = {"Cache-Control": "private, no-store"}
    if mime:
        headers["Content-Type"] = mime
    return web.FileResponse(path, headers=headers)


def setup(app: web.Application) -> None:
    app.router.add_get(r"/cases/{number:\d{1,16}}/files/{attachment:\d{1,12}}", serve_file)
