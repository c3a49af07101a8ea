"""Durable background work as rows: notifications, survey attempts, SLA sweeps.

A job is written in the same transaction as the change that asks for it, so it is never
lost to a crash. Job runners claim due jobs with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so
several Gridline instances can share one database; SQLite has one writer at a time and
claims with a conditional UPDATE instead.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Integer, bindparam, exists, func, insert, or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from core.platform.clock import utcnow
from core.platform.db import savepoint, session_scope
from core.platform.instances import lease_length
from core.platform.models import Instance, Job, JobStatus
from core.platform.retry import wait_backoff

LEASE = timedelta(minutes=5)
# A failed job's next try: 30 s after its first attempt, doubling with each attempt, at most an
# hour later (at least what a server's Retry-After asked for, when the runner passes the error).
BACKOFF = wait_backoff(30.0, 3600.0)

# Every kind of job the code base queues, and who takes it. A module declares its kinds
# when it is imported (``X_JOB = jobs.declare("x", "who handles it")``); ``enqueue`` refuses
# a kind nobody declared, so no job is ever queued that no handler was written for. Which
# of them a process actually takes is the job runner's business (``core.platform.runner``).
KINDS: dict[str, str] = {}

# The order jobs are claimed in, lowest first (``Job.priority``): what someone is waiting
# for at this moment (a worker's new task), then what a person should hear soon (a case's
# progress, a survey), then bulk (reminders, digests).
URGENT, PROMPT, BULK = 0, 1, 2
PRIORITIES: dict[str, int] = {}


class UnknownJobKind(ValueError):
    """``enqueue`` of a kind no module declared: a typo or a handler never written."""


def declare(kind: str, handled_by: str, *, priority: int = PROMPT) -> str:
    """Make ``kind`` known (``handled_by`` says where its handler is; ``priority``: URGENT,
    PROMPT or BULK); returns ``kind``."""
    if not kind or len(kind) > 32:
        raise ValueError(f"job kind {kind!r}: 1 to 32 characters")
    if priority not in (URGENT, PROMPT, BULK):
        raise ValueError(f"job kind {kind!r}: priority {priority!r} is not URGENT, PROMPT or BULK")
    KINDS[kind] = handled_by
    PRIORITIES[kind] = priority
    return kind


# A job queued without a dedupe key is one INSERT … RETURNING loaded as the session's own Job:
# the ORM's add and flush ran a unit of work for each (and flushed whatever else the session
# held), a notice or two for every case change (bench/chat.py). Built once; the row goes in
# as parameters, starting from the model's defaults that are constants.
# session.info: this transaction queued a job (read at its commit to wake the runner,
# chat.worker_jobs.wake_on_commit; a job added through the ORM is seen in its flush too).
QUEUED = "gridline_job_queued"
_JOB_COLUMNS = tuple(c.key for c in Job.__table__.columns if c.key != "id")
_JOB_DEFAULTS = {key: getattr(Job(kind="", run_at=datetime(2000, 1, 1), created_at=datetime(2000, 1, 1)), key)
                 for key in _JOB_COLUMNS if key not in ("run_at", "created_at")}
_INSERT_JOB = select(Job).from_statement(insert(Job.__table__).returning(*Job.__table__.columns))


def enqueue(
    session: Session,
    kind: str,
    payload: dict | None = None,
    *,
    run_at: datetime | None = None,
    dedupe_key: str | None = None,
    max_attempts: int = 5,
) -> Job | None:
    """Queue a job; with a ``dedupe_key`` a second enqueue of the same work is a no-op."""
    if kind not in KINDS:
        raise UnknownJobKind(f"job kind {kind!r} is not declared (core.platform.jobs.declare): no handler would take it")
    if dedupe_key is not None:
        existing = session.exec(select(Job).where(Job.dedupe_key == dedupe_key)).first()
        if existing is not None:
            return existing
    if dedupe_key is None:
        now = utcnow()
        job = session.scalars(_INSERT_JOB, {
            **_JOB_DEFAULTS, "kind": kind, "payload": payload or {}, "run_at": run_at or now,
            "max_attempts": max_attempts, "priority": PRIORITIES.get(kind, PROMPT), "created_at": now}).one()
        session.info[QUEUED] = True  # no flush saw a new Job: say so for whoever wakes the runner
        return job
    job = Job(kind=kind, payload=payload or {}, run_at=run_at or utcnow(), dedupe_key=dedupe_key,
              max_attempts=max_attempts, priority=PRIORITIES.get(kind, PROMPT))
    try:
        # Several instances (or processes) queue the same periodic work at the same moment:
        # the one that comes second finds the first's row instead of failing.
        with savepoint(session):
            session.add(job)
            session.flush()
    except IntegrityError:
        return session.exec(select(Job).where(Job.dedupe_key == dedupe_key)).one()
    return job


def enqueue_once(session: Session, kind: str, payload: dict, *, dedupe_key: str, **options) -> Job | None:
    """Queue a job unless the same work (``dedupe_key``) is queued already; ``None`` when it
    is, or when another transaction queues it at the same moment (it commits first)."""
    if session.exec(select(Job.id).where(Job.dedupe_key == dedupe_key)).first() is not None:
        return None
    if kind not in KINDS:
        raise UnknownJobKind(f"job kind {kind!r} is not declared (core.platform.jobs.declare): no handler would take it")
    job = Job(kind=kind, payload=payload, run_at=options.get("run_at") or utcnow(), dedupe_key=dedupe_key,
              max_attempts=options.get("max_attempts", 5), priority=PRIORITIES.get(kind, PROMPT))
    try:
        with savepoint(session):
            session.add(job)
            session.flush()
    except IntegrityError:
        return None
    return job


def _claim_statement(postgres: bool, by_kind: bool, by_id: bool):  # noqa: ANN202
    """The claim as one statement with its values as parameters (``claim``): built once per
    shape, it is not built and keyed again for every claim (that cost more CPU than running
    it under a chat burst)."""
    now = bindparam("claim_now")
    due = (Job.status == JobStatus.queued) & (Job.run_at <= now)
    holder_gone = exists(select(Instance.id).where(Instance.id == Job.locked_by,
                                                   Instance.heartbeat_at < bindparam("claim_gone_before")))
    stale = (Job.status == JobStatus.running) & ((Job.locked_until < now) | holder_gone)
    chosen = (select(Job.id).where(or_(due, stale)).order_by(Job.priority, Job.run_at, Job.id)
              .limit(bindparam("claim_room", type_=Integer)))
    if by_kind:
        chosen = chosen.where(Job.kind.in_(bindparam("claim_kinds", expanding=True)))
    if by_id:
        chosen = chosen.where(Job.id.in_(bindparam("claim_ids", expanding=True)))
    if postgres:
        chosen = chosen.with_for_update(skip_locked=True)  # the due rows nobody else holds
    taken = {"status": JobStatus.running, "locked_by": bindparam("claim_holder"),
             "locked_until": bindparam("claim_until"), "attempts": Job.attempts + 1}
    # Only the chosen ids in the outer WHERE: with the claim condition repeated there,
    # PostgreSQL took more rows than the limit (a test in tests/core/platform/test_runner.py).
    return (update(Job).where(Job.id.in_(chosen.scalar_subquery())).values(**taken)
            .returning(Job).execution_options(synchronize_session=False))


_CLAIMS: dict[tuple[bool, bool, bool], Any] = {}


def claim(engine: Engine, holder: str, kinds: list[str] | None = None, limit: int = 10,
          ids: list[int] | None = None) -> list[Job]:
    """Take up to ``limit`` due jobs for ``holder`` (a runner's name; of ``kinds``; only ``ids``
    when given), the most urgent first. A job whose lease ran out is due again, and so is a
    job held by an instance (``core.platform.instances``) whose own lease ran out: a
    process killed mid-burst gives its jobs back after ``[instances] lease_seconds``, not
    after the job's five minutes.

    One statement takes the due rows (on PostgreSQL those nobody else holds: SKIP LOCKED)
    and returns them as they are now. SQLite runs it under its one writer's lock, so two
    processes cannot both take a job (and it costs one statement, not two for every job)."""
    if ids is not None and not ids:
        return []
    shape = (engine.dialect.name == "postgresql", bool(kinds), ids is not None)
    stmt = _CLAIMS.get(shape)
    if stmt is None:
        stmt = _CLAIMS[shape] = _claim_statement(*shape)
    now = utcnow()
    params: dict[str, Any] = {"claim_now": now, "claim_gone_before": now - lease_length(), "claim_room": limit,
                              "claim_holder": holder, "claim_until": now + LEASE}
    if kinds:
        params["claim_kinds"] = list(kinds)
    if ids is not None:
        params["claim_ids"] = list(ids)
    with session_scope(engine) as session:
        taken_rows = session.scalars(stmt, params).all()
        return sorted(taken_rows, key=lambda j: (j.priority, j.run_at, j.id))


_COMPLETE = update(Job).where(Job.id == bindparam("done_id")).values(status=JobStatus.done, locked_until=None)


def complete(engine: Engine, job_id: int) -> None:
    # One statement, built once, outside an ORM session: every message a burst sends ends here.
    with engine.begin() as conn:
        conn.execute(_COMPLETE, {"done_id": job_id})


def fail(engine: Engine, job_id: int, error: str, *, retry_in: timedelta | None = None,
         give_up: bool = False) -> Job:
    """Record a failure. The job is queued again after ``retry_in`` (default ``BACKOFF``)
    until ``max_attempts``; with ``give_up`` (the error would only come back: the runner asks
    ``core.platform.retry.transient``) it fails for good now."""
    with session_scope(engine) as session:
        job = session.get(Job, job_id)
        job.last_error = error[:2000]
        job.locked_until = None
        if give_up or job.attempts >= job.max_attempts:
            job.status = JobStatus.failed
        else:
            job.status = JobStatus.queued
            job.run_at = utcnow() + (retry_in or timedelta(seconds=BACKOFF.pause(job.attempts)))
        session.add(job)
        return job


def waiting_by_kind(engine: Engine) -> dict[str, int]:
    """Jobs not done yet (queued, or running), by kind."""
    with session_scope(engine) as session:
        rows = session.exec(
            select(Job.kind, func.count()).where(Job.status.in_([JobStatus.queued, JobStatus.running]))
            .group_by(Job.kind)
        ).all()
    return {kind: int(n) for kind, n in rows}


def reschedule(engine: Engine, job_id: int, run_at: datetime) -> None:
    """Put a claimed job back without counting an attempt (e.g. outside calling hours)."""
    with session_scope(engine) as session:
        job = session.get(Job, job_id)
        job.status = JobStatus.queued
        job.run_at = run_at
        job.attempts = max(job.attempts - 1, 0)
        job.locked_until = None
        session.add(job)
