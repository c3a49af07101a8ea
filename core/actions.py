"""The only writers of case state.

Every function here checks that its transition is legal, changes the case and writes one
``CaseEvent`` in the caller's transaction (``core.db.session_scope``), so the change and
its audit row commit or vanish together. An illegal call raises a ``DomainError`` before
anything is written. Channels and the console call these; nothing else sets ``Case.status``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from core.clock import utcnow
from core.errors import IllegalTransition, InvalidInput, NotFound
from core.models import (
    GRID_LEVELS,
    Case,
    CaseEvent,
    CaseSequence,
    CaseStatus,
    Category,
    Channel,
    Grid,
    GridLevel,
    Resident,
    Survey,
    SurveyStatus,
    Urgency,
    Worker,
    WorkerGrid,
)
from core.rules import load_rules

S = CaseStatus

# action -> statuses it may start from. The target status is fixed per action except
# where noted (verify, record_survey). This table is the lifecycle of DESIGN.md.
TRANSITIONS: dict[str, frozenset[CaseStatus]] = {
    "classify": frozenset({S.received, S.returned, S.reopened, S.dispatched}),
    "dispatch": frozenset({S.received, S.returned, S.reopened}),
    "accept": frozenset({S.dispatched}),
    "start": frozenset({S.accepted}),
    "report_done": frozenset({S.accepted, S.in_progress}),
    "verify": frozenset({S.reported_done}),
    "reopen": frozenset({S.verified, S.closed}),
    "return": frozenset({S.dispatched, S.accepted}),
    "escalate": frozenset({S.dispatched, S.accepted, S.in_progress, S.reopened, S.returned}),
    "merge": frozenset({S.received, S.returned, S.dispatched}),
    "close": frozenset({S.verified, S.received, S.returned}),
    "record_survey": frozenset({S.verified}),
    "annotate": frozenset(set(CaseStatus)),
}

# Where an action leads, when it always leads to the same place.
TARGET: dict[str, CaseStatus] = {
    "dispatch": S.dispatched,
    "accept": S.accepted,
    "start": S.in_progress,
    "report_done": S.reported_done,
    "reopen": S.reopened,
    "return": S.returned,
    "escalate": S.dispatched,
    "merge": S.merged,
    "close": S.closed,
}

# Statuses in which a case has an owner and running deadlines.
OWNED = frozenset({S.dispatched, S.accepted, S.in_progress, S.reported_done, S.verified})


@dataclass(frozen=True)
class Petition:
    """What a channel knows when a resident has finished describing a problem."""

    channel: Channel
    description: str
    idempotency_key: str | None = None
    contact_phone: str | None = None
    resident_id: int | None = None
    transcript: list[dict] | None = None
    transcript_confidence: float | None = None
    audio_path: str | None = None
    photos: list[str] | None = None
    latitude: float | None = None
    longitude: float | None = None
    address_text: str | None = None
    category_code: str | None = None
    urgency: Urgency = Urgency.normal
    flags: tuple[str, ...] = ()


# ---------------------------------------------------------------- helpers


def _check(case: Case, action: str) -> None:
    if case.status not in TRANSITIONS[action]:
        allowed = ", ".join(sorted(s.value for s in TRANSITIONS[action]))
        raise IllegalTransition(
            f"case {case.number}: cannot {action} a case that is {case.status.value} "
            f"(allowed from: {allowed})",
            case=case.number,
            action=action,
            status=case.status.value,
        )


def _event(
    session: Session,
    case: Case,
    action: str,
    actor: str,
    to_status: CaseStatus,
    *,
    reason: str | None = None,
    on_time: bool | None = None,
    data: dict | None = None,
    at: datetime | None = None,
) -> CaseEvent:
    at = at or utcnow()
    event = CaseEvent(
        case_id=case.id,
        at=at,
        actor=actor,
        action=action,
        from_status=case.status if action != "submit" else None,
        to_status=to_status,
        reason=reason,
        on_time=on_time,
        data=data,
    )
    if case.status != to_status or action == "submit":
        _queue_notification(session, case, to_status, action)
    case.status = to_status
    case.updated_at = at
    session.add(case)
    session.add(event)  # flushed with the case at the next query or commit: fewer round trips
    return event


def _queue_notification(session: Session, case: Case, to_status: CaseStatus, action: str) -> None:
    """A resident who reached us by chat hears of the status changes the rules name."""
    if case.resident_id is None or to_status.value not in load_rules()["notify"]["statuses"]:
        return
    resident = session.get(Resident, case.resident_id)
    if resident is None or not resident.chat_id:
        return
    from core import jobs  # jobs imports models only; kept local to avoid a cycle at import

    jobs.enqueue(
        session,
        "notify_resident",
        {"case": case.number, "status": to_status.value, "action": action, "chat_id": resident.chat_id},
    )


def get_case(session: Session, number_or_id: str | int, *, lock: bool = False) -> Case:
    stmt = select(Case)
    if isinstance(number_or_id, int):
        stmt = stmt.where(Case.id == number_or_id)
    else:
        stmt = stmt.where(Case.number == str(number_or_id).strip())
    if lock:
        stmt = stmt.with_for_update()
    case = session.exec(stmt).first()
    if case is None:
        raise NotFound(f"no case {number_or_id}", case=str(number_or_id))
    return case


def _local_day(at: datetime, tz: str) -> str:
    return at.replace(tzinfo=ZoneInfo("UTC")).astimezone(ZoneInfo(tz)).strftime("%y%m%d")


def next_case_number(session: Session, at: datetime | None = None, tz: str = "Asia/Shanghai") -> str:
    """YYMMDD + a per-day sequence of at least four digits: short enough to read out
    digit by digit, sortable, and unique without a global counter row."""
    day = _local_day(at or utcnow(), tz)
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = (
        insert(CaseSequence)
        .values(day=day, last=1)
        .on_conflict_do_update(index_elements=["day"], set_={"last": CaseSequence.last + 1})
        .returning(CaseSequence.last)
    )
    seq = session.execute(stmt).scalar_one()
    return f"{day}{seq:04d}"


def find_resident_by_phone(session: Session, phone: str) -> Resident | None:
    from core.routing import phone_variants

    variants = sorted(phone_variants(phone))
    return session.exec(select(Resident).where(Resident.phone.in_(variants)).order_by(Resident.id)).first()


def _category_by_code(session: Session, code: str | None) -> Category | None:
    if not code:
        return None
    category = session.exec(select(Category).where(Category.code == code)).first()
    if category is None:
        raise InvalidInput(f"unknown category {code!r}", category=code)
    return category


# ---------------------------------------------------------------- intake


def submit_petition(session: Session, petition: Petition, *, actor: str = "system") -> tuple[Case, bool]:
    """Write a new case in status ``received``. Returns ``(case, created)``.

    The same ``idempotency_key`` (a CallSid, a chat update id) always yields the same
    case: retried webhooks and racing workers never make a second one.
    """
    if not petition.description.strip() and not petition.audio_path and not petition.photos:
        raise InvalidInput("a petition needs a description, a recording or a photo")
    if petition.idempotency_key:
        existing = session.exec(select(Case).where(Case.idempotency_key == petition.idempotency_key)).first()
        if existing is not None:
            return existing, False

    category = _category_by_code(session, petition.category_code)
    resident_id = petition.resident_id
    if resident_id is None and petition.contact_phone:
        resident = find_resident_by_phone(session, petition.contact_phone)
        resident_id = resident.id if resident else None

    now = utcnow()
    case = Case(
        number="",
        idempotency_key=petition.idempotency_key,
        channel=petition.channel,
        status=S.received,
        resident_id=resident_id,
        contact_phone=petition.contact_phone,
        description=petition.description.strip(),
        transcript=petition.transcript,
        transcript_confidence=petition.transcript_confidence,
        audio_path=petition.audio_path,
        photos=list(petition.photos) if petition.photos else None,
        flags=sorted(set(petition.flags)) or None,
        latitude=petition.latitude,
        longitude=petition.longitude,
        address_text=petition.address_text,
        category_id=category.id if category else None,
        urgency=petition.urgency,
        created_at=now,
        updated_at=now,
    )
    try:
        with session.begin_nested():
            case.number = next_case_number(session, now)
            session.add(case)
            session.flush()
    except IntegrityError:
        # Another worker committed the same idempotency key between our check and insert.
        existing = session.exec(select(Case).where(Case.idempotency_key == petition.idempotency_key)).first()
        if existing is None:
            raise
        return existing, False
    _event(session, case, "submit", actor, S.received, reason=f"via {petition.channel.value}", at=now)
    return case, True


def classify(
    session: Session,
    case: Case,
    *,
    actor: str,
    category_code: str | None = None,
    urgency: Urgency | None = None,
    description: str | None = None,
    reason: str | None = None,
) -> Case:
    """Set category, urgency or the reviewed description (an operator correcting a transcript)."""
    _check(case, "classify")
    changes: dict[str, object] = {}
    if category_code is not None:
        category = _category_by_code(session, category_code)
        changes["category"] = category.code
        case.category_id = category.id
    if urgency is not None:
        changes["urgency"] = urgency.value
        case.urgency = urgency
    if description is not None and description.strip() != case.description:
        changes["description_before"] = case.description
        case.description = description.strip()
    if not changes:
        raise InvalidInput("classify needs a category, an urgency or a description")
    _event(session, case, "classify", actor, case.status, reason=reason, data=changes)
    return case


def locate(
    session: Session, case: Case, *, actor: str, grid_id: int, reason: str, confidence: float | None = None
) -> Case:
    """Record which grid the case belongs to (by routing or an operator), before dispatch."""
    _check(case, "classify")
    if session.get(Grid, grid_id) is None:
        raise NotFound(f"no grid {grid_id}")
    case.grid_id = grid_id
    case.routing_reason = reason[:256]
    case.routing_confidence = confidence
    _event(session, case, "locate", actor, case.status, reason=reason,
           data={"grid_id": grid_id, "confidence": confidence})
    return case


def _grid_at_level(session: Session, grid: Grid, level: GridLevel) -> Grid | None:
    """The ancestor (or the grid itself) at ``level``."""
    node: Grid | None = grid
    while node is not None and node.level != level:
        node = session.get(Grid, node.parent_id) if node.parent_id else None
    return node


def responsible_worker(session: Session, grid_id: int) -> Worker | None:
    """Who takes a case in this grid: by the role order of rules.toml ``[dispatch]`` (the
    paid grid worker before a volunteer micro-grid leader), then leaders first, then code."""
    rank = {role: i for i, role in enumerate(load_rules()["dispatch"]["role_order"])}
    rows = session.exec(
        select(Worker, WorkerGrid.is_leader)
        .join(WorkerGrid, WorkerGrid.worker_id == Worker.id)
        .where(WorkerGrid.grid_id == grid_id, Worker.active == True)  # noqa: E712
    ).all()
    if not rows:
        return None
    return min(rows, key=lambda r: (rank.get(r[0].role.value, len(rank)), not r[1], r[0].code))[0]


def _owner_for(session: Session, grid: Grid, level: GridLevel) -> tuple[Grid, GridLevel, Worker]:
    """The grid and worker that own a case at ``level``; climbs the ladder past levels
    with nobody on duty, because a case must never sit with no owner."""
    start = GRID_LEVELS.index(level)
    for lvl in GRID_LEVELS[start:]:
        owner_grid = _grid_at_level(session, grid, lvl)
        if owner_grid is None:
            continue
        worker = responsible_worker(session, owner_grid.id)
        if worker is not None:
            return owner_grid, lvl, worker
    raise InvalidInput(f"no worker is responsible for grid {grid.code} or any grid above it")


def _deadlines(session: Session, case: Case, at: datetime) -> tuple[datetime, datetime]:
    from core import sla

    return sla.deadlines_for_case(session, case, at)


def dispatch(
    session: Session,
    case: Case,
    *,
    actor: str,
    grid_id: int | None = None,
    worker_id: int | None = None,
    department_id: int | None = None,
    level: GridLevel | None = None,
    reason: str | None = None,
    routing_confidence: float | None = None,
) -> Case:
    """Hand the case to a grid's worker (and the category's department), start the clocks."""
    _check(case, "dispatch")
    grid_id = grid_id or case.grid_id
    if grid_id is None:
        raise InvalidInput(f"case {case.number}: choose a grid before dispatching")
    grid = session.get(Grid, grid_id)
    if grid is None:
        raise NotFound(f"no grid {grid_id}")
    level = level or case.owner_level or (GridLevel.micro if grid.level == GridLevel.micro else grid.level)
    if worker_id is not None:
        worker = session.get(Worker, worker_id)
        if worker is None or not worker.active:
            raise InvalidInput(f"worker {worker_id} does not exist or is inactive")
        owner_grid, owner_level = grid, grid.level
    else:
        owner_grid, owner_level, worker = _owner_for(session, grid, level)
    if department_id is None and case.category_id is not None:
        category = session.get(Category, case.category_id)
        department_id = category.department_id if category else None

    now = utcnow()
    case.grid_id = grid.id
    case.owner_level = owner_level
    case.worker_id = worker.id
    case.department_id = department_id
    case.dispatched_at = now
    case.response_due, case.resolution_due = _deadlines(session, case, now)
    if routing_confidence is not None:
        case.routing_confidence = routing_confidence
    if reason and not case.routing_reason:
        case.routing_reason = reason[:256]
    _event(
        session,
        case,
        "dispatch",
        actor,
        S.dispatched,
        reason=reason,
        data={"grid": owner_grid.code, "level": owner_level.value, "worker": worker.code},
        at=now,
    )
    return case


def accept(session: Session, case: Case, *, actor: str) -> Case:
    _check(case, "accept")
    now = utcnow()
    on_time = case.response_due is None or now <= case.response_due
    case.accepted_at = now
    if case.responded_on_time is None:  # the first response is the one that counts
        case.responded_on_time = on_time
    _event(session, case, "accept", actor, S.accepted, on_time=on_time, at=now)
    return case


def start(session: Session, case: Case, *, actor: str, note: str | None = None) -> Case:
    _check(case, "start")
    _event(session, case, "start", actor, S.in_progress, reason=note)
    return case


def report_done(
    session: Session, case: Case, *, actor: str, note: str, photos: list[str] | None = None
) -> Case:
    """The handler says it is done (回单), with a note and optionally photos."""
    _check(case, "report_done")
    if not note.strip():
        raise InvalidInput("report what was done: the note may not be empty")
    now = utcnow()
    on_time = case.resolution_due is None or now <= case.resolution_due
    case.reported_done_at = now
    case.resolved_on_time = on_time
    _event(session, case, "report_done", actor, S.reported_done, reason=note, on_time=on_time,
           data={"photos": photos} if photos else None, at=now)
    return case


def verify(session: Session, case: Case, *, actor: str, passed: bool = True, note: str | None = None) -> Case:
    """The check (核查) of reported work. Passing starts the follow-up survey; failing
    sends the case back to its owner."""
    _check(case, "verify")
    now = utcnow()
    if passed:
        case.verified_at = now
        _event(session, case, "verify", actor, S.verified, reason=note, at=now)
        start_survey(session, case)
    else:
        if not note:
            raise InvalidInput("say why the check failed")
        case.reported_done_at = None
        _event(session, case, "verify", actor, S.in_progress, reason=note, data={"passed": False}, at=now)
    return case


def start_survey(session: Session, case: Case) -> Survey:
    """Open the follow-up (回访) and queue its first attempt on the resident's channel."""
    from core import jobs

    resident = session.get(Resident, case.resident_id) if case.resident_id else None
    channel = "chat" if resident is not None and resident.chat_id else "phone"
    survey = Survey(case_id=case.id, channel=channel)
    session.add(survey)
    session.flush()
    jobs.enqueue(session, f"survey_{channel}", {"survey_id": survey.id, "case": case.number},
                 dedupe_key=f"survey:{survey.id}:1")
    return survey


