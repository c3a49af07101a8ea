"""Accounts (admins): who exists, with which role and grids; disable and enable; the login
throttles that make someone wait now, and clearing one (an audited action).
Accounts are created with ``gridline users add`` (the password never passes a web form)."""

from __future__ import annotations

from aiohttp import web
from sqlmodel import select

from console import auth, db, throttle
from console.models import ConsoleUser, ConsoleUserGrid
from console.views.common import form, needs_page, principal, render, who
from console.web import PREFIX
from core.people.models import Department, Worker
from core.places.models import Grid


def _list(session):  # noqa: ANN001, ANN202
    rows = []
    for user in session.exec(select(ConsoleUser).order_by(ConsoleUser.name)).all():
        grids = session.exec(select(Grid.code).join(ConsoleUserGrid, ConsoleUserGrid.grid_id == Grid.id)
                             .where(ConsoleUserGrid.user_id == user.id)).all()
        worker = session.get(Worker, user.worker_id) if user.worker_id else None
        department = session.get(Department, user.department_id) if user.department_id else None
        rows.append({"user": user, "grids": list(grids), "worker": worker.code if worker else "",
                     "department": department.code if department else ""})
    return rows


def _throttles(session):  # noqa: ANN001, ANN202
    return throttle.current_throttles(session, auth.login_policy())


@needs_page("users")
async def index(request: web.Request) -> web.Response:
    return render(request, "users.html", {"rows": await db.run(request, _list),
                                          "throttles": await db.run(request, _throttles)})


@needs_page("users")
async def clear_throttle(request: web.Request) -> web.Response:
    """Forget the failures of one account (blank: any) from one address (blank: any)."""
    data = await form(request)
    account = (data.get("account") or "").strip()[:64] or None
    address = (data.get("address") or "").strip()[:64] or None
    if account is None and address is None:
        raise web.HTTPBadRequest(text="name an account, an address or both")
    actor, remote = who(request)
    await db.run(request, throttle.clear, account=account, address=address, actor=actor, remote=remote)
    raise web.HTTPSeeOther(f"{PREFIX}/users#throttles")


@needs_page("users")
async def toggle(request: web.Request) -> web.Response:
    data = await form(request)
    name = request.match_info["name"]
    disabled = request.match_info["what"] == "disable"
    if disabled and name == principal(request).name:
        raise web.HTTPForbidden()  # an admin cannot lock the door behind themselves
    actor, remote = who(request)
    await db.run(request, auth.set_disabled, name, disabled, actor=actor, remote=remote)
    del data
    raise web.HTTPSeeOther(f"{PREFIX}/users")


def setup(app: web.Application) -> None:
    app.router.add_get("/users", index)
    app.router.add_post("/users/throttles/clear", clear_throttle)
    app.router.add_post(r"/users/{name}/{what:disable|enable}", toggle)
