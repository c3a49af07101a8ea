"""An asyncio loop that claims due jobs and hands each to the handler registered for its
kind. Channels register handlers (``notify_resident``, ``survey_chat`` …); the core knows
nothing about how a message or a call is made."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine

from core import jobs
from core.models import Job

log = logging.getLogger(__name__)

Handler = Callable[[Job], Awaitable[None]]
# Runs a blocking database call off the event loop: the server's DatabasePool.run.
DbRunner = Callable[..., Awaitable[Any]]


class RetryLater(Exception):
    """A handler's way to say: not now, try again after ``delay`` (no attempt counted)."""

    def __init__(self, delay: timedelta, why: str = ""):
        super().__init__(why)
        self.delay = delay


class JobRunner:
    def __init__(self, engine: Engine, *, poll_seconds: float = 1.0, batch: int = 10, db: DbRunner | None = None):
        self.engine = engine
        self.db: DbRunner = db or asyncio.to_thread
        self.poll_seconds = poll_seconds
        self.batch = batch
        self.handlers: dict[str, Handler] = {}
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()

    def register(self, kind: str, handler: Handler) -> None:
        self.handlers[kind] = handler

    def wake(self) -> None:
        """Look for work now rather than at the next poll (after an action queued a job)."""
        self._wake.set()

    async def run_once(self) -> int:
        if not self.handlers:
            return 0
        claimed = await self.db(jobs.claim, self.engine, self.name, list(self.handlers), self.batch)
        for job in claimed:
            await self._run(job)
        return len(claimed)

    async def _run(self, job: Job) -> None:
        from core.clock import utcnow

        try:
            await self.handlers[job.kind](job)
        except RetryLater as later:
            await self.db(jobs.reschedule, self.engine, job.id, utcnow() + later.delay)
        except Exception as exc:  # a failing handler must not stop the other jobs
            log.exception("job %s (%s) failed", job.id, job.kind)
            await self.db(jobs.fail, self.engine, job.id, f"{type(exc).__name__}: {exc}")
        else:
            await self.db(jobs.complete, self.engine, job.id)

    async def _loop(self) -> None:
        while True:
            # Cleared before claiming: a wake that comes while a claim runs (its job was
            # committed after the claim looked) is kept for the next round, not lost.
            self._wake.clear()
            try:
                busy = await self.run_once()
            except Exception:  # e.g. the database restarting: wait and try again
                log.exception("job runner: claim failed")
                busy = 0
            if busy:
                continue
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that
            # arrives as the wake-up completes, and stop() then waits for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_seconds):
                    await self._wake.wait()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="gridline-jobs")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
