"""The console's one door to the database: every page's work runs in a worker thread, in
one transaction (``core.platform.db.session_scope``), so the event loop never waits on a query."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web
from sqlalchemy import Engine

from core.platform.db import session_scope

T = TypeVar("T")
ENGINE = web.AppKey("console_engine", Engine)
POOL = web.AppKey("console_db_pool", object)  # core.platform.dbpool.DatabasePool, shared with the other channels
DATA_DIR = web.AppKey("console_data_dir", object)  # pathlib.Path: where Attachment paths are relative to
SERVICES = web.AppKey("console_services", object)  # gridline's Services: database threads, channel reports


def _in_session(engine: Engine, fn: Callable[..., T], args: tuple, kw: dict) -> T:
    with session_scope(engine) as session:
        return fn(session, *args, **kw)


async def run(request: web.Request, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
    """``fn(session, *args, **kw)`` in a database thread (the app's bounded pool: a full pool
    answers "busy", 503), committed when it returns, rolled back when it raises."""
    return await request.config_dict[POOL].run(_in_session, request.config_dict[ENGINE], fn, args, kw)
