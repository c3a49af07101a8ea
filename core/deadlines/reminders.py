"""Deadline reminders and the daily digest for staff, as durable jobs (the chat channel
sends them; ``core.people.staff`` says who hears what).

* **Reminders.** The reminder sweep (job ``staff_sweep``, one per slot across all
  instances) looks at every case whose clock runs — the response clock until it is
  accepted, the resolution clock after — and queues a ``staff_reminder`` job when the
  clock has turned yellow (rules.toml ``[sla] warn_fraction`` of the working time used)
  or red (breached). The job's dedupe key ``remind:<case>:<clock>-<colour>:<dispatch>``
  makes it one reminder per case, threshold and dispatch, whatever the number of sweeps,
  restarts and instances; an escalation or a new dispatch is a new dispatch.
* **Digest.** On working days a ``staff_digest`` job is queued for rules.toml
  ``[worker] digest_time`` (local); when it runs it queues one ``staff_digest_chat`` job
  per linked chat (dedupe ``digest:<day>:<chat>``).
* **Tasks.** ``tasks`` lists what a staff member has to do, most urgent first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from core.cases.models import Case, CaseStatus, Category
from core.deadlines.sla import calendar_for, sla_colour
from core.people import staff
from core.people.models import StaffChat, WorkerGrid
from core.places.models import Grid
from core.platform import jobs
from core.platform.clock import utcnow
from core.platform.db import session_scope
from core.platform.models import Job

log = logging.getLogger(__name__)

SWEEP_JOB = jobs.declare("staff_sweep", "chat/worker_jobs.py: looks for cases turned yellow or red")
REMIND_JOB = jobs.declare("staff_reminder", "chat/worker_jobs.py: a yellow/red reminder to staff", priority=jobs.BULK)
DIGEST_JOB = jobs.declare("staff_digest", "chat/worker_jobs.py: queues each staff chat's daily digest", priority=jobs.BULK)
DIGEST_CHAT_JOB = jobs.declare("staff_digest_chat", "chat/worker_jobs.py: one staff chat's daily digest", priority=jobs.BULK)

# Statuses whose clock runs for the owner: response until accepted, resolution after.
CLOCKED = (CaseStatus.dispatched, CaseStatus.accepted, CaseStatus.in_progress)
COLOUR_RANK = {"red": 0, "yellow": 1, "green": 2}


def running_clock(case: Case) -> tuple[str, datetime | None]:
    """Which deadline the owner is working against now."""
    if case.status == CaseStatus.dispatched:
        return "response", case.response_due
    return "resolution", case.resolution_due


def reminder_key(case: Case, clock: str, colour: str) -> str:
    return f"remind:{case.id}:{clock}-{colour}:{staff.stamp(case.dispatched_at)}"


# ---------------------------------------------------------------- reminders


def queue_reminders(engine: Engine, *, now: datetime | None = None, limit: int = 20_000) -> list[str]:
    """Queue the reminders that are due and not queued before; returns their dedupe keys."""
    now = now or utcnow()
    queued: list[str] = []
    with session_scope(engine) as session:
        if session.exec(select(StaffChat.chat_id).limit(1)).first() is None:
            return []  # nobody is linked: nobody to remind
        cases = session.exec(
            select(Case).where(Case.status.in_(CLOCKED), Case.dispatched_at.is_not(None))
            .order_by(Case.id).limit(limit)
        ).all()
        calendar = calendar_for(session)
        due: list[tuple[Case, str, str, datetime, str]] = []
        for case in cases:
            clock, deadline = running_clock(case)
            if deadline is None:
                continue
            colour = sla_colour(case.dispatched_at, deadline, now, calendar)
            if colour != "green":
                due.append((case, clock, colour, deadline, reminder_key(case, clock, colour)))
        existing: set[str] = set()
        keys = [item[4] for item in due]
        for i in range(0, len(keys), 500):
            existing |= set(session.exec(select(Job.dedupe_key).where(Job.dedupe_key.in_(keys[i:i + 500]))).all())
        for case, clock, colour, deadline, key in due:
            if key in existing:
                continue
            to = staff.linked(session, staff.reminder_recipients(session, case, colour))
            if not to:
                continue
            payload = {"case_id": case.id, "case": case.number, "clock": clock, "colour": colour,
                       "due": deadline.isoformat(), "stamp": staff.stamp(case.dispatched_at),
                       "to": [s.key for s in to], "owner": case.worker_id}
            # another instance queued it since we looked, or is queuing it right now
            if jobs.enqueue_once(session, REMIND_JOB, payload, dedupe_key=key) is None:
                continue
            queued.append(key)
    return queued


def sweep_minutes() -> float:
    return float(staff.worker_rules()["sweep_minutes"])


def schedule_sweep(engine: Engine, *, now: datetime | None = None) -> None:
    """Queue the reminder sweep of the current slot (a no-op when another instance did)."""
    now = now or utcnow()
    every = max(sweep_minutes(), 0.1) * 60
    slot = int(now.replace(tzinfo=UTC).timestamp() // every)
    _enqueue_once(engine, SWEEP_JOB, {}, f"{SWEEP_JOB}:{slot}")


def _enqueue_once(engine: Engine, kind: str, payload: dict, key: str, run_at: datetime | None = None) -> bool:
    try:
        with session_scope(engine) as session:
            before = session.exec(select(Job.id).where(Job.dedupe_key == key)).first()
            if before is not None:
                return False
            jobs.enqueue(session, kind, payload, dedupe_key=key, run_at=run_at)
            return True
    except IntegrityError:  # queued at the same moment elsewhere
        return False


# ---------------------------------------------------------------- digest


def digest_time() -> time:
    raw = str(staff.worker_rules()["digest_time"])
    hours, _, minutes = raw.partition(":")
    return time(int(hours), int(minutes or 0))


def digest_late_limit() -> timedelta:
    return timedelta(minutes=float(staff.worker_rules()["digest_late_minutes"]))


def schedule_digest(engine: Engine, tz: str, *, now: datetime | None = None) -> date | None:
    """Queue today's digest for its time, on working days; returns the day when queued."""
    now = now or utcnow()
    zone = ZoneInfo(tz)
    day = now.replace(tzinfo=UTC).astimezone(zone).date()
    with session_scope(engine) as session:
        if not calendar_for(session, tz).is_working_day(day):
            return None
    run_at = datetime.combine(day, digest_time(), tzinfo=zone).astimezone(UTC).replace(tzinfo=None)
    if _enqueue_once(engine, DIGEST_JOB, {"day": day.isoformat(), "at": run_at.isoformat()},
                     f"{DIGEST_JOB}:{day.isoformat()}", run_at=run_at):
        return day
    return None


