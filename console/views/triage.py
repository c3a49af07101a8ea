"""The triage queue: open cases that need a person, oldest first, refreshing itself."""

from __future__ import annotations

from aiohttp import web

from console import db, queries
from console.access import console_rules
from console.views.common import decode_cursor, encode_cursor, needs_page, principal, render
from console.views.sla import colours


def _load(session, p, after):  # noqa: ANN001, ANN202
    page = queries.triage(session, p, after)
    return page, colours(session, page.rows)


@needs_page("triage")
async def triage(request: web.Request) -> web.Response:
    after = decode_cursor(request.query.get("after"))
    page, sla = await db.run(request, _load, principal(request), after)
    template = "triage_rows.html" if request.headers.get("HX-Request") else "triage.html"
    return render(request, template, {
        "page": page, "sla": sla, "flags_shown": queries.triage_flags(),
        "next": encode_cursor(*page.next_cursor) if page.next_cursor else None,
        "after": request.query.get("after", ""),
        "refresh": int(console_rules()["triage_refresh_seconds"]),
    })


def setup(app: web.Application) -> None:
    app.router.add_get("/triage", triage)
