"""The writer of supervision (督办): escalation one level up the grid ladder."""

from __future__ import annotations

from sqlmodel import Session

from core.actions._base import S, check, event
from core.actions.operator import deadlines
from core.cases import limits
from core.cases.models import Case
from core.deadlines.sla import next_owner_level
from core.errors import IllegalTransition, InvalidInput
from core.people.owners import owner_for
from core.places.models import Grid, GridLevel
from core.platform.clock import utcnow


def escalate(session: Session, case: Case, *, actor: str, reason: str, reason_params: dict | None = None) -> Case:
    """升级: ownership climbs one level of the ladder; the new owner must accept anew.
    The resolution deadline is the resident's and stays; the response clock restarts.
    ``reason`` is what a person typed, or a code the edges say (``reasons.<code>`` of the
    catalogues) filled with ``reason_params``."""
    check(case, "escalate")
    limits.check_text("reason", reason)
    if case.grid_id is None:
        raise InvalidInput(f"case {case.number} has no grid to escalate from",
                           code="escalate.no_grid", case=case.number)

    current = case.owner_level or GridLevel.micro
    higher = next_owner_level(current)
    if higher is None:
        raise IllegalTransition(f"case {case.number} is already owned at the top level ({current.value})",
                                code="escalate.at_top", case=case.number, level=current.value)
    grid = session.get(Grid, case.grid_id)
    owner_grid, owner_level, worker = owner_for(session, grid, higher)
    now = utcnow()
    from_level = current.value
    resolution_due = case.resolution_due
    case.owner_level = owner_level
    case.worker_id = worker.id
    case.escalation_count += 1
    case.dispatched_at = now
    response_due, new_resolution = deadlines(session, case, now)
    case.response_due = response_due
    case.resolution_due = resolution_due or new_resolution
    case.accepted_at = None
    event(session, case, "escalate", actor, S.dispatched, reason=reason,
          data={"from_level": from_level, "to_level": owner_level.value, "grid": owner_grid.code,
                "worker": worker.code, **({"reason_params": reason_params} if reason_params else {})}, at=now)
    return case
