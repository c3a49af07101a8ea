"""A resident who reached us by chat hears of the status changes rules.toml ``[notify]``
names. This is the chat's subscriber to case changes (``core.cases.events``): it queues a
``notify_resident`` job in the action's transaction; ``chat/followup.py`` sends it once
the change has committed."""

from __future__ import annotations

from core.cases import events
from core.cases.events import CaseChange
from core.cases.queries import absorbed_cases
from core.people.models import Resident
from core.platform import jobs
from core.platform.rules import load_rules

NOTIFY_JOB = jobs.declare("notify_resident", "chat/followup.py: a resident's chat hears of a status change")


def on_case_change(change: CaseChange) -> None:
    """The case's resident hears of its new status, and so does the resident of each
    duplicate merged into it, under the number that resident was given."""
    if not change.status_changed:
        return
    if change.to_status.value not in load_rules()["notify"]["statuses"]:
        return
    told: set[str] = set()
    for case in (change.case, *absorbed_cases(change.session, change.case)):
        resident = change.session.get(Resident, case.resident_id) if case.resident_id is not None else None
        if resident is None or not resident.chat_id or resident.chat_id in told:
            continue  # the same resident twice (a repeat message) hears it once
        told.add(resident.chat_id)
        jobs.enqueue(
            change.session,
            NOTIFY_JOB,
            {"case": case.number, "status": change.to_status.value, "action": change.action,
             "chat_id": resident.chat_id},
        )


def subscribe() -> None:
    """Registered at start-up by the composition root (``gridline.wiring``)."""
    events.subscribe("chat.notice", on_case_change)
