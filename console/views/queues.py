"""Queues per worker and per department, nearest deadline first."""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web
from sqlmodel import select

from console import db, queries
from console.views.common import decode_cursor, encode_cursor, lang, needs_page, principal, render
from console.views.sla import colours
from console.views.triage import bad_value
from console.web import PREFIX
from core.cases.models import Category, Channel
from core.errors import NotFound
from core.people.models import Department, Worker
from core.places.models import Grid


def _owners(session, p):  # noqa: ANN001, ANN202
    return queries.queue_owners(session, p)


@needs_page("queues")
async def index(request: web.Request) -> web.Response:
    workers, departments = await db.run(request, _owners, principal(request))
    return render(request, "queues.html", {"workers": workers, "departments": departments})


@needs_page("queues")
async def mine(request: web.Request) -> web.Response:
    p = principal(request)
    if p.worker_id is not None or p.department_id is not None:
        def code(session):  # noqa: ANN001, ANN202
            if p.worker_id is not None:
                return "worker", session.get(Worker, p.worker_id).code
            return "department", session.get(Department, p.department_id).code

        kind, value = await db.run(request, code)
        raise web.HTTPSeeOther(f"{PREFIX}/queues/{kind}/{value}")
    raise web.HTTPSeeOther(f"{PREFIX}/queues")


def _owner(session, kind: str, code: str):  # noqa: ANN001, ANN202
    model = Worker if kind == "worker" else Department
    owner = session.exec(select(model).where(model.code == code)).first()
    if owner is None:
        raise NotFound(f"no {kind} {code}", code="console.no_such", what=kind, item=code)
    return owner


def _queue(session, p, kind: str, code: str, after, filters):  # noqa: ANN001, ANN202
    owner = _owner(session, kind, code)
    own = p.worker_id if kind == "worker" else p.department_id
    community = p.worker_id is None and p.department_id is None and bool(p.grid_ids)
    # A community account opens any queue: the rows are its own grids' cases only (scoped).
    if not p.sees_all and owner.id != own and not community:
        return owner, None, {}
    page = queries.queue(session, p, after=after, filters=filters,
                         **({"worker_id": owner.id} if kind == "worker" else {"department_id": owner.id}))
    return owner, page, colours(session, page.rows)


def _choices(session):  # noqa: ANN001, ANN202
    return {"categories": session.exec(select(Category).order_by(Category.code)).all(),
            "grids": session.exec(select(Grid).order_by(Grid.code)).all()}


@needs_page("queues")
async def queue(request: web.Request) -> web.Response:
    kind, code = request.match_info["kind"], request.match_info["code"]
    filters = queries.TriageFilters.from_query(request.query)
    after = decode_cursor(request.query.get("after"))
    query = urlencode(filters.as_query())
    context = {"kind": kind, "f": filters, "flags_shown": queries.triage_flags(), "gaps": queries.TRIAGE_GAPS,
               "statuses": queries.QUEUE_STATUSES, "channels": [c.value for c in Channel],
               "sorts": queries.QUEUE_SORTS, "query": query, "error": None,
               "action": f"{PREFIX}/queues/{kind}/{code}"}
    try:
        owner, page, sla = await db.run(request, _queue, principal(request), kind, code, after, filters)
    except (queries.TriageFilterError, queries.SearchDateError) as bad:  # the form again, saying which value
        choices = await db.run(request, _choices)
        owner = await db.run(request, _owner, kind, code)
        return render(request, "queue.html", {**context, **choices, "owner": owner, "sla": {}, "next": None,
                                              "page": queries.Page([], total=0),
                                              "error": bad_value(lang(request), bad)}, status=422)
    if page is None:
        raise web.HTTPForbidden()
    choices = await db.run(request, _choices)
    return render(request, "queue.html", {
        **context, **choices, "owner": owner, "page": page, "sla": sla,
        "next": encode_cursor(*page.next_cursor) if page.next_cursor else None,
    })


def setup(app: web.Application) -> None:
    app.router.add_get("/queues", index)
    app.router.add_get("/queues/mine", mine)
    app.router.add_get(r"/queues/{kind:worker|department}/{code}", queue)
