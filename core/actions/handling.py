"""Writers of the handler (网格员, a department): accept (签收), start, report done (回单)."""

from __future__ import annotations

from sqlmodel import Session

from core.actions._base import S, check, event
from core.cases import limits
from core.cases.models import Case
from core.errors import InvalidInput
from core.platform.clock import utcnow


def accept(session: Session, case: Case, *, actor: str) -> Case:
    check(case, "accept")
    now = utcnow()
    on_time = case.response_due is None or now <= case.response_due
    case.accepted_at = now
    if case.responded_on_time is None:  # the first response is the one that counts
        case.responded_on_time = on_time
    event(session, case, "accept", actor, S.accepted, on_time=on_time, at=now)
    return case


def start(session: Session, case: Case, *, actor: str, note: str | None = None) -> Case:
    check(case, "start")
    limits.check_text("note", note)
    event(session, case, "start", actor, S.in_progress, reason=note)
    return case


def report_done(
    session: Session, case: Case, *, actor: str, note: str, photos: list[str] | None = None
) -> Case:
    """The handler says it is done (回单), with a note and optionally photos."""
    check(case, "report_done")
    if not note.strip():
        raise InvalidInput("report what was done: the note may not be empty", code="report.note_required")
    limits.check_text("note", note)
    now = utcnow()
    on_time = case.resolution_due is None or now <= case.resolution_due
    case.reported_done_at = now
    case.resolved_on_time = on_time
    event(session, case, "report_done", actor, S.reported_done, reason=note, on_time=on_time,
          data={"photos": photos} if photos else None, at=now)
    return case