def _clear_ownership(case: Case) -> None:
    case.dispatched_at = None
    case.response_due = None
    case.resolution_due = None
    case.accepted_at = None
    case.reported_done_at = None
    case.verified_at = None
    case.worker_id = None


def reopen(session: Session, case: Case, *, actor: str, reason: str) -> Case:
    """重办: back to triage/dispatch with the clocks stopped until it is dispatched again."""
    _check(case, "reopen")
    if not reason.strip():
        raise InvalidInput("say why the case is reopened")
    case.reopen_count += 1
    case.closed_at = None
    case.close_reason = None
    _clear_ownership(case)
    _event(session, case, "reopen", actor, S.reopened, reason=reason, data={"reopen_count": case.reopen_count})
    return case


def return_case(session: Session, case: Case, *, actor: str, reason: str) -> Case:
    """退单: the grid or department says the case is not theirs."""
    _check(case, "return")
    if not reason.strip():
        raise InvalidInput("say why the case is returned")
    previous = {"worker_id": case.worker_id, "grid_id": case.grid_id}
    _clear_ownership(case)
    case.owner_level = None
    _event(session, case, "return", actor, S.returned, reason=reason, data=previous)
    return case


def escalate(session: Session, case: Case, *, actor: str, reason: str) -> Case:
    """升级: ownership climbs one level of the ladder; the new owner must accept anew.
    The resolution deadline is the resident's and stays; the response clock restarts."""
    _check(case, "escalate")
    if case.grid_id is None:
        raise InvalidInput(f"case {case.number} has no grid to escalate from")
    from core.sla import next_owner_level

    current = case.owner_level or GridLevel.micro
    higher = next_owner_level(current)
    if higher is None:
        raise IllegalTransition(f"case {case.number} is already owned at the top level ({current.value})")
    grid = session.get(Grid, case.grid_id)
    owner_grid, owner_level, worker = _owner_for(session, grid, higher)
    now = utcnow()
    from_level = current.value
    resolution_due = case.resolution_due
    case.owner_level = owner_level
    case.worker_id = worker.id
    case.escalation_count += 1
    case.dispatched_at = now
    response_due, new_resolution = _deadlines(session, case, now)
    case.response_due = response_due
    case.resolution_due = resolution_due or new_resolution
    case.accepted_at = None
    _event(session, case, "escalate", actor, S.dispatched, reason=reason,
           data={"from_level": from_level, "to_level": owner_level.value, "grid": owner_grid.code,
                 "worker": worker.code}, at=now)
    return case


