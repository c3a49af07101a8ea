"""The audit log (admins): every change made in the console and every view of personal
data, newest first, filtered by who, what or which target."""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web
from sqlmodel import select

from console import db
from console.queries import page_size
from console.views.common import needs_page, render
from core.errors import InvalidInput
from core.people.models import AuditEntry


def _entries(session, actor: str, action: str, target: str, before: int | None):  # noqa: ANN001, ANN202
    stmt = select(AuditEntry)
    if actor:
        stmt = stmt.where(AuditEntry.actor == actor)
    if action:
        stmt = stmt.where(AuditEntry.action == action)
    if target:
        stmt = stmt.where(AuditEntry.target_id == target)
    if before is not None:
        stmt = stmt.where(AuditEntry.id < before)
    limit = page_size()
    rows = list(session.exec(stmt.order_by(AuditEntry.id.desc()).limit(limit + 1)).all())
    return rows[:limit], (rows[limit - 1].id if len(rows) > limit else None)


@needs_page("audit")
async def index(request: web.Request) -> web.Response:
    q = {k: (request.query.get(k) or "").strip()[:64] for k in ("actor", "action", "target")}
    before = request.query.get("before")
    if before is not None and not before.isdigit():
        raise InvalidInput("this page link is damaged; start the list again", code="console.damaged_link")
    rows, last = await db.run(request, _entries, q["actor"], q["action"], q["target"],
                              int(before) if before else None)
    more = "?" + urlencode({**{k: v for k, v in q.items() if v}, "before": last}) if last else None
    return render(request, "audit.html", {"rows": rows, "q": q, "more": more})


def setup(app: web.Application) -> None:
    app.router.add_get("/audit", index)
