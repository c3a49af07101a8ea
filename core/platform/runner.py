"""An asyncio loop that claims due jobs and hands each to the handler registered for its
kind. Channels register handlers (``notify_resident``, ``survey_chat`` …); the core knows
nothing about how a message or a call is made.

Handlers run one at a time per *lane*: kinds registered on a lane of their own (the
survey calls, paced to Twilio's calls per second) never hold up the kinds of another
lane (notifications). A lane given a ``concurrency`` runs that many jobs at once (the
chat's messages, which wait for Telegram's limits, not for each other); jobs with the same
*order key* (their chat) still run one after another, in the order they were claimed
(most urgent first). A kind this process cannot take is *paused* with the reason (no
Twilio credentials): its jobs stay queued, and the reason is logged once at start-up and
shown in ``/healthz``. A runner that reports orphans (the server's) also warns at
start-up about queued jobs of a kind no handler in this process takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine

from core.platform import jobs
from core.platform.clock import utcnow
from core.platform.dbpool import patiently
from core.platform.models import Job, JobStatus
from core.platform.retry import short, transient, wait_backoff
from core.platform.tasks import cancel_and_wait

log = logging.getLogger(__name__)

Handler = Callable[[Job], Awaitable[None]]
# Jobs that must not overtake each other (the same chat) share a key; None: no order.
OrderKey = Callable[[Job], str | None]

# The job whose handler is running in this task (None outside a job): a sender asks it for
# the job's priority.
current_job: ContextVar[Job | None] = ContextVar("gridline_current_job", default=None)
# Runs a blocking database call off the event loop: the server's DatabasePool.run.
DbRunner = Callable[..., Awaitable[Any]]

MAIN_LANE = "main"
# Writing a job's outcome again after a transient failure: the first pause, doubling up to the longest.
RECORD_BACKOFF = wait_backoff(0.1, 5.0)

# Told of every job a runner of this process finished: (kind, outcome, seconds), the outcome
# one of ``done``, ``retry`` (failed, tried again later), ``failed`` (failed for good),
# ``later`` (RetryLater). The composition root counts them for /metrics (gridline.metrics);
# an observer must be quick and must not raise.
JobObserver = Callable[[str, str, float], None]
observers: list[JobObserver] = []


class RetryLater(Exception):
    """A handler's way to say: not now, try again after ``delay`` (no attempt counted)."""

    def __init__(self, delay: timedelta, why: str = ""):
        super().__init__(why)
        self.delay = delay


def _tell(kind: str, outcome: str, seconds: float) -> None:
    for observer in observers:
        try:
            observer(kind, outcome, seconds)
        except Exception:  # counting must never cost a job
            log.exception("job observer failed")


