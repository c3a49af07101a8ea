"""The database's own threads: every blocking database call of the server runs here, not
in asyncio's default pool that speech, file writes and libraries share.

As many threads as the engine's connection pool has connections, so a thread never waits
for a connection. A caller waits at most ``wait_seconds`` for a free thread, and at most
``queue`` callers wait at once; beyond either the caller gets :class:`core.errors.DatabaseBusy`
at once (a channel answers 503 or "please try again"), so a slow or restarting database
makes requests fail fast instead of piling up without bound. Work that has started is not
abandoned: a thread is free again only when its call returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Engine

from core.errors import DatabaseBusy

log = logging.getLogger(__name__)

T = TypeVar("T")


def connection_capacity(engine: Engine, fallback: int = 4) -> int:
    """How many connections the engine's pool can hand out at once."""
    pool = engine.pool
    size = getattr(pool, "size", None)
    if callable(size):
        return max(1, int(size()) + max(0, int(getattr(pool, "_max_overflow", 0))))
    return fallback


# Set for background work (the job runner's loops and the jobs they run): its database calls
# wait for a thread however many requests wait too, instead of being refused. A request is
# refused so that its client tries again; a job refused is retried only after its backoff
# (30 s), so a burst of webhooks filling the queue delayed the dispatch messages it caused
# by that much (bench/chat.py). Jobs are few at once (each lane's limit), so their wait
# is bounded by the work ahead of them.
_patient: contextvars.ContextVar[bool] = contextvars.ContextVar("gridline_db_patient", default=False)


@contextlib.contextmanager
def patiently():
    """Database calls of tasks started inside (they copy the context) wait for a thread."""
    token = _patient.set(True)
    try:
        yield
    finally:
        _patient.reset(token)


class DatabasePool:
    def __init__(self, threads: int, *, queue: int = 64, wait_seconds: float = 5.0, name: str = "gridline-db"):
        if threads < 1:
            raise ValueError("a database pool needs at least one thread")
        self.threads = threads
        self.queue = queue
        self.wait_seconds = wait_seconds
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
        self._free = asyncio.Semaphore(threads)
        self._released = asyncio.Event()  # set (and replaced) each time a thread is freed
        self.busy = 0  # calls running in a thread
        self.waiting = 0  # callers waiting for a thread (requests: the queue's bound counts these)
        self.waiting_patiently = 0  # background callers waiting for a thread (no bound)
        self.refused = 0  # callers told "busy"

    @classmethod
    def for_engine(cls, engine: Engine, *, threads: int = 0, queue: int = 64, wait_seconds: float = 5.0) -> DatabasePool:
        return cls(threads or connection_capacity(engine), queue=queue, wait_seconds=wait_seconds)

    async def run(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """``fn(*args, **kw)`` in a database thread; raises DatabaseBusy if none frees up in time
        (never for background work: see ``patiently``)."""
        if _patient.get():
            self.waiting_patiently += 1
            try:
                # A thread goes to background work only when no request waits for one: a
                # hotline webhook must not wait behind a burst of notices.
                while self.waiting or self._free.locked():
                    # looked at again at least twice a second: a request that stopped waiting
                    # without a thread being freed wakes nobody
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._released.wait(), 0.5)
                await self._free.acquire()  # free: taken at once, without yielding
            finally:
                self.waiting_patiently -= 1
            return await self._in_thread(fn, *args, **kw)
        if self._free.locked() and self.waiting >= self.queue:
            self.refused += 1
            raise DatabaseBusy(f"{self.waiting} database calls are already waiting for one of {self.threads} threads")
        self.waiting += 1
        try:
            await asyncio.wait_for(self._free.acquire(), self.wait_seconds)
        except TimeoutError:
            self.refused += 1
            raise DatabaseBusy(f"no database thread became free within {self.wait_seconds:g} s") from None
        finally:
            self.waiting -= 1
        return await self._in_thread(fn, *args, **kw)

    async def _in_thread(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """Run ``fn`` in a thread, the slot already taken; the slot is freed when it returns."""
        loop = asyncio.get_running_loop()
        self.busy += 1
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kw)
        try:
            future = self._executor.submit(call)
        except BaseException:
            self._done(None)
            raise

        def release(_: Any) -> None:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits for the slot
                loop.call_soon_threadsafe(self._done, None)

        # The slot is given back when the thread is done, even if the caller stopped waiting.
        future.add_done_callback(release)
        return await asyncio.wrap_future(future)

    def _done(self, _: Any) -> None:
        self.busy -= 1
        self._free.release()
        # wake the background callers to look again (a request waiting goes first)
        released, self._released = self._released, asyncio.Event()
        released.set()

    def stats(self) -> dict[str, int]:
        return {"threads": self.threads, "busy": self.busy, "waiting": self.waiting,
                "waiting_patiently": self.waiting_patiently, "refused": self.refused}

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
