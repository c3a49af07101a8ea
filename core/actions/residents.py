"""Writers of a resident's contact details and contact wishes (do-not-call, no SMS). A
resident is not a case, so these write an ``AuditEntry`` (who, what, before and after)
instead of a ``CaseEvent``."""

from __future__ import annotations

from sqlmodel import Session

from core.actions.intake import find_resident_by_phone
from core.people import audit
from core.people.models import Resident
from core.places.routing import normalise_phone
from core.platform.clock import utcnow


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


def set_do_not_call(session: Session, resident: Resident, do_not_call: bool, *, actor: str) -> Resident:
    """Never phone this resident for a follow-up (or, ``False``, phoning is fine again)."""
    before = resident.do_not_call
    resident.do_not_call = do_not_call
    session.add(resident)
    if before != do_not_call:
        session.flush()
        audit.record(session, actor=actor, action="resident.do_not_call", target_type="resident",
                     target_id=resident.id, detail={"do_not_call": do_not_call, "before": before})
    return resident


def sms_opt_out(session: Session, resident: Resident, *, actor: str, word: str | None = None) -> Resident:
    """No more progress SMS for this resident (they replied 退订/TD)."""
    if resident.sms_opted_out_at is None:
        resident.sms_opted_out_at = utcnow()
        session.add(resident)
        session.flush()
        audit.record(session, actor=actor, action="resident.sms_opt_out", target_type="resident",
                     target_id=resident.id, detail={"word": word})
    return resident


def resident_for_phone(session: Session, phone: str, *, actor: str) -> Resident:
    """The resident registered under ``phone``; a caller who is not in the registry gets a
    row of their own (no household), so what they asked for (no SMS, no calls) is kept."""

    resident = find_resident_by_phone(session, phone)
    if resident is None:
        resident = Resident(phone=normalise_phone(phone) or phone.strip())
        session.add(resident)
        session.flush()
        audit.record(session, actor=actor, action="resident.create", target_type="resident",
                     target_id=resident.id, detail={"phone": resident.phone})
    return resident
