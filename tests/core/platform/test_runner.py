"""core.platform.runner: a job runner stops when asked, even when a wake-up arrives at the same
moment (Python 3.11's wait_for swallowed that cancel and stop() never returned)."""

from __future__ import annotations

import asyncio

import pytest
from sqlmodel import select

from core.platform.runner import JobRunner


class IdleRunner(JobRunner):
    async def run_once(self, lane: str | None = None) -> int:
        return 0


async def test_stop_right_after_wake_returns():
    for _ in range(200):
        runner = IdleRunner(None, poll_seconds=5)
        runner.register("anything", None)
        runner.start()
        await asyncio.sleep(0)
        await asyncio.sleep(0)  # the runner now waits for a wake-up or its poll
        runner.wake()
        stopping = asyncio.ensure_future(runner.stop())
        done, _ = await asyncio.wait({stopping}, timeout=10)
        assert stopping in done, "stop() did not return"


async def test_lanes_do_not_wait_for_each_other(engine):
    """A slow kind on a lane of its own (the paced survey calls) never holds up the others."""
    from core.platform import jobs
    from core.platform.db import session_scope

    for kind in ("lane_slow", "lane_quick"):
        jobs.declare(kind, "tests/core/platform/test_runner.py")
    with session_scope(engine) as session:
        jobs.enqueue(session, "lane_slow")
        jobs.enqueue(session, "lane_quick")
    release, quick_done = asyncio.Event(), asyncio.Event()

    async def slow(job):
        await release.wait()

    async def quick(job):
        quick_done.set()

    runner = JobRunner(engine, poll_seconds=0.05)
    runner.register("lane_slow", slow, lane="calls")
    runner.register("lane_quick", quick)
    runner.start()
    try:
        await asyncio.wait_for(quick_done.wait(), 30)  # while the slow one is still running
    finally:
        release.set()
        await runner.stop()


async def test_queued_jobs_without_a_handler_are_reported_at_start_and_in_health(engine, caplog):
    import logging

    from core.platform import jobs
    from core.platform.db import session_scope

    jobs.declare("orphan_kind", "tests/core/platform/test_runner.py: nobody here")
    jobs.declare("handled_kind", "tests/core/platform/test_runner.py")
    with session_scope(engine) as session:
        jobs.enqueue(session, "orphan_kind")
        jobs.enqueue(session, "orphan_kind")
        jobs.enqueue(session, "handled_kind", run_at=jobs.utcnow() + jobs.LEASE)

    async def handle(job):
        pass

    runner = JobRunner(engine, poll_seconds=0.05, reports_orphans=True)
    runner.register("handled_kind", handle)
    runner.pause("paused_kind", "no credentials")
    with caplog.at_level(logging.INFO, logger="core.platform.runner"):
        runner.start()
        for _ in range(200):
            if any("no handler" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.05)
        await runner.stop()
    warned = [r.getMessage() for r in caplog.records if "no handler" in r.getMessage()]
    assert warned == ["queued jobs that no handler in this process takes: orphan_kind (2, tests/core/platform/test_runner.py: "
                      "nobody here)"]
    assert any(r.getMessage() == "not taken by this process, left queued for one that can: paused_kind "
               "(no credentials)" for r in caplog.records)
    health = await runner.health()
    assert health["queued_without_handler"] == {"orphan_kind": 2}
    assert health["paused"] == {"paused_kind": {"why": "no credentials", "waiting": 0}}
    assert health["lanes"] == {"main": ["handled_kind"]}


async def test_a_concurrent_lane_runs_other_keys_at_once_and_one_keys_jobs_in_order(engine):
    """A lane with ``concurrency``: jobs of different chats run at the same time (chat 1's
    first job waits until chat 2's is running: one at a time would never end), while a
    chat's own jobs run one after another, in the order they were queued."""
    from core.platform import jobs
    from core.platform.db import session_scope

    jobs.declare("keyed", "tests/core/platform/test_runner.py")
    with session_scope(engine) as session:
        for i in range(4):
            for chat in (1, 2):
                jobs.enqueue(session, "keyed", {"chat": chat, "i": i})
    chat2_running = asyncio.Event()
    running: dict[int, bool] = {1: False, 2: False}
    seen: dict[int, list[int]] = {1: [], 2: []}
    overlaps: list[int] = []
    all_done = asyncio.Event()

    async def handle(job):
        chat, i = job.payload["chat"], job.payload["i"]
        if running[chat]:
            overlaps.append(chat)
        running[chat] = True
        if chat == 2:
            chat2_running.set()
        elif i == 0:
            await chat2_running.wait()
        await asyncio.sleep(0)
        seen[chat].append(i)
        running[chat] = False
        if sum(len(v) for v in seen.values()) == 8:
            all_done.set()

    runner = JobRunner(engine, poll_seconds=0.05)
    runner.register("keyed", handle, lane="many", order_key=lambda job: str(job.payload["chat"]))
    runner.set_concurrency("many", 4)
    runner.start()
    try:
        await asyncio.wait_for(all_done.wait(), 60)
    finally:
        await runner.stop()
    assert seen == {1: [0, 1, 2, 3], 2: [0, 1, 2, 3]}
    assert overlaps == []


