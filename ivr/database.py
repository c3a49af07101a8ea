"""How the hotline runs database work: off the event loop, and again when the connection
dropped under it (a restarted or failed-over PostgreSQL, a terminated backend, SQLite's
writer lock). Each unit of work is one transaction, so running it again is safe: it either
committed before the error or rolled back, and the hotline's writes are idempotent (the
call session row by CallSid, the case by its idempotency key)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tenacity import AsyncRetrying, stop_before_delay

from core.platform.retry import log_retry, retry_if_transient, wait_backoff

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_FOR_S = 8.0  # a webhook must still answer within Twilio's 15 s
RETRY_FIRST_S = 0.05  # the first pause, doubling up to the longest
RETRY_LONGEST_S = 1.0


async def run_db(fn: Callable[..., T], *args: Any, retry_for_s: float | None = None,
                 runner: Callable[..., Awaitable[T]] | None = None, **kw: Any) -> T:
    """``fn(*args, **kw)`` through ``runner`` (the app's database pool, ``services.db.run``;
    a plain thread without one); transient database errors (``core.platform.retry.transient``) are
    retried with backoff while the next try can still start within ``retry_for_s`` (default
    ``RETRY_FOR_S``), then raised."""
    runner = runner or asyncio.to_thread
    name = getattr(fn, "__name__", str(fn))
    retrying = AsyncRetrying(
        retry=retry_if_transient,
        wait=wait_backoff(RETRY_FIRST_S, RETRY_LONGEST_S),
        stop=stop_before_delay(RETRY_FOR_S if retry_for_s is None else retry_for_s),
        before_sleep=log_retry(log, lambda _: f"database work {name}"),
        reraise=True,
    )
    return await retrying(runner, fn, *args, **kw)
