"""Grids in the console: the tree of the ladder with a search by name (``/grids``), a page per
grid (its chain of parents, map, workers, open cases, its web-chat QR code as a PNG and as an
A4 poster), and the page that places a case in a grid picked from that tree or search, with
the grid on its map and only the workers who may own a case there (``/cases/N/place``).

The QR code is the web chat's: the chat channel offers it to the console through
``services.extras["grid_qr"]`` (wired by the composition root), since the console does not
import a channel. Without the web chat mounted, the grid page says so."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

from aiohttp import web
from sqlmodel import select

from console import casework, db, grids, report_files
from console.access import Principal
from console.i18n import t
from console.views.common import lang, needs_page, principal, render
from console.web import PREFIX
from core.cases.models import Category
from core.people.models import Department
from core.places.models import Grid

GRID_QR = "grid_qr"  # the key in services.extras: async (code, language) -> (GridQr, poster html)


def _grid_or_none(session, value: str) -> Grid | None:  # noqa: ANN001
    return session.exec(select(Grid).where(Grid.code == value)).first() if value else None


def _check_sees(p: Principal, grid: Grid) -> None:
    allowed = grids.visible(p)
    if allowed is not None and grid.id not in allowed:
        raise web.HTTPForbidden()


def _listing(session, p: Principal, opened_code: str, words: str) -> dict:  # noqa: ANN001
    opened = _grid_or_none(session, opened_code)
    if opened is not None:
        _check_sees(p, opened)
    return {"tree": grids.tree(session, p, opened), "found": grids.search(session, p, words) if words else None,
            "opened": opened}


# ---- the grids list and a grid's page -------------------------------------------------------------


@needs_page("grids")
async def index(request: web.Request) -> web.Response:
    words = request.query.get("q", "").strip()[:64]
    listing = await db.run(request, _listing, principal(request), request.query.get("open", ""), words)
    return render(request, "grids.html", {**listing, "q": words, "base": f"{PREFIX}/grids", "pick": None})


def _grid_page(session, p: Principal, code: str) -> dict:  # noqa: ANN001
    grid = grids.by_code(session, code)
    _check_sees(p, grid)
    children = session.exec(select(Grid).where(Grid.parent_id == grid.id).order_by(Grid.code)).all()
    return {"grid": grid, "chain": grids.chain(session, grid), "children": children,
            "drawing": grids.drawing(session, grid), "staff": grids.staff_for(session, grid),
            "open_cases": grids.open_cases(session, p, grid)}


@needs_page("grids")
async def grid_page(request: web.Request) -> web.Response:
    page = await db.run(request, _grid_page, principal(request), request.match_info["code"])
    page["qr"] = request.config_dict[db.SERVICES].extras.get(GRID_QR) is not None
    return render(request, "grid.html", page)


def _sees(session, p: Principal, code: str) -> None:  # noqa: ANN001
    _check_sees(p, grids.by_code(session, code))


async def _qr(request: web.Request):  # noqa: ANN202
    """The grid's QR code and poster page from the web chat, for an account that sees the grid."""
    code = request.match_info["code"]
    await db.run(request, _sees, principal(request), code)
    maker = request.config_dict[db.SERVICES].extras.get(GRID_QR)
    if maker is None:
        raise web.HTTPNotFound(text=t(lang(request), "grids.no_web_chat"))
    return await maker(code, lang(request))


@needs_page("grids")
async def qr_png(request: web.Request) -> web.Response:
    code, _ = await _qr(request)
    disposition = "attachment" if request.query.get("download") else "inline"
    return web.Response(body=code.png, content_type="image/png", headers={
        "Content-Disposition": f"{disposition}; filename=\"{quote(code.code)}-qr.png\"",
        "Cache-Control": "private, no-store"})


@needs_page("grids")
async def poster_pdf(request: web.Request) -> web.Response:
    code, poster = await _qr(request)
    body = await asyncio.to_thread(report_files.pdf_of_html, poster)
    return web.Response(body=body, content_type="application/pdf", headers={
        "Content-Disposition": f"attachment; filename=\"{quote(code.code)}-poster.pdf\"",
        "Cache-Control": "private, no-store"})


# ---- placing a case ------------------------------------------------------------------------------


def _place(session, p: Principal, number: str, chosen_code: str, opened_code: str, words: str) -> dict:  # noqa: ANN001
    case = casework.find_case(session, p, number)
    offered = casework.offered(p, case)
    if not offered & {"locate", "dispatch"}:
        raise casework.Forbidden()
    chosen = _grid_or_none(session, chosen_code)
    current = session.get(Grid, case.grid_id) if case.grid_id else None
    listing = _listing(session, p, opened_code or (chosen.code if chosen else current.code if current else ""),
                       words)
    point = (case.longitude, case.latitude) if case.latitude is not None and case.longitude is not None else None
    return {
        **listing, "c": case, "offered": offered, "chosen": chosen, "current": current,
        "chosen_path": grids.chain(session, chosen) if chosen else [],
        "current_path": grids.chain(session, current) if current else [],
        "drawing": grids.drawing(session, chosen or current, point),
        "staff": grids.staff_for(session, chosen) if chosen else [],
        "categories": session.exec(select(Category).where(Category.active == True)  # noqa: E712
                                   .order_by(Category.code)).all() if case.category_id is None else [],
        "departments": session.exec(select(Department).order_by(Department.code)).all(),
    }


async def place(request: web.Request) -> web.Response:
    p = principal(request)
    number = request.match_info["number"]
    words = request.query.get("q", "").strip()[:64]
    try:
        page = await db.run(request, _place, p, number, request.query.get("grid", ""),
                            request.query.get("open", ""), words)
    except casework.Forbidden:
        raise web.HTTPForbidden() from None
    return render(request, "place.html", {**page, "q": words, "base": f"{PREFIX}/cases/{number}/place",
                                          "pick": f"{PREFIX}/cases/{number}/place"})


def setup(app: web.Application) -> None:
    app.router.add_get("/grids", index)
    app.router.add_get(r"/grids/{code:[0-9A-Za-z_-]{1,32}}", grid_page)
    app.router.add_get(r"/grids/{code:[0-9A-Za-z_-]{1,32}}/qr.png", qr_png)
    app.router.add_get(r"/grids/{code:[0-9A-Za-z_-]{1,32}}/poster.pdf", poster_pdf)
    app.router.add_get(r"/cases/{number:\d{1,16}}/place", place)
