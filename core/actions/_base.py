"""What every writer shares: the transition table, the check, and the event written with
each change."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, select

from core.cases import events, pending_events
from core.cases.events import CaseChange
from core.cases.models import Case, CaseStatus
from core.errors import IllegalTransition, NotFound
from core.platform.clock import utcnow
from core.platform.rules import load_rules

S = CaseStatus

# action -> statuses it may start from. This table is the lifecycle of DESIGN.md.
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
    "unmerge": frozenset({S.merged}),
    "close": frozenset({S.verified, S.received, S.returned}),
    "record_survey": frozenset({S.verified}),
    "annotate": frozenset(set(CaseStatus)),
    "shred": frozenset({S.closed, S.merged}),
}

# Statuses in which a case has an owner and running deadlines.
OWNED = frozenset({S.dispatched, S.accepted, S.in_progress, S.reported_done, S.verified})


def check(case: Case, action: str) -> None:
    if case.status not in TRANSITIONS[action]:
        allowed = ", ".join(sorted(s.value for s in TRANSITIONS[action]))
        raise IllegalTransition(
            f"case {case.number}: cannot {action} a case that is {case.status.value} "
            f"(allowed from: {allowed})",
            case=case.number,
            action=action,
            status=case.status.value,
            code="case.illegal_transition",
        )


def event(
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
) -> dict:
    """Move the case to ``to_status`` and write its ``CaseEvent`` (one per change); returns
    the event's values."""
    at = at or utcnow()
    from_status = case.status if action != "submit" else None
    settled = [f for f in load_rules()["flags"]["settled_by"].get(action, ()) if f in (case.flags or ())]
    if settled:  # the step settles them: the same event says so
        case.flags = sorted(set(case.flags) - set(settled)) or None
        data = {**(data or {}), "flags_cleared": settled}
    row = {"case_id": case.id, "at": at, "actor": actor, "action": action, "from_status": from_status,
           "to_status": to_status, "reason": reason, "on_time": on_time, "data": data}
    # Only what changes is assigned: a case left as it was stays clean, so the next flush
    # (the savepoint intake opens right after the submit) has no unit of work to run.
    if case.status != to_status:
        case.status = to_status
    if case.updated_at != at:
        case.updated_at = at
    session.add(case)
    pending_events.add(session, row)  # written with the case at the next flush: one INSERT for them all
    # What follows the change (SMS, chat notice, staff messages) is its subscribers' business.
    events.publish(CaseChange(session=session, case=case, action=action, actor=actor,
                              from_status=from_status, to_status=to_status, reason=reason, data=data, at=at))
    return row


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
        raise NotFound(f"no case {number_or_id}", case=str(number_or_id), code="case.not_found")
    return case


def clear_ownership(case: Case) -> None:
    case.dispatched_at = None
    case.response_due = None
    case.resolution_due = None
    case.accepted_at = None
    case.reported_done_at = None
    case.verified_at = None
    case.worker_id = None