def merge(session: Session, case: Case, into: Case, *, actor: str, reason: str | None = None) -> Case:
    """A duplicate joins an earlier case; its resident follows the earlier one."""
    _check(case, "merge")
    if into.id == case.id:
        raise InvalidInput("a case cannot be merged into itself")
    if into.status not in (set(CaseStatus) - {S.merged, S.closed}):
        raise IllegalTransition(f"case {into.number} is {into.status.value}; merge into an open case")
    case.merged_into_id = into.id
    _clear_ownership(case)
    _event(session, case, "merge", actor, S.merged, reason=reason, data={"into": into.number})
    _event(session, into, "absorb", actor, into.status, reason=reason, data={"duplicate": case.number})
    return case


def close(session: Session, case: Case, *, actor: str, reason: str) -> Case:
    """结案. From ``verified`` after the survey; from triage only with a reason
    (not a petition, withdrawn by the resident)."""
    _check(case, "close")
    if not reason.strip():
        raise InvalidInput("say why the case is closed")
    case.closed_at = utcnow()
    case.close_reason = reason[:64]
    _event(session, case, "close", actor, S.closed, reason=reason, at=case.closed_at)
    return case


def annotate(session: Session, case: Case, *, actor: str, note: str, data: dict | None = None) -> CaseEvent:
    """A note on the case (operator remark, call attempt); changes no state."""
    _check(case, "annotate")
    return _event(session, case, "note", actor, case.status, reason=note, data=data)


