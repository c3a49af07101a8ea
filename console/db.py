"""The console's one door to the database: every page's work runs in a worker thread, in
one transaction (``core.db.session_scope``), so the event loop never waits on a query."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web
from sqlalchemy import Engine

from core.db import session_scope

T = TypeVar("T")
ENGINE = web.AppKey("console_engine", Engine)
DATA_DIR = web.AppKey("console_data_dir", object)  # pathlib.Path: where Attachment paths are relative to


def _in_session(engine: Engine, fn: Callable[..., T], args: tuple, kw: dict) -> T:
    with session_scope(engine) as session:
        return fn(session, *args, **kw)


async def run(request: web.Request, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
    """``fn(session, *args, **kw)`` in a thread, committed when it returns, rolled back when
    it raises. (The composition root will give this a dedicated pool of its own.)"""
    return await asyncio.to_thread(_in_session, request.config_dict[ENGINE], fn, args, kw)
