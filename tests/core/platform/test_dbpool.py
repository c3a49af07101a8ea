"""The database threads: bounded, with a bounded wait and a clear "busy" instead of an
unbounded queue; a slot is free again only when its call has returned."""

from __future__ import annotations

import asyncio
import threading

import pytest

from core.errors import DatabaseBusy
from core.platform.db import make_engine
from core.platform.dbpool import DatabasePool, connection_capacity, patiently
from tests.support.waiting import until


def test_threads_match_the_connection_pool(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'x.sqlite3'}", pool_size=3, max_overflow=2)
    assert connection_capacity(engine) == 5
    pool = DatabasePool.for_engine(engine)
    assert pool.threads == 5
    assert DatabasePool.for_engine(engine, threads=2).threads == 2
    pool.shutdown()


async def test_calls_run_in_the_database_threads():
    pool = DatabasePool(2)
    try:
        names = await asyncio.gather(*(pool.run(lambda: threading.current_thread().name) for _ in range(4)))
        assert all(name.startswith("gridline-db") for name in names)
        assert await pool.run(lambda a, b=0: a + b, 2, b=3) == 5
    finally:
        pool.shutdown()


async def test_a_full_pool_answers_busy_instead_of_queueing_without_bound():
    pool = DatabasePool(1, queue=1, wait_seconds=0.3)
    gate = threading.Event()
    try:
        holder = asyncio.ensure_future(pool.run(gate.wait, 30))
        await until(lambda: pool.busy == 1)
        waiter = asyncio.ensure_future(pool.run(lambda: "waited"))
        await until(lambda: pool.waiting == 1)
        with pytest.raises(DatabaseBusy, match="already waiting"):  # the queue is full: at once
            await pool.run(lambda: "never")
        with pytest.raises(DatabaseBusy, match="within 0.3 s"):  # the waiter's time ran out
            await waiter
        assert pool.stats()["refused"] == 2
        gate.set()
        assert await holder is True
        assert await pool.run(lambda: "free again") == "free again"
    finally:
        gate.set()
        pool.shutdown()


async def test_a_caller_that_stops_waiting_does_not_free_a_running_thread():
    pool = DatabasePool(1, queue=4, wait_seconds=0.2)
    gate = threading.Event()
    try:
        task = asyncio.ensure_future(pool.run(gate.wait, 30))
        await until(lambda: pool.busy == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(DatabaseBusy):  # the thread still works for the cancelled caller
            await pool.run(lambda: None)
        gate.set()
        await until(lambda: pool.busy == 0)
        assert await pool.run(lambda: 7) == 7
    finally:
        gate.set()
        pool.shutdown()


async def test_background_work_waits_for_a_thread_where_a_request_is_refused():
    """The job runner's calls (``patiently``) wait past the queue's bound and the wait's time
    limit; a request in the same moment is still refused at once, and the background calls
    waiting do not count against the requests' queue."""
    pool = DatabasePool(1, queue=1, wait_seconds=0.2)
    gate = threading.Event()
    try:
        holder = asyncio.ensure_future(pool.run(gate.wait, 30))
        await until(lambda: pool.busy == 1)
        with patiently():  # tasks made here copy the context: what the runner's loops do
            jobs = [asyncio.ensure_future(pool.run(lambda i=i: f"job {i}")) for i in range(3)]
        await until(lambda: pool.waiting_patiently == 3)
        waiter = asyncio.ensure_future(pool.run(lambda: "request"))  # the one place in the queue
        await until(lambda: pool.waiting == 1)
        with pytest.raises(DatabaseBusy, match="already waiting"):
            await pool.run(lambda: "a request too many")
        await asyncio.sleep(0.4)  # past wait_seconds: the request gave up, the jobs did not
        with pytest.raises(DatabaseBusy, match="within 0.2 s"):
            await waiter
        assert not any(job.done() for job in jobs)
        gate.set()
        assert await holder is True
        assert await asyncio.gather(*jobs) == ["job 0", "job 1", "job 2"]
        assert pool.stats()["refused"] == 2 and pool.waiting_patiently == 0
    finally:
        gate.set()
        pool.shutdown()


async def test_a_freed_thread_goes_to_a_waiting_request_before_background_work():
    pool = DatabasePool(1, queue=4, wait_seconds=5)
    gate = threading.Event()
    order: list[str] = []
    try:
        holder = asyncio.ensure_future(pool.run(gate.wait, 30))
        await until(lambda: pool.busy == 1)
        with patiently():
            job = asyncio.ensure_future(pool.run(lambda: order.append("job")))
        await until(lambda: pool.waiting_patiently == 1)
        request = asyncio.ensure_future(pool.run(lambda: order.append("request")))  # came later
        await until(lambda: pool.waiting == 1)
        gate.set()
        await asyncio.gather(holder, job, request)
        assert order == ["request", "job"]
    finally:
        gate.set()
        pool.shutdown()
