"""How the hotline runs database work: off the event loop, and again when the connection
dropped under it (a restarted or failed-over PostgreSQL, a terminated backend, SQLite's
writer lock). Each unit of work is one transaction, so running it again is safe: it either
committed before the error or rolled back, and the hotline's writes are idempotent (the
call session row by CallSid, the case by its idempotency key)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_FOR_S = 8.0  # a webhook must still answer within Twilio's 15 s


def transient(exc: BaseException | None) -> bool:
    """An error that another attempt on a fresh connection may not meet: a dropped or
    refused connection, also when it surfaces as a later error of the same transaction
    (a ``PendingRollbackError`` caused by it)."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OperationalError | InterfaceError):
            return True
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


async def run_db(fn: Callable[..., T], *args: Any, retry_for_s: float = RETRY_FOR_S,
                 runner: Callable[..., Awaitable[T]] | None = None, **kw: Any) -> T:
    """``fn(*args, **kw)`` through ``runner`` (the app's database pool, ``services.db.run``;
    a plain thread without one); transient database errors are retried with backoff for up
    to ``retry_for_s``, then raised."""
    runner = runner or asyncio.to_thread
    deadline = time.monotonic() + retry_for_s
    delay = 0.05
    while True:
        try:
            return await runner(fn, *args, **kw)
        except Exception as exc:
            if not transient(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning("database error in %s, trying again in %.2f s: %s", getattr(fn, "__name__", fn), delay,
                        str(exc).splitlines()[0][:200])
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
