"""Writers of a resident's contact details. A resident is not a case, so these write an
``AuditEntry`` (who, what, before and after) instead of a ``CaseEvent``."""

from __future__ import annotations

from sqlmodel import Session

from core import audit
from core.models import Resident


def link_chat(session: Session, resident: Resident, chat_id: str, *, actor: str,
              language: str | None = None) -> Resident:
    """This chat speaks for this resident from now on (their own contact was shared)."""
    before = resident.chat_id
    resident.chat_id = str(chat_id)
    if language:
        resident.language = language
    session.add(resident)
    if before != resident.chat_id:
        session.flush()
        audit.record(session, actor=actor, action="resident.link_chat", target_type="resident",
                     target_id=resident.id, detail={"chat_id": resident.chat_id, "before": before})
    return resident


def set_phone(session: Session, resident: Resident, phone: str, *, actor: str) -> Resident:
    before = resident.phone
    resident.phone = phone
    session.add(resident)
    if before != phone:
        session.flush()
        audit.record(session, actor=actor, action="resident.set_phone", target_type="resident",
                     target_id=resident.id, detail={"phone": phone, "before": before})
    return resident
