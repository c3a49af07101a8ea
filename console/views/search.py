"""Search by case number, phone (roles that see phones), text, grid, category, status,
channel and date range; newest first, keyset pages.

A search for a person — by phone, or by text with a digit, an ``@`` or the shape of a name
in it (``core.people.redaction.is_personal_query``) — is an audit row, and an account may make
``[console.search] personal_per_hour`` of them in an hour (counted from the audit rows, so
on every instance and across restarts); past that it is answered 429."""

from __future__ import annotations

import logging
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
from console.views.triage import bad_value
from console.web import error_page
from core.cases.models import CaseStatus, Category, Channel
from core.people.redaction import is_personal_query

log = logging.getLogger(__name__)


def _categories(session):  # noqa: ANN001, ANN202
    return session.exec(select(Category).order_by(Category.code)).all()


def _form(filters: queries.SearchFilters, categories: list, **more: object) -> dict:
    return {"f": filters, "categories": categories, "statuses": [s.value for s in CaseStatus],
            "channels": [c.value for c in Channel], "flags_shown": queries.triage_flags(),
            "gaps": queries.TRIAGE_GAPS, "sorts": queries.SEARCH_SORTS, "error": None, **more}


def _date_error(language: str, bad: queries.SearchDateError) -> str:
    return t(language, f"search.date_{bad.reason}", field=t(language, f"search.{bad.field}_name"),
             value=bad.value, first=queries.FIRST_SEARCH_DAY.isoformat(), last=queries.LAST_SEARCH_DAY.isoformat())


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
                   {"results": len(page.rows), "masked": not p.sees_phone,
                    "confidential": sum(1 for c in page.rows if c.confidential)})
    return page, colours(session, page.rows), _categories(session)


@needs_page("search")
async def search(request: web.Request) -> web.Response:
    p = principal(request)
    filters = queries.SearchFilters.from_query(request.query)
    if filters.phone and not p.sees_phone:
        raise web.HTTPForbidden()
    try:
        filters.check_dates()
    except queries.SearchDateError as bad:  # the form again, saying which date is wrong
        log.info("console search: %s", bad.message)
        categories = await db.run(request, _categories)
        return render(request, "search.html", _form(filters, categories, page=queries.Page([]),
                                                    error=_date_error(lang(request), bad)), status=422)
    after = decode_cursor(request.query.get("after"))
    try:
        found = await db.run(request, _run, p, filters, after, who(request))
    except queries.TriageFilterError as bad:  # a flag or "overdue" the page does not offer
        categories = await db.run(request, _categories)
        return render(request, "search.html", _form(filters, categories, page=queries.Page([]),
                                                    error=bad_value(lang(request), bad)), status=422)
    if found is None:
        return error_page(request, 429, t(lang(request), "search.too_many", n=queries.personal_searches_allowed()))
    page, sla, categories = found
    more = None
    if page.next_cursor:
        more = "?" + urlencode({**filters.as_query(), "after": encode_cursor(*page.next_cursor)})
    return render(request, "search.html", _form(filters, categories, page=page, sla=sla, more=more))


def setup(app: web.Application) -> None:
    app.router.add_get("/search", search)
