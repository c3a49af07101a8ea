"""Writers of a resident: a new resident (a chat's own, a caller's), their language, contact
details and contact wishes (do-not-call, no SMS), and a registered person moved by a
household import. A resident is not a case, so these write an ``AuditEntry`` (who, what,
before and after) instead of a ``CaseEvent``."""

from __future__ import annotations

from sqlmodel import Session, select

from core.actions.intake import find_resident_by_phone
from core.cases import limits
from core.people import audit
from core.people.models import AuditEntry, Resident
from core.places.routing import normalise_phone, phone_variants
from core.platform.clock import utcnow


def create_for_chat(session: Session, chat_id: int | str, *, actor: str, language: str,
                    name: str | None = None) -> Resident:
    """A chat that is nobody we know yet gets a resident of its own."""
    resident = Resident(chat_id=str(chat_id), language=language, name=limits.clip_name(name))
    session.add(resident)
    session.flush()
    audit.record(session, actor=actor, action="resident.create", target_type="resident",
                 target_id=resident.id, detail={"chat_id": resident.chat_id, "language": language})
    return resident


def set_language(session: Session, resident: Resident, language: str, *, actor: str) -> Resident:
    """The language the resident is spoken to in (their chat's, as it last spoke)."""
    before = resident.language
    resident.language = language
    session.add(resident)
    if before != language:
        session.flush()
        audit.record(session, actor=actor, action="resident.set_language", target_type="resident",
                     target_id=resident.id, detail={"language": language, "before": before})
    return resident


def rehouse(session: Session, resident: Resident, household_id: int, name: str | None, *, actor: str) -> Resident:
    """A registered person (found by phone) now belongs to ``household_id``, under ``name``
    when one is given (a household import's row for them)."""
    before = (resident.household_id, resident.name)
    resident.household_id, resident.name = household_id, name or resident.name
    session.add(resident)
    if before != (resident.household_id, resident.name):
        session.flush()
        audit.record(session, actor=actor, action="resident.rehouse", target_type="resident",
                     target_id=resident.id, detail={"household_id": household_id, "before": before[0],
                                                    "renamed": before[1] != resident.name})
    return resident


def link_chat(session: Session, resident: Resident, chat_id: str, *, actor: str,
              language: str | None = None) -> Resident:
    """This chat speaks for this resident from now on (their own contact was shared)."""
    before = resident.chat_id
    resident.chat_id = str(chat_id)
    if language:
        set_language(session, resident, language, actor=actor)
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


def link_verified_phone(session: Session, chat_id: str, phone: str, *, actor: str, language: str) -> Resident:
    """A chat proved it holds ``phone`` (an SMS code came back): the resident registered
    under that number speaks through this chat from now on, so their household and their
    hotline cases are the chat's too. A number nobody has yet goes on the chat's own
    resident. Returns the resident the number belongs to; one audit row says who linked what."""

    variants = sorted(phone_variants(phone))
    known = session.exec(select(Resident).where(Resident.phone.in_(variants))
                         .order_by(Resident.household_id.is_(None), Resident.id)).all()
    resident = next((r for r in known if r.chat_id in (None, "", chat_id)), None)
    if resident is not None:
        link_chat(session, resident, chat_id, actor=actor, language=language)
    else:
        own = session.exec(select(Resident).where(Resident.chat_id == chat_id).order_by(Resident.id)).first()
        resident = own or create_for_chat(session, chat_id, actor=actor, language=language)
        set_phone(session, resident, normalise_phone(phone) or phone.strip(), actor=actor)
    session.flush()
    audit.record(session, actor=actor, action="resident.verify_phone", target_type="resident",
                 target_id=resident.id, detail={"chat_id": chat_id, "phone": resident.phone,
                                                "registered": resident.household_id is not None,
                                                "taken_by_another_chat": [r.id for r in known if r is not resident]})
    return resident


def unlink_verified_phone(session: Session, chat_id: str, phone: str, *, actor: str) -> list[int]:
    """The chat gives up the number it verified (a changed number, a phone handed on): what
    ``link_verified_phone`` joined is taken apart. A resident registered under the number
    (a household, or a hotline caller) no longer speaks through this chat; on the chat's own
    resident the number is cleared, so no more progress SMS go to it. Cases stay with the
    resident who filed them. Returns the residents changed; an audit row for each says what was
    undone."""

    variants = sorted(phone_variants(phone))
    holders = session.exec(select(Resident).where(Resident.chat_id == chat_id, Resident.phone.in_(variants))
                           .order_by(Resident.id)).all()
    own_ids = {int(row.target_id) for row in session.exec(
        select(AuditEntry).where(AuditEntry.action == "resident.create", AuditEntry.target_type == "resident",
                                 AuditEntry.target_id.in_([str(r.id) for r in holders]))).all()
        if (row.detail or {}).get("chat_id") == chat_id}
    changed = []
    for resident in holders:
        if resident.id in own_ids and resident.household_id is None:
            resident.phone = None  # the chat's own resident: the number was only ever the chat's
            change = "phone_cleared"
        else:
            resident.chat_id = None  # someone we knew by this number before the chat linked to them
            change = "detached"
        session.add(resident)
        session.flush()
        audit.record(session, actor=actor, action="resident.unlink_phone", target_type="resident",
                     target_id=resident.id, detail={"chat_id": chat_id, "phone": normalise_phone(phone) or phone,
                                                    "change": change})
        changed.append(resident.id)
    if not changed:  # the number had already left the chat's residents: the unlink is still on record
        audit.record(session, actor=actor, action="resident.unlink_phone", target_type="chat", target_id=chat_id,
                     detail={"chat_id": chat_id, "phone": normalise_phone(phone) or phone, "change": None})
    return changed
