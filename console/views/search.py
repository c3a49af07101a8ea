"""Search by case number, phone (roles that see phones), text, grid, category, status,
channel and date range; newest first, keyset pages.

A search for a person — by phone, or by text with a digit, an ``@`` or the shape of a name
in it (``core.people.redaction.is_personal_query``) — is an audit row, and an account may make
``[console.search] personal_per_hour`` of them in an hour (counted from the audit rows, so
on every instance and across restarts); past that it is answered 429."""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web
from sqlmodel import select

from console import db, queries
from console.i18n import t
from console.views.common import (
    audit_view,
    decode_cursor,
    encode_cursor,
    lang,
    needs_page,
    principal,
    render,
    who,
)
from console.views.sla import colours
from console.web import error_page
from core.cases.models import CaseStatus, Category, Channel
from core.people.redaction import is_personal_query


def _run(session, p, filters, after, who_):  # noqa: ANN001, ANN202
    personal = bool(filters.phone) or is_personal_query(filters.text)
    if personal and queries.personal_searches_made(session, who_[0]) >= queries.personal_searches_allowed():
        audit_view(session, who_, "case.search_refused", "search", None, {"over": "personal_per_hour"})
        return None  # the refusal is an audit row too, so it is committed, not raised
    page = queries.search(session, p, filters, after) if filters.any() else queries.Page([])
    if filters.phone:  # who looked up whose number is itself personal data
        audit_view(session, who_, "case.search_phone", "phone", filters.phone[:64],
                   {"results": len(page.rows)})
    elif personal:
        audit_view(session, who_, "case.search_text", "text", filters.text[:64],
                   {"results": len(page.rows), "masked": not p.sees_phone})
    categories = session.exec(select(Category).order_by(Category.code)).all()
    return page, colours(session, page.rows), categories


@needs_page("search")
async def search(request: web.Request) -> web.Response:
    p = principal(request)
    filters = queries.SearchFilters.from_query(request.query)
    if filters.phone and not p.sees_phone:
        raise web.HTTPForbidden()
    after = decode_cursor(request.query.get("after"))
    found = await db.run(request, _run, p, filters, after, who(request))
    if found is None:
        return error_page(request, 429, t(lang(request), "search.too_many", n=queries.personal_searches_allowed()))
    page, sla, categories = found
    more = None
    if page.next_cursor:
        more = "?" + urlencode({**filters.as_query(), "after": encode_cursor(*page.next_cursor)})
    return render(request, "search.html", {
        "f": filters, "page": page, "sla": sla, "more": more, "categories": categories,
        "statuses": [s.value for s in CaseStatus], "channels": [c.value for c in Channel],
    })


def setup(app: web.Application) -> None:
    app.router.add_get("/search", search)
