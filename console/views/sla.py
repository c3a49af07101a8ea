"""SLA colour of a case on a list: response deadline until accepted, then resolution."""

from __future__ import annotations

from core.cases.models import Case, CaseStatus
from core.deadlines.sla import calendar_for, sla_colour
from core.platform.clock import utcnow

_RUNNING = {CaseStatus.dispatched, CaseStatus.accepted, CaseStatus.in_progress}


def colour(case: Case, calendar, now) -> str:  # noqa: ANN001
    if case.status not in _RUNNING or case.dispatched_at is None:
        return "none"
    due = case.response_due if case.status == CaseStatus.dispatched else case.resolution_due
    if due is None:
        return "none"
    return sla_colour(case.dispatched_at, due, now, calendar)


def colours(session, cases: list[Case]) -> dict[int, str]:  # noqa: ANN001
    if not cases:
        return {}
    calendar, now = calendar_for(session), utcnow()
    return {c.id: colour(c, calendar, now) for c in cases}