def queue_digest_chats(engine: Engine, day: str) -> int:
    """One digest job per linked chat; returns how many were queued now."""
    count = 0
    with session_scope(engine) as session:
        chats = session.exec(select(StaffChat.chat_id).order_by(StaffChat.chat_id)).all()
    for chat_id in chats:
        if _enqueue_once(engine, DIGEST_CHAT_JOB, {"day": day, "chat_id": chat_id}, f"digest:{day}:{chat_id}"):
            count += 1
    return count


# ---------------------------------------------------------------- tasks


@dataclass
class Task:
    case_id: int
    number: str
    status: str
    category: str | None
    description: str
    place: str | None
    due: datetime | None
    clock: str  # response, resolution, check
    colour: str  # green, yellow, red
    dispatch_stamp: str
    report_stamp: str


def _task(session: Session, case: Case, clock: str, due: datetime | None, colour: str) -> Task:
    category = session.get(Category, case.category_id) if case.category_id else None
    grid = session.get(Grid, case.grid_id) if case.grid_id else None
    return Task(case.id, case.number, case.status.value, category.name if category else None,
                case.description, grid.name if grid else None, due, clock, colour,
                staff.stamp(case.dispatched_at), staff.stamp(case.reported_done_at))


def tasks(session: Session, who: staff.Staff, *, now: datetime | None = None, limit: int = 100) -> list[Task]:
    """What ``who`` has to do, most urgent first: cases they own with a running clock
    (coloured by it), then reports waiting for their check."""
    now = now or utcnow()
    column = Case.worker_id if who.kind == "worker" else Case.department_id
    owned = session.exec(
        select(Case).where(column == who.id, Case.status.in_(CLOCKED)).order_by(Case.id).limit(limit)
    ).all()
    calendar = calendar_for(session)
    out: list[Task] = []
    for case in owned:
        clock, due = running_clock(case)
        colour = sla_colour(case.dispatched_at, due, now, calendar) if due and case.dispatched_at else "green"
        out.append(_task(session, case, clock, due, colour))
    out.sort(key=lambda t: (COLOUR_RANK[t.colour], t.due or datetime.max, t.case_id))
    return out + checks(session, who, limit=limit)


def checks(session: Session, who: staff.Staff, *, limit: int = 100) -> list[Task]:
    """Reports (办结上报) waiting for ``who``'s check, oldest first."""
    if who.kind != "worker":
        return []
    leads = session.exec(select(WorkerGrid.grid_id).where(WorkerGrid.worker_id == who.id,
                                                          WorkerGrid.is_leader == True)).first()  # noqa: E712
    if leads is None:
        return []  # only leaders check
    waiting = session.exec(
        select(Case).where(Case.status == CaseStatus.reported_done).order_by(Case.reported_done_at, Case.id)
        .limit(limit * 10)
    ).all()
    out = []
    for case in waiting:
        if staff.checker(session, case) == who:
            out.append(_task(session, case, "check", case.resolution_due, "green"))
            if len(out) >= limit:
                break
    return out
