"""The triage queue: open cases that need a person, refreshing itself. Filters (status, category,
grid, channel, flag, date range, overdue) and the sort stand in the URL, so a link shows the same
list to whoever opens it; a value the page does not offer is said in words, never a 500."""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from aiohttp import web
from sqlmodel import select

from console import db, queries
from console.access import console_rules
from console.i18n import t
from console.views.common import decode_cursor, encode_cursor, lang, needs_page, principal, render
from console.views.sla import colours
from core.cases.models import Category, Channel
from core.places.models import Grid

log = logging.getLogger(__name__)


def _choices(session) -> dict:  # noqa: ANN001
    return {"categories": session.exec(select(Category).order_by(Category.code)).all(),
            "grids": session.exec(select(Grid).order_by(Grid.code)).all()}


def _load(session, p, after, filters):  # noqa: ANN001, ANN202
    page = queries.triage(session, p, after, filters=filters)
    return page, colours(session, page.rows), _choices(session)


def _choices_only(session):  # noqa: ANN001, ANN202
    return _choices(session)


def bad_value(language: str, bad: queries.InvalidInput) -> str:
    if isinstance(bad, queries.SearchDateError):
        return t(language, f"search.date_{bad.reason}", field=t(language, f"search.{bad.field}_name"),
                 value=bad.value, first=queries.FIRST_SEARCH_DAY.isoformat(), last=queries.LAST_SEARCH_DAY.isoformat())
    return t(language, "triage.bad_value", field=t(language, f"triage.filter_{bad.field}"), value=bad.value)


@needs_page("triage")
async def triage(request: web.Request) -> web.Response:
    filters = queries.TriageFilters.from_query(request.query)
    after = decode_cursor(request.query.get("after"))
    context = {"f": filters, "flags_shown": queries.triage_flags(), "gaps": queries.TRIAGE_GAPS,
               "statuses": queries.TRIAGE_STATUSES, "channels": [c.value for c in Channel],
               "sorts": queries.TRIAGE_SORTS, "query": urlencode(filters.as_query()), "error": None,
               "after": request.query.get("after", ""),
               "refresh": int(console_rules()["triage_refresh_seconds"])}
    try:
        page, sla, choices = await db.run(request, _load, principal(request), after, filters)
    except (queries.TriageFilterError, queries.SearchDateError) as bad:  # the form again, saying which value
        log.info("console triage: %s", bad.message)
        choices = await db.run(request, _choices_only)
        return render(request, "triage.html", {**context, **choices, "page": queries.Page([], total=0), "sla": {},
                                               "next": None, "error": bad_value(lang(request), bad)}, status=422)
    template = "triage_rows.html" if request.headers.get("HX-Request") else "triage.html"
    nxt = encode_cursor(*page.next_cursor) if page.next_cursor else None
    return render(request, template, {**context, **choices, "page": page, "sla": sla, "next": nxt})


def setup(app: web.Application) -> None:
    app.router.add_get("/triage", triage)