async def test_urgent_jobs_are_claimed_before_bulk_ones_queued_earlier(engine):
    from core.platform import jobs
    from core.platform.db import session_scope

    jobs.declare("bulk_kind", "tests/core/platform/test_runner.py", priority=jobs.BULK)
    jobs.declare("urgent_kind", "tests/core/platform/test_runner.py", priority=jobs.URGENT)
    with session_scope(engine) as session:
        for _ in range(3):
            jobs.enqueue(session, "bulk_kind")
        jobs.enqueue(session, "urgent_kind")
    claimed = jobs.claim(engine, "w1", ["bulk_kind", "urgent_kind"], limit=2)
    assert [job.kind for job in claimed] == ["urgent_kind", "bulk_kind"]


async def test_a_jobs_outcome_is_written_when_the_database_pool_is_full_for_a_moment(engine, caplog):
    """The handler has run (a message went out); the pool's every thread is busy when the runner
    writes ``done``. Left running, the job would be claimed again after its lease and the
    message sent twice: the write is tried again until it is in."""
    import logging
    import threading

    from core.errors import DatabaseBusy
    from core.platform import jobs
    from core.platform.db import session_scope
    from core.platform.dbpool import DatabasePool
    from core.platform.models import Job, JobStatus

    jobs.declare("sent_once", "tests/core/platform/test_runner.py")
    with session_scope(engine) as session:
        jobs.enqueue(session, "sent_once")
    pool = DatabasePool(1, queue=0, wait_seconds=0.01)  # one thread, nobody may wait for it
    blocker_free = threading.Event()
    runs: list[int] = []
    blockers: list[asyncio.Task] = []

    async def handle(job):
        runs.append(job.id)
        # Another request takes the pool's only thread until a moment from now.
        blockers.append(asyncio.ensure_future(pool.run(blocker_free.wait, 30)))
        await asyncio.sleep(0)
        with pytest.raises(DatabaseBusy):  # the pool is full indeed
            await pool.run(lambda: None)
        asyncio.get_running_loop().call_later(0.3, blocker_free.set)

    runner = JobRunner(engine, db=pool.run)
    runner.register("sent_once", handle)
    with caplog.at_level(logging.WARNING, logger="core.platform.runner"):
        assert await runner.run_once() == 1
    await asyncio.gather(*blockers)
    assert "recording the outcome of job" in caplog.text
    with session_scope(engine) as session:
        statuses = [job.status for job in session.exec(select(Job).where(Job.kind == "sent_once")).all()]
    assert statuses == [JobStatus.done] and len(runs) == 1


async def test_a_started_runner_waits_for_a_busy_database_instead_of_failing_its_jobs(engine):
    """Requests fill the database threads (a burst of webhooks): a job the runner started then
    waits for a thread and is done once one frees, where it failed with DatabaseBusy and came
    back only after its backoff (the dispatch message 30 s late)."""
    import threading

    from core.errors import DatabaseBusy
    from core.platform import jobs
    from core.platform.db import session_scope
    from core.platform.dbpool import DatabasePool
    from core.platform.models import Job, JobStatus

    jobs.declare("waits_for_db", "tests/core/platform/test_runner.py")
    pool = DatabasePool(1, queue=0, wait_seconds=0.01)  # one thread, no request may wait for it
    request_done = threading.Event()
    request = asyncio.ensure_future(pool.run(request_done.wait, 30))  # a request holds the thread
    await asyncio.sleep(0.05)
    with pytest.raises(DatabaseBusy):  # another request is refused at once
        await pool.run(lambda: None)
    handled = asyncio.Event()

    async def handle(job):
        await pool.run(lambda: None)  # the job's own database work
        handled.set()

    with session_scope(engine) as session:
        jobs.enqueue(session, "waits_for_db")
    runner = JobRunner(engine, db=pool.run, poll_seconds=0.05)
    runner.register("waits_for_db", handle)
    runner.start()
    try:
        await asyncio.sleep(0.5)
        assert pool.waiting_patiently >= 1 and not handled.is_set()  # the runner waits: nothing failed
        request_done.set()
        await request
        await asyncio.wait_for(handled.wait(), 10)

        def status():
            with session_scope(engine) as session:
                return session.exec(select(Job.status).where(Job.kind == "waits_for_db")).one()

        deadline = asyncio.get_running_loop().time() + 10
        while (await asyncio.to_thread(status)) != JobStatus.done:
            assert asyncio.get_running_loop().time() < deadline, "the job was not recorded done"
            await asyncio.sleep(0.05)
        assert pool.refused == 1  # the request alone
    finally:
        request_done.set()
        await runner.stop()
        pool.shutdown()
