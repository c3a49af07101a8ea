"""Writers of the operator's desk (话务员/坐席) and the system acting for it: classify,
place and dispatch a case, take it back, merge duplicates (and undo a merge), close, reopen,
annotate."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import Session, select

from core.actions._base import S, check, clear_ownership, event
from core.actions.intake import category_by_code
from core.actions.survey_callers import (
    ask_callers,
    end_caller_survey,
    unanswered,
    withdraw_caller_survey,
)
from core.cases import catalogue, filed_here, limits
from core.cases.models import Case, CaseEvent, CaseStatus, Urgency
from core.deadlines import sla
from core.errors import IllegalTransition, InvalidInput, NotFound
from core.people.models import Worker
from core.people.owners import owner_for
from core.places.models import Grid, GridLevel
from core.platform.clock import utcnow
from core.platform.db import keep
from core.platform.i18n import ROUTING_TRACE
from core.platform.rules import load_rules


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


# What a merge takes from the duplicate and its undo gives back (the merge event keeps them).
MERGE_KEPT = ("status", "worker_id", "owner_level", "dispatched_at", "response_due", "resolution_due",
              "accepted_at", "reported_done_at", "verified_at", "flags")
_MERGE_TIMES = ("dispatched_at", "response_due", "resolution_due", "accepted_at", "reported_done_at", "verified_at")


def _as_it_is(case: Case) -> dict:
    out: dict = {}
    for key in MERGE_KEPT:
        value = getattr(case, key)
        out[key] = value.isoformat() if isinstance(value, datetime) else getattr(value, "value", value)
    return out


def merge(session: Session, case: Case, into: Case, *, actor: str, reason: str | None = None) -> Case:
    """A duplicate joins an earlier case; its resident follows the earlier one. The duplicate
    keeps its caller, words and files (the surviving case lists them); the merge event keeps
    what the duplicate was, so that ``unmerge`` can give it back within ``[merge] undo_hours``."""
    check(case, "merge")
    limits.check_text("reason", reason)
    if into.id == case.id:
        raise InvalidInput("a case cannot be merged into itself", code="merge.same_case", case=case.number)
    if into.status not in (set(CaseStatus) - {S.merged, S.closed}):
        raise IllegalTransition(f"case {into.number} is {into.status.value}; merge into an open case",
                                code="merge.into_closed", case=into.number, status=into.status.value)
    before = _as_it_is(case)
    case.merged_into_id = into.id
    filed_here.forget(session, into.id)
    clear_ownership(case)
    event(session, case, "merge", actor, S.merged, reason=reason, data={"into": into.number, "before": before})
    event(session, into, "absorb", actor, into.status, reason=reason, data={"duplicate": case.number})
    if into.status == S.verified:  # its follow-up has begun: the duplicate's caller is asked too
        ask_callers(session, into, [case])
    return case


def merged_at(session: Session, case: Case) -> datetime | None:
    """When the case was last merged (its latest ``merge`` event), or ``None``."""
    return session.exec(select(CaseEvent.at).where(CaseEvent.case_id == case.id, CaseEvent.action == "merge")
                        .order_by(CaseEvent.at.desc(), CaseEvent.id.desc()).limit(1)).first()


def undo_deadline(session: Session, case: Case) -> datetime | None:
    """Until when a merged case can be given back (``None``: it cannot, or is not merged)."""
    if case.status != S.merged or case.shredded_at is not None:
        return None
    at = merged_at(session, case)
    return at + timedelta(hours=float(load_rules()["merge"]["undo_hours"])) if at is not None else None


def unmerge(session: Session, case: Case, *, actor: str, reason: str | None = None) -> Case:
    """Undo a merge within ``[merge] undo_hours``: the duplicate comes back in the status,
    with the owner, deadlines and flags it had; its caller and files never left it. Both
    cases' timelines say so. Later the merge stands (the surviving case has moved on)."""
    check(case, "unmerge")
    limits.check_text("reason", reason)
    if case.shredded_at is not None:
        raise IllegalTransition(f"case {case.number} was shredded; its merge cannot be undone",
                                code="unmerge.shredded", case=case.number)
    row = session.exec(select(CaseEvent).where(CaseEvent.case_id == case.id, CaseEvent.action == "merge")
                       .order_by(CaseEvent.at.desc(), CaseEvent.id.desc()).limit(1)).first()
    hours = float(load_rules()["merge"]["undo_hours"])
    if row is None or utcnow() - row.at > timedelta(hours=hours):
        raise IllegalTransition(
            f"case {case.number} was merged more than {hours:g} hours ago; the merge can no longer be undone",
            code="unmerge.too_late", case=case.number, hours=f"{hours:g}")
    before = (row.data or {}).get("before") or {}
    into = session.get(Case, case.merged_into_id) if case.merged_into_id else None
    status = CaseStatus(before.get("status") or S.received.value)
    for key in _MERGE_TIMES:
        setattr(case, key, datetime.fromisoformat(before[key]) if before.get(key) else None)
    case.worker_id = before.get("worker_id")
    case.owner_level = GridLevel(before["owner_level"]) if before.get("owner_level") else None
    case.flags = before.get("flags") or None
    case.merged_into_id = None
    event(session, case, "unmerge", actor, status, reason=reason, data={"from": into.number if into else None})
    if into is not None:
        event(session, into, "unabsorb", actor, into.status, reason=reason, data={"duplicate": case.number})
        withdraw_caller_survey(session, into, case, actor=actor)
    return case


def close(session: Session, case: Case, *, actor: str, reason: str) -> Case:
    """结案. From ``verified`` after the survey; from triage only with a reason
    (not a petition, withdrawn by the resident). Closed so, without the survey's answer, every
    follow-up still waiting is withdrawn: the other callers of merged duplicates are not asked
    after all (an answer of theirs could otherwise reopen a case closed on purpose)."""
    check(case, "close")
    if not reason.strip():
        raise InvalidInput("say why the case is closed", code="close.reason_required")
    limits.check_text("reason", reason)
    case.closed_at = utcnow()
    case.close_reason = reason[:64]
    event(session, case, "close", actor, S.closed, reason=reason, at=case.closed_at)
    for survey in unanswered(session, case):
        end_caller_survey(session, case, survey, actor=actor, reason="survey.closed_without")
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


def set_confidential(session: Session, case: Case, *, actor: str, confidential: bool,
                     reason: str | None = None) -> Case:
    """Mark a case confidential (保密处理) or lift the mark: from then on workers, departments,
    Open311 and reports read it without the resident's name, phone or voice. Who may do it
    (operators, admins) is the console's rule. No change: no event. It is no flag: the case
    does not go to triage for it."""
    check(case, "annotate")
    limits.check_text("note", reason)
    if case.confidential == confidential:
        return case
    case.confidential = confidential
    event(session, case, "confidential", actor, case.status, reason=reason, data={"confidential": confidential})
    return case
