"""What every writer shares: the transition table, the check, and the event written with
each change."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, select

from core.cases.models import Case, CaseEvent, CaseStatus
from core.errors import IllegalTransition, NotFound
from core.people.models import Resident
from core.platform import jobs
from core.platform.clock import utcnow
from core.platform.rules import load_rules

S = CaseStatus

NOTIFY_JOB = jobs.declare("notify_resident", "chat/followup.py: a resident's chat hears of a status change")

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
) -> CaseEvent:
    """Move the case to ``to_status`` and write its ``CaseEvent`` (one per change)."""
    at = at or utcnow()
    row = CaseEvent(
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
        queue_notification(session, case, to_status, action)
        from core.followup.sms import queue_progress_sms  # sms reads the survey's contact rules

        queue_progress_sms(session, case, to_status)
    case.status = to_status
    case.updated_at = at
    session.add(case)
    session.add(row)  # flushed with the case at the next query or commit: fewer round trips
    from core.people.staff import queue_case_messages  # staff imports models and rules only

    queue_case_messages(session, case, action, to_status, reason)
    return row


def queue_notification(session: Session, case: Case, to_status: CaseStatus, action: str) -> None:
    """A resident who reached us by chat hears of the status changes the rules name."""
    if case.resident_id is None or to_status.value not in load_rules()["notify"]["statuses"]:
        return
    resident = session.get(Resident, case.resident_id)
    if resident is None or not resident.chat_id:
        return
    jobs.enqueue(
        session,
        NOTIFY_JOB,
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


def clear_ownership(case: Case) -> None:
    case.dispatched_at = None
    case.response_due = None
    case.resolution_due = None
    case.accepted_at = None
    case.reported_done_at = None
    case.verified_at = None
    case.worker_id = None
