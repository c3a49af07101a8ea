"""The console's aiohttp sub-application under ``/console/``: the middlewares of
``console.web``, the templates, and every page of ``console.views`` (each registers its
routes). Apart from ``console.web`` because the pages import what it shares (render, lang,
the prefix), so it cannot import them."""

from __future__ import annotations

import logging

import aiohttp_jinja2
import jinja2
from aiohttp import web
from aiohttp_session import session_middleware

from console import db, filters
from console.auth import DatabaseStorage, count_users
from console.config import get_console_settings
from console.views import (
    account,
    audit,
    auth,
    cases,
    dashboard,
    files,
    grids,
    photos,
    queues,
    scores,
    search,
    surveys,
    system,
    triage,
    users,
)
from console.web import HERE, PREFIX, csrf, errors, guard, timing
from core.platform.db import session_scope

log = logging.getLogger("console.web")  # the name its lines always had

VIEWS = (auth, triage, cases, photos, files, search, queues, grids, surveys, users, audit, account, dashboard, scores,
         system)
FIRST_ADMIN_HINT = (
    "console: no console users yet. Create the first administrator with\n"
    "    gridline users add NAME --role admin\n"
    "(it asks for the password; or pipe it in with --password-stdin). "
    "Then log in at {url}/console/"
)


async def first_start_hint(app: web.Application) -> None:
    try:
        def users(engine):  # noqa: ANN001, ANN202
            with session_scope(engine) as session:
                return count_users(session)

        n = await app[db.POOL].run(users, app[db.ENGINE])
    except Exception as exc:  # schema not there yet: readyz says so
        log.warning("console: could not count users: %s", exc)
        return
    if n == 0:
        message = FIRST_ADMIN_HINT.format(url=get_console_settings().public_url.rstrip("/"))
        if app[db.SERVICES].settings.log_format != "json":  # JSON logs: every line is a record
            print(message, flush=True)
        log.warning(message.replace("\n", " "))


def build_console(services) -> web.Application:  # noqa: ANN001
    settings = get_console_settings()
    storage = DatabaseStorage(secure=settings.secure_cookies, path=f"{PREFIX}/")
    console = web.Application(middlewares=[timing, errors, session_middleware(storage), guard, csrf])
    console[db.ENGINE] = services.engine
    console[db.POOL] = services.db
    console[db.DATA_DIR] = services.settings.data_dir
    console[db.SERVICES] = services
    env = aiohttp_jinja2.setup(console, loader=jinja2.FileSystemLoader(str(HERE / "templates")),
                               autoescape=jinja2.select_autoescape(default=True), undefined=jinja2.StrictUndefined)

    filters.install(env)
    console.router.add_static("/static/", HERE / "static", name="static", append_version=True)
    for view in VIEWS:
        view.setup(console)
    console.on_startup.append(first_start_hint)
    return console


def setup(app: web.Application, services) -> web.Application:  # noqa: ANN001
    console = build_console(services)
    app.add_subapp(PREFIX, console)

    async def bare(request: web.Request) -> web.Response:
        raise web.HTTPPermanentRedirect(f"{PREFIX}/")

    app.router.add_get(PREFIX, bare)
    return console
