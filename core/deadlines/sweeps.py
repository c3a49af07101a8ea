"""The SLA sweep (督办): cases whose owner has not accepted in time climb one level.

Run periodically by the job runner (``sla_sweep`` jobs, one per slot across all
instances thanks to the dedupe key). An escalation restarts the response clock, so a case
climbs again only if the new owner also lets it lapse.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import select

from core import actions
from core.cases.models import Case, CaseStatus
from core.errors import DomainError
from core.platform import jobs
from core.platform.clock import utcnow
from core.platform.db import session_scope
from core.platform.rules import load_rules

SLA_SWEEP_JOB = jobs.declare("sla_sweep", "gridline/app.py: escalates cases whose deadline passed")

log = logging.getLogger(__name__)


def escalate_overdue(engine: Engine, *, now: datetime | None = None, limit: int = 500) -> list[str]:
    """Escalate dispatched cases past their response deadline; returns their numbers."""
    if not load_rules()["escalation"]["auto_on_response_breach"]:
        return []
    now = now or utcnow()
    with session_scope(engine) as session:
        ids = session.exec(
            select(Case.id).where(Case.status == CaseStatus.dispatched, Case.response_due < now)
            .order_by(Case.response_due).limit(limit)
        ).all()
    done: list[str] = []
    for case_id in ids:
        try:
            with session_scope(engine) as session:
                case = actions.get_case(session, case_id, lock=True)
                if case.status != CaseStatus.dispatched or not case.response_due or case.response_due >= now:
                    continue  # someone accepted it meanwhile
                actions.escalate(session, case, actor="system:sla", reason="sweep.response_overdue",
                                 reason_params={"due": f"{case.response_due:%Y-%m-%d %H:%M}"})
                done.append(case.number)
        except DomainError as exc:  # already at the top: nothing higher to hand it to
            log.info("sla sweep: case %s not escalated: %s", case_id, exc)
    return done


def sweep_period() -> timedelta:
    """rules.toml ``[sweeps] sla_period_minutes``: one sweep per slot of this length."""
    return timedelta(minutes=float(load_rules()["sweeps"]["sla_period_minutes"]))


def schedule_sweep(engine: Engine, every: timedelta | None = None) -> None:
    """Queue the sweep for the current slot (a no-op when another instance already did)."""
    every = every or sweep_period()
    now = utcnow()
    slot = int(now.timestamp() // every.total_seconds())
    with session_scope(engine) as session:
        jobs.enqueue(session, SLA_SWEEP_JOB, {}, dedupe_key=f"{SLA_SWEEP_JOB}:{slot}")
