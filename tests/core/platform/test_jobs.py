from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta

from sqlmodel import select

from core.platform import clock, jobs
from core.platform.db import session_scope
from core.platform.models import Job, JobStatus
from core.platform.runner import JobRunner, RetryLater

# Kinds only these tests queue (a real kind is declared by the module that queues it).
for _kind in ("x", "ok", "bad", "later", "lost", "bug", "flood"):
    jobs.declare(_kind, "tests/core/platform/test_jobs.py")


def test_dedupe_key_queues_once(engine):
    with session_scope(engine) as session:
        a = jobs.enqueue(session, "survey_phone", {"n": 1}, dedupe_key="survey:1:1")
        b = jobs.enqueue(session, "survey_phone", {"n": 2}, dedupe_key="survey:1:1")
    assert a.id == b.id


def test_concurrent_claims_never_take_the_same_job(engine):
    with session_scope(engine) as session:
        for i in range(40):
            jobs.enqueue(session, "notify_resident", {"i": i})
    claimed: list[int] = []
    lock = threading.Lock()

    def take(name):
        while True:
            got = jobs.claim(engine, name, ["notify_resident"], limit=3)
            if not got:
                return
            with lock:
                claimed.extend(j.id for j in got)
            for j in got:
                jobs.complete(engine, j.id)

    threads = [threading.Thread(target=take, args=(f"p{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == list(range(1, 41))


def test_failure_backs_off_and_gives_up(engine):
    clock.freeze(datetime(2026, 11, 17, 2, 0))
    with session_scope(engine) as session:
        job = jobs.enqueue(session, "x", max_attempts=2)
    (got,) = jobs.claim(engine, "w", ["x"])
    failed = jobs.fail(engine, got.id, "boom")
    assert failed.status == JobStatus.queued and failed.run_at == datetime(2026, 11, 17, 2, 0, 30)
    assert jobs.claim(engine, "w", ["x"]) == []  # not due yet
    clock.freeze(datetime(2026, 11, 17, 2, 1))
    (got,) = jobs.claim(engine, "w", ["x"])
    assert jobs.fail(engine, got.id, "boom again").status == JobStatus.failed
    with session_scope(engine) as session:
        assert session.get(Job, job.id).last_error == "boom again"


def test_expired_lease_is_claimed_again(engine):
    clock.freeze(datetime(2026, 11, 17, 2, 0))
    with session_scope(engine) as session:
        jobs.enqueue(session, "x")
    (got,) = jobs.claim(engine, "crashed-process", ["x"])
    clock.freeze(datetime(2026, 11, 17, 2, 0) + jobs.LEASE + timedelta(seconds=1))
    (again,) = jobs.claim(engine, "w2", ["x"])
    assert again.id == got.id and again.attempts == 2 and again.locked_by == "w2"


async def test_runner_dispatches_by_kind_and_survives_errors(engine):
    with session_scope(engine) as session:
        jobs.enqueue(session, "ok", {"v": 1})
        jobs.enqueue(session, "bad")
        jobs.enqueue(session, "later")
    seen = []

    async def ok(job):
        seen.append(job.payload["v"])

    async def bad(job):
        raise ConnectionError("channel down")

    async def later(job):
        raise RetryLater(timedelta(hours=1), "outside calling hours")

    runner = JobRunner(engine)
    runner.register("ok", ok)
    runner.register("bad", bad)
    runner.register("later", later)
    assert await runner.run_once() == 3
    await asyncio.sleep(0)
    with session_scope(engine) as session:
        by_kind = {j.kind: j for j in session.exec(select(Job)).all()}
    assert seen == [1]
    assert by_kind["ok"].status == JobStatus.done
    assert by_kind["bad"].status == JobStatus.queued and "channel down" in by_kind["bad"].last_error
    assert by_kind["later"].status == JobStatus.queued and by_kind["later"].attempts == 0


async def test_runner_tries_a_transient_failure_again_and_gives_up_on_another(engine):
    """The same test as the hotline and the bot (core.platform.retry.transient): a lost database
    connection or a server's 429 is tried again after the backoff (at least the Retry-After);
    a bug fails for good at its first attempt."""
    import psycopg
    from sqlalchemy.exc import OperationalError
    from telegram.error import RetryAfter

    clock.freeze(datetime(2026, 11, 17, 2, 0))
    with session_scope(engine) as session:
        for kind in ("lost", "bug", "flood"):
            jobs.enqueue(session, kind, max_attempts=5)

    async def lost(job):
        raise OperationalError("SELECT 1", {}, psycopg.OperationalError("server closed the connection unexpectedly"))

    async def bug(job):
        raise KeyError("case")

    async def flood(job):
        raise RetryAfter(600)

    runner = JobRunner(engine)
    for kind, handler in (("lost", lost), ("bug", bug), ("flood", flood)):
        runner.register(kind, handler)
    assert await runner.run_once() == 3
    with session_scope(engine) as session:
        by_kind = {j.kind: j for j in session.exec(select(Job)).all()}
    assert by_kind["lost"].status == JobStatus.queued
    assert by_kind["lost"].run_at == datetime(2026, 11, 17, 2, 0, 30)  # the backoff's first pause
    assert by_kind["flood"].status == JobStatus.queued
    assert by_kind["flood"].run_at == datetime(2026, 11, 17, 2, 10)  # Telegram asked for 600 s
    assert by_kind["bug"].status == JobStatus.failed and by_kind["bug"].attempts == 1
    assert "KeyError" in by_kind["bug"].last_error


def test_a_claim_takes_at_most_its_limit_the_most_urgent_first_in_one_statement(engine):
    from sqlalchemy import event

    jobs.declare("claim_bulk", "tests/core/platform/test_jobs.py", priority=jobs.BULK)
    jobs.declare("claim_urgent", "tests/core/platform/test_jobs.py", priority=jobs.URGENT)
    with session_scope(engine) as session:
        bulk = [jobs.enqueue(session, "claim_bulk", {"n": n}).id for n in range(4)]
        urgent = jobs.enqueue(session, "claim_urgent").id
    on_jobs: list[str] = []

    def seen(conn, cursor, statement, *args):  # noqa: ANN001, ANN002
        if " job" in statement.lower():
            on_jobs.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        first = jobs.claim(engine, "w", ["claim_bulk", "claim_urgent"], limit=2)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert [job.id for job in first] == [urgent, bulk[0]]
    assert all(job.status == JobStatus.running and job.locked_by == "w" and job.attempts == 1 for job in first)
    assert len(on_jobs) == 1, on_jobs  # SQLite took a SELECT, then an UPDATE and a SELECT for each job
    # Only the ids asked for (none: nothing), and what is taken stays taken.
    assert jobs.claim(engine, "w2", ["claim_bulk"], ids=[]) == []
    assert [job.id for job in jobs.claim(engine, "w2", ["claim_bulk"], ids=[bulk[3], bulk[0]])] == [bulk[3]]
    assert [job.id for job in jobs.claim(engine, "w3", ["claim_bulk"], limit=10)] == [bulk[1], bulk[2]]
    assert jobs.claim(engine, "w3", ["claim_bulk", "claim_urgent"]) == []
