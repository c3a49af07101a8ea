"""Search by case number, phone (roles that see phones), text, grid, category, status,
channel and date range; newest first, keyset pages."""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web
from sqlmodel import select

from console import db, queries
from console.views.common import (
    audit_view,
    decode_cursor,
    encode_cursor,
    needs_page,
    principal,
    render,
    who,
)
from console.views.sla import colours
from core.models import CaseStatus, Category, Channel


def _run(session, p, filters, after, who_):  # noqa: ANN001, ANN202
    page = queries.search(session, p, filters, after) if filters.any() else queries.Page([])
    if filters.phone:  # who looked up whose number is itself personal data
        audit_view(session, who_, "case.search_phone", "phone", filters.phone[:64],
                   {"results": len(page.rows)})
    categories = session.exec(select(Category).order_by(Category.code)).all()
    return page, colours(session, page.rows), categories


@needs_page("search")
async def search(request: web.Request) -> web.Response:
    p = principal(request)
    filters = queries.SearchFilters.from_query(request.query)
    if filters.phone and not p.sees_phone:
        raise web.HTTPForbidden()
    after = decode_cursor(request.query.get("after"))
    page, sla, categories = await db.run(request, _run, p, filters, after, who(request))
    more = None
    if page.next_cursor:
        more = "?" + urlencode({**filters.as_query(), "after": encode_cursor(*page.next_cursor)})
    return render(request, "search.html", {
        "f": filters, "page": page, "sla": sla, "more": more, "categories": categories,
        "statuses": [s.value for s in CaseStatus], "channels": [c.value for c in Channel],
    })


def setup(app: web.Application) -> None:
    app.router.add_get("/search", search)
