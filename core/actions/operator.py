"""Writers of the operator's desk (话务员/坐席) and the system acting for it: classify,
place and dispatch a case, take it back, merge duplicates, close, reopen, annotate."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from core.actions._base import S, check, clear_ownership, event
from core.actions.intake import category_by_code
from core.cases import catalogue, limits
from core.cases.models import Case, CaseEvent, CaseStatus, Urgency
from core.deadlines import sla
from core.errors import IllegalTransition, InvalidInput, NotFound
from core.people.models import Worker
from core.people.owners import owner_for
from core.places.models import Grid, GridLevel
from core.platform.clock import utcnow
from core.platform.db import keep
from core.platform.i18n import ROUTING_TRACE


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
    check(case, "classify")
    limits.check_text("description", description)
    limits.check_text("reason", reason)
    changes: dict[str, object] = {}
    if category_code is not None:
        category = category_by_code(session, category_code)
        changes["category"] = category.code
        case.category_id = category.id
    if urgency is not None:
        changes["urgency"] = urgency.value
        case.urgency = urgency
    if description is not None and description.strip() != case.description:
        changes["description_before"] = case.description
        case.description = description.strip()
    if not changes:
        raise InvalidInput("classify needs a category, an urgency or a description",
                           code="classify.nothing_to_change")
    event(session, case, "classify", actor, case.status, reason=reason, data=changes)
    return case


def locate(
    session: Session, case: Case, *, actor: str, grid_id: int, reason: str | None = None,
    confidence: float | None = None, trace: list[dict] | tuple[dict, ...] | None = None,
) -> Case:
    """Record which grid the case belongs to (by routing or an operator), before dispatch.
    Routing gives its ``trace`` (codes, core.places.routing.step) and no reason; an operator
    a reason (typed, or a console code)."""
    check(case, "classify")
    if trace:
        reason = ROUTING_TRACE
    if not reason:
        raise InvalidInput("locate needs a reason or a routing trace", code="routing.no_reason")
    limits.check_text("reason", reason)
    grid = session.get(Grid, grid_id)
    if grid is None:
        raise NotFound(f"no grid {grid_id}", code="grid.not_found", grid=grid_id)
    keep(session, grid)  # dispatch, next, reads it again
    case.grid_id = grid_id
    case.routing_trace = list(trace) if trace else None
    case.routing_reason = None if trace else reason[:256]
    case.routing_confidence = confidence
    data: dict = {"grid_id": grid_id, "confidence": confidence}
    if trace:
        data["routing_trace"] = list(trace)
    event(session, case, "locate", actor, case.status, reason=reason, data=data)
    return case


def deadlines(session: Session, case: Case, at: datetime) -> tuple[datetime, datetime]:
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
    check(case, "dispatch")
    limits.check_text("reason", reason)
    grid_id = grid_id or case.grid_id
    if grid_id is None:
        raise InvalidInput(f"case {case.number}: choose a grid before dispatching",
                           code="routing.no_grid", case=case.number)
    grid = session.get(Grid, grid_id)
    if grid is None:
        raise NotFound(f"no grid {grid_id}", code="grid.not_found", grid=grid_id)
    level = level or case.owner_level or (GridLevel.micro if grid.level == GridLevel.micro else grid.level)
    if worker_id is not None:
        worker = session.get(Worker, worker_id)
        if worker is None or not worker.active:
            raise InvalidInput(f"worker {worker_id} does not exist or is inactive",
                               code="worker.not_active", worker=worker_id)
        owner_grid, owner_level = grid, grid.level
    else:
        owner_grid, owner_level, worker = owner_for(session, grid, level)
    if department_id is None and case.category_id is not None:
        category = catalogue.category_by_id(session, case.category_id)
        department_id = category.department_id if category else None

    now = utcnow()
    case.grid_id = grid.id
    case.owner_level = owner_level
    case.worker_id = worker.id
    case.department_id = department_id
    case.dispatched_at = now
    case.response_due, case.resolution_due = deadlines(session, case, now)
    if routing_confidence is not None:
        case.routing_confidence = routing_confidence
    if reason and reason != ROUTING_TRACE and not case.routing_reason and not case.routing_trace:
        case.routing_reason = reason[:256]
    event(
        session,
        case,
        "dispatch",
        actor,
        S.dispatched,
        reason=reason,
        data={"grid": owner_grid.code, "level": owner_level.value, "worker": worker.code,
              **({"routing_trace": case.routing_trace} if reason == ROUTING_TRACE and case.routing_trace else {})},
        at=now,
    )
    return case


def reopen(session: Session, case: Case, *, actor: str, reason: str) -> Case:
    """重办: back to triage/dispatch with the clocks stopped until it is dispatched again."""
    check(case, "reopen")
    if not reason.strip():
        raise InvalidInput("say why the case is reopened", code="reopen.reason_required")
    limits.check_text("reason", reason)
    case.reopen_count += 1
    case.closed_at = None
    case.close_reason = None
    clear_ownership(case)
    event(session, case, "reopen", actor, S.reopened, reason=reason, data={"reopen_count": case.reopen_count})
    return case


def return_case(session: Session, case: Case, *, actor: str, reason: str) -> Case:
    """退单: the grid or department says the case is not theirs."""
    check(case, "return")
    if not reason.strip():
        raise InvalidInput("say why the case is returned", code="return.reason_required")
    limits.check_text("reason", reason)
    previous = {"worker_id": case.worker_id, "grid_id": case.grid_id}
    clear_ownership(case)
    case.owner_level = None
    event(session, case, "return", actor, S.returned, reason=reason, data=previous)
    return case


def merge(session: Session, case: Case, into: Case, *, actor: str, reason: str | None = None) -> Case:
    """A duplicate joins an earlier case; its resident follows the earlier one."""
    check(case, "merge")
    limits.check_text("reason", reason)
    if into.id == case.id:
        raise InvalidInput("a case cannot be merged into itself", code="merge.same_case", case=case.number)
    if into.status not in (set(CaseStatus) - {S.merged, S.closed}):
        raise IllegalTransition(f"case {into.number} is {into.status.value}; merge into an open case",
                                code="merge.into_closed", case=into.number, status=into.status.value)
    case.merged_into_id = into.id
    clear_ownership(case)
    event(session, case, "merge", actor, S.merged, reason=reason, data={"into": into.number})
    event(session, into, "absorb", actor, into.status, reason=reason, data={"duplicate": case.number})
    return case


def close(session: Session, case: Case, *, actor: str, reason: str) -> Case:
    """结案. From ``verified`` after the survey; from triage only with a reason
    (not a petition, withdrawn by the resident)."""
    check(case, "close")
    if not reason.strip():
        raise InvalidInput("say why the case is closed", code="close.reason_required")
    limits.check_text("reason", reason)
    case.closed_at = utcnow()
    case.close_reason = reason[:64]
    event(session, case, "close", actor, S.closed, reason=reason, at=case.closed_at)
    return case


def annotate(session: Session, case: Case, *, actor: str, note: str, data: dict | None = None) -> CaseEvent:
    """A note on the case (operator remark, call attempt); changes no state."""
    check(case, "annotate")
    limits.check_text("note", note)
    return event(session, case, "note", actor, case.status, reason=note, data=data)


def set_flags(session: Session, case: Case, *, actor: str, add: tuple[str, ...] = (),
              remove: tuple[str, ...] = ()) -> Case:
    flags = (set(case.flags or []) | set(add)) - set(remove)
    if flags == set(case.flags or []):
        return case
    case.flags = sorted(flags) or None
    event(session, case, "flag", actor, case.status, data={"add": list(add), "remove": list(remove)})
    return case