class JobRunner:
    def __init__(self, engine: Engine, *, poll_seconds: float = 1.0, batch: int = 10, db: DbRunner | None = None,
                 reports_orphans: bool = False):
        self.engine = engine
        self.db: DbRunner = db or asyncio.to_thread
        self.poll_seconds = poll_seconds
        self.batch = batch
        self.handlers: dict[str, Handler] = {}
        self.lanes: dict[str, list[str]] = {}  # lane -> its kinds
        self.concurrency: dict[str, int] = {}  # lane -> jobs at once (1 when not given)
        self.order_keys: dict[str, OrderKey] = {}  # kind -> what its jobs keep their order by
        self._key_locks: dict[str, list] = {}  # order key -> [lock, users]
        self.paused: dict[str, str] = {}  # kind -> why this process does not take it
        self.elsewhere: dict[str, str] = {}  # kind -> which other runner of this process takes it
        self.reports_orphans = reports_orphans
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._tasks: list[asyncio.Task] = []
        self._wakes: dict[str, asyncio.Event] = {}
        self.rounds = 0  # claims tried, all lanes (so a test can wait for polls, not sleep)

    def register(self, kind: str, handler: Handler, *, lane: str = MAIN_LANE,
                 order_key: OrderKey | None = None) -> None:
        for kinds in self.lanes.values():
            if kind in kinds:
                kinds.remove(kind)
        self.handlers[kind] = handler
        self.lanes.setdefault(lane, []).append(kind)
        self.paused.pop(kind, None)
        if order_key is not None:
            self.order_keys[kind] = order_key

    def set_concurrency(self, lane: str, jobs_at_once: int) -> None:
        """Run up to ``jobs_at_once`` jobs of ``lane`` at a time (before ``start``)."""
        self.concurrency[lane] = max(1, int(jobs_at_once))

    def pause(self, kind: str, why: str) -> None:
        """This process cannot take ``kind`` (say why): its jobs wait queued for one that can."""
        if kind not in self.handlers:
            self.paused[kind] = why

    def handled_elsewhere(self, kind: str, by: str) -> None:
        """Another runner of this process takes ``kind`` (e.g. the speech runners)."""
        self.elsewhere[kind] = by
        self.paused.pop(kind, None)

    @property
    def running(self) -> bool:
        """The runner takes jobs in this process (``start`` was called and not ``stop``):
        periodic work is scheduled only where jobs are run."""
        return bool(self._tasks)

    def wake(self) -> None:
        """Look for work now rather than at the next poll (after an action queued a job)."""
        for event in self._wakes.values():
            event.set()

    async def run_once(self, lane: str | None = None) -> int:
        kinds = list(self.handlers) if lane is None else self.lanes.get(lane, [])
        if not kinds:
            return 0
        claimed = await self.db(jobs.claim, self.engine, self.name, kinds, self.batch)
        for job in claimed:
            await self._run(job)
        return len(claimed)

    async def _run_in_order(self, job: Job) -> None:
        """``_run`` after the jobs claimed before it with the same order key."""
        order_key = self.order_keys.get(job.kind)
        key = order_key(job) if order_key is not None else None
        if key is None:
            await self._run(job)
            return
        entry = self._key_locks.setdefault(key, [asyncio.Lock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                await self._run(job)
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                self._key_locks.pop(key, None)

    async def _run(self, job: Job) -> None:
        started = time.perf_counter()
        token = current_job.set(job)
        try:
            await self.handlers[job.kind](job)
        except RetryLater as later:
            outcome = "later"
            await self._record(job, jobs.reschedule, self.engine, job.id, utcnow() + later.delay)
        except Exception as exc:  # a failing handler must not stop the other jobs
            # A transient failure (core.platform.retry) is tried again after the backoff; any other
            # would only come back: the job fails for good now.
            again = transient(exc)
            retry_in = timedelta(seconds=jobs.BACKOFF.pause(job.attempts, exc))
            failed = await self._record(job, jobs.fail, self.engine, job.id, f"{type(exc).__name__}: {exc}",
                                        retry_in=retry_in, give_up=not again)
            outcome = "failed" if failed.status == JobStatus.failed else "retry"
            if outcome == "retry":
                log.warning("job %s (%s) failed (%s); attempt %d of %d, the next in %.0f s", job.id, job.kind,
                            short(exc), job.attempts, job.max_attempts, retry_in.total_seconds())
            elif again:
                log.error("job %s (%s) failed at its last attempt (%d): %s", job.id, job.kind, job.attempts,
                          short(exc))
            else:
                log.error("job %s (%s) failed; not tried again (the error is not transient)", job.id, job.kind,
                          exc_info=exc)
        else:
            outcome = "done"
            await self._record(job, jobs.complete, self.engine, job.id)
        finally:
            current_job.reset(token)
        _tell(job.kind, outcome, time.perf_counter() - started)

    async def _record(self, job: Job, write: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """A job's outcome, written while the failure is transient (a full database pool, a
        lost connection): left running, a job that was sent would be claimed again after its
        lease and sent twice."""
        attempt = 0
        while True:
            try:
                return await self.db(write, *args, **kw)
            except Exception as exc:
                if not transient(exc):
                    raise
                attempt += 1
                pause = RECORD_BACKOFF.pause(attempt, exc)
                log.warning("recording the outcome of job %s (%s) failed (%s); again in %.2f s", job.id, job.kind,
                            short(exc), pause)
                await asyncio.sleep(pause)

    async def _loop_concurrent(self, lane: str, limit: int) -> None:
        """Claim while there is room for more, run each claimed job in a task of its own."""
        wake = self._wakes[lane]
        slot_freed = asyncio.Event()
        running: set[asyncio.Task] = set()

        def finished(task: asyncio.Task) -> None:
            running.discard(task)
            slot_freed.set()

        try:
            while True:
                wake.clear()
                slot_freed.clear()
                claimed: list[Job] = []
                room = limit - len(running)
                kinds = self.lanes.get(lane, [])
                if room > 0 and kinds:
                    try:
                        claimed = await self.db(jobs.claim, self.engine, self.name, kinds, room)
                    except Exception as exc:  # e.g. the database restarting: wait and try again
                        if transient(exc):
                            log.warning("job runner (%s): claim failed (%s)", lane, short(exc))
                        else:
                            log.exception("job runner (%s): claim failed", lane)
                    self.rounds += 1
                for job in claimed:
                    task = asyncio.get_running_loop().create_task(self._run_in_order(job), name=f"job-{job.id}")
                    running.add(task)
                    task.add_done_callback(finished)
                if claimed and len(running) < limit:
                    continue  # there may be more due
                waits = [asyncio.ensure_future(slot_freed.wait())]
                if len(running) < limit:
                    waits.append(asyncio.ensure_future(wake.wait()))
                try:
                    await asyncio.wait(waits, timeout=self.poll_seconds, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiter in waits:
                        waiter.cancel()
        finally:
            for task in list(running):
                await cancel_and_wait(task)

    async def _loop(self, lane: str) -> None:
        limit = self.concurrency.get(lane, 1)
        if limit > 1:
            await self._loop_concurrent(lane, limit)
            return
        wake = self._wakes[lane]
        while True:
            # Cleared before claiming: a wake that comes while a claim runs (its job was
            # committed after the claim looked) is kept for the next round, not lost.
            wake.clear()
            try:
                busy = await self.run_once(lane)
            except Exception as exc:  # e.g. the database restarting: wait and try again
                if transient(exc):
                    log.warning("job runner (%s): claim failed (%s)", lane, short(exc))
                else:
                    log.exception("job runner (%s): claim failed", lane)
                busy = 0
            self.rounds += 1
            if busy:
                continue
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that
            # arrives as the wake-up completes, and stop() then waits for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_seconds):
                    await wake.wait()

    def start(self) -> None:
        if self._tasks:
            return
        loop = asyncio.get_running_loop()
        with patiently():  # the loops, and the jobs they start, wait for the database's threads
            for lane in self.lanes or {MAIN_LANE: []}:
                self._wakes[lane] = asyncio.Event()
                name = "gridline-jobs" if lane == MAIN_LANE else f"gridline-jobs-{lane}"
                self._tasks.append(loop.create_task(self._loop(lane), name=name))
        if self.reports_orphans or self.paused:
            self._tasks.append(loop.create_task(self._report_at_start(), name="gridline-jobs-report"))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            await cancel_and_wait(task)
            if not task.cancelled() and task.exception() is not None:
                log.error("job runner task %s ended with an error", task.get_name(), exc_info=task.exception())
        self._wakes.clear()

    # -- what waits without a handler -----------------------------------------------------

    def takes(self, kind: str) -> bool:
        return kind in self.handlers or kind in self.elsewhere

    async def waiting(self) -> tuple[dict[str, int], dict[str, int]]:
        """(jobs waiting for a paused kind, jobs waiting for a kind nobody here takes), by kind."""
        counts = await self.db(jobs.waiting_by_kind, self.engine)
        paused = {k: n for k, n in counts.items() if k in self.paused}
        orphans = {k: n for k, n in counts.items() if not self.takes(k) and k not in self.paused}
        return paused, orphans

    async def _report_at_start(self) -> None:
        """Said once, at start-up, not at every poll."""
        by_why: dict[str, list[str]] = {}
        for kind, why in sorted(self.paused.items()):
            by_why.setdefault(why, []).append(kind)
        for why, kinds in by_why.items():
            log.info("not taken by this process, left queued for one that can: %s (%s)", ", ".join(kinds), why)
        try:
            paused, orphans = await self.waiting()
        except Exception as exc:  # database away at start-up: /healthz will say it later
            log.warning("could not count the queued jobs at start-up: %s", exc)
            return
        for kind, count in sorted(paused.items()):
            log.warning("%d %s job(s) wait queued: %s", count, kind, self.paused[kind])
        if self.reports_orphans and orphans:
            listed = ", ".join(f"{kind} ({count}, {jobs.KINDS.get(kind, 'a kind no module declares')})"
                               for kind, count in sorted(orphans.items()))
            log.warning("queued jobs that no handler in this process takes: %s", listed)

    async def health(self) -> dict:
        """For /healthz: the lanes, paused kinds with why, jobs waiting for a handler."""
        paused, orphans = await self.waiting()
        return {
            "lanes": {lane: sorted(kinds) for lane, kinds in self.lanes.items()},
            "paused": {kind: {"why": why, "waiting": paused.get(kind, 0)} for kind, why in sorted(self.paused.items())},
            "queued_without_handler": orphans,
        }
