"""The audit trail of what is not a case change: who changed a resident, a worker, a user,
and who looked at personal data. Case changes have their own trail (``CaseEvent``).
Written in the caller's transaction, with the change it records."""

from __future__ import annotations

from sqlmodel import Session

from core.people.models import AuditEntry
from core.platform.clock import utcnow


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    target_type: str,
    target_id: object | None = None,
    detail: dict | None = None,
    remote: str | None = None,
) -> AuditEntry:
    entry = AuditEntry(
        at=utcnow(),
        actor=actor[:64],
        action=action[:48],
        target_type=target_type[:32],
        target_id=None if target_id is None else str(target_id)[:64],
        detail=detail,
        remote=remote[:64] if remote else None,
    )
    session.add(entry)
    return entry