def set_flags(session: Session, case: Case, *, actor: str, add: tuple[str, ...] = (), remove: tuple[str, ...] = ()) -> Case:
    flags = (set(case.flags or []) | set(add)) - set(remove)
    if flags == set(case.flags or []):
        return case
    case.flags = sorted(flags) or None
    _event(session, case, "flag", actor, case.status, data={"add": list(add), "remove": list(remove)})
    return case


# ---------------------------------------------------------------- survey


SOLVED = ("solved", "partly", "not")
SATISFIED = ("satisfied", "basically", "not")


def record_survey(
    session: Session,
    survey: Survey,
    *,
    solved: str,
    satisfied: str,
    comment: str | None = None,
    actor: str = "resident",
) -> Case:
    """A resident's answer, from a phone keypad or chat buttons alike. Satisfied closes the
    case; dissatisfied reopens it, and after the allowed reopenings also escalates it."""
    if solved not in SOLVED or satisfied not in SATISFIED:
        raise InvalidInput(f"survey answers must be one of {SOLVED} and {SATISFIED}")
    if survey.status != SurveyStatus.pending:
        raise IllegalTransition(f"survey {survey.id} is already {survey.status.value}")
    case = session.get(Case, survey.case_id)
    _check(case, "record_survey")
    survey.solved, survey.satisfied, survey.comment = solved, satisfied, comment
    survey.status = SurveyStatus.answered
    survey.answered_at = utcnow()
    session.add(survey)
    answer = {"survey_id": survey.id, "solved": solved, "satisfied": satisfied}
    if satisfied != "not" and solved != "not":
        case.closed_at = utcnow()
        case.close_reason = f"survey:{satisfied}"
        _event(session, case, "close", actor, S.closed, reason=comment, data=answer, at=case.closed_at)
        return case
    reopen(session, case, actor=actor, reason=comment or "resident not satisfied")
    if case.reopen_count > load_rules()["survey"]["reopen_without_escalation"] and case.grid_id:
        # Dissatisfied again: dispatch straight to the next level up.
        from core.sla import next_owner_level

        current = case.owner_level or GridLevel.micro
        dispatch(session, case, actor="system", level=next_owner_level(current) or current,
                 reason="dissatisfied again: dispatched one level up")
    return case


def survey_unreachable(session: Session, survey: Survey, *, actor: str = "system") -> Case:
    """All attempts failed: the case closes as not evaluated (不参与评价)."""
    if survey.status != SurveyStatus.pending:
        raise IllegalTransition(f"survey {survey.id} is already {survey.status.value}")
    case = session.get(Case, survey.case_id)
    _check(case, "record_survey")
    survey.status = SurveyStatus.unreachable
    session.add(survey)
    case.closed_at = utcnow()
    case.close_reason = "not_evaluated"
    _event(session, case, "close", actor, S.closed, reason="resident unreachable",
           data={"survey_id": survey.id, "attempts": survey.attempts}, at=case.closed_at)
    return case


def idempotency_key(*parts: object) -> str:
    """A stable key from channel identifiers (e.g. ("hotline", CallSid))."""
    raw = "|".join(str(p) for p in parts)
    return raw if len(raw) <= 120 else hashlib.sha256(raw.encode()).hexdigest()
