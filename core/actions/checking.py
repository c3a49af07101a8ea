"""The writer of the check (核查) of reported work, by a grid leader or a supervisor."""

from __future__ import annotations

from sqlmodel import Session

from core.actions._base import S, check, event
from core.actions.survey import start_survey
from core.cases import limits
from core.cases.models import Case
from core.errors import InvalidInput
from core.platform.clock import utcnow


def verify(session: Session, case: Case, *, actor: str, passed: bool = True, note: str | None = None) -> Case:
    """Passing starts the follow-up survey; failing sends the case back to its owner."""
    check(case, "verify")
    limits.check_text("note", note)
    now = utcnow()
    if passed:
        case.verified_at = now
        event(session, case, "verify", actor, S.verified, reason=note, at=now)
        start_survey(session, case)
    else:
        if not note:
            raise InvalidInput("say why the check failed", code="verify.reason_required")
        case.reported_done_at = None
        event(session, case, "verify", actor, S.in_progress, reason=note, data={"passed": False}, at=now)
    return case
