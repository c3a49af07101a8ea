"""Writers a channel calls for a resident: a new petition and the files that come with it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy import bindparam
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, select

from core.actions._base import S, check, event
from core.cases import catalogue, filed_here, limits
from core.cases.catalogue import CategoryRef
from core.cases.models import Attachment, Case, Channel, Urgency
from core.cases.numbering import next_case_number
from core.errors import InvalidInput
from core.people.models import Resident
from core.places.routing import phone_variants, registered_under
from core.platform import media_types, uploads
from core.platform.clock import utcnow
from core.platform.db import keep
from core.platform.uploads import FileRef

# Flag of a hotline case part of whose recording could be kept nowhere (``ivr.calls``); its
# submit event says how many seconds were heard and kept.
RECORDING_INCOMPLETE = "recording_incomplete"


@dataclass(frozen=True)
class Petition:
    """What a channel knows when a resident has finished describing a problem."""

    channel: Channel
    description: str
    idempotency_key: str | None = None
    contact_phone: str | None = None
    resident_id: int | None = None
    transcript: list[dict] | None = None
    transcript_confidence: float | None = None
    # New files (the caller's recordings) and files kept before the case existed (a chat
    # voice note or photo, saved as an unattached Attachment the moment it arrived).
    files: tuple[FileRef, ...] = ()
    attachment_ids: tuple[int, ...] = ()
    latitude: float | None = None
    longitude: float | None = None
    address_text: str | None = None
    category_code: str | None = None
    urgency: Urgency = Urgency.normal
    flags: tuple[str, ...] = ()
    # The resident asked that their details be kept confidential (保密处理, GB/T 33358-2016).
    confidential: bool = False
    # What the submit event says besides (a flag's detail: ``recording_incomplete``'s seconds kept).
    event_data: dict | None = None

    @property
    def heard(self) -> bool:
        """Words a machine wrote down from a voice (a call, a voice note): never refused."""
        return self.transcript is not None or self.channel == Channel.hotline

    @property
    def recording_lost(self) -> bool:
        """A call whose caller spoke, but whose recording no instance can reach any more (the
        one that heard it is gone with its disk) and whose words were never recognised: still
        a case, so an operator calls the resident back."""
        return self.channel == Channel.hotline and RECORDING_INCOMPLETE in self.flags


# Built once (intake asks it for every caller); the number's spellings are its parameter.
_RESIDENT_BY_PHONES = select(Resident).where(Resident.phone.in_(bindparam("phones", expanding=True))) \
    .order_by(Resident.id)


def find_resident_by_phone(session: Session, phone: str) -> Resident | None:
    resident = session.scalars(_RESIDENT_BY_PHONES, {"phones": sorted(phone_variants(phone))}).first()
    if resident is not None:
        keep(session, resident)  # what follows the new case (a chat notice) reads it again
    return resident


def category_by_code(session: Session, code: str | None) -> CategoryRef | None:
    if not code:
        return None
    category = catalogue.category(session, code)
    if category is None:
        raise InvalidInput(f"unknown category {code!r}", category=code, code="intake.unknown_category")
    return category


# Built once: the statement's cache key is then the same for every petition (one built per
# call costs more Python than the flush it replaces). The row goes in as parameters.
_CASE_COLUMNS = tuple(c.key for c in Case.__table__.columns if c.key != "id")
# A new case's row starts from the model's own defaults (all immutable values), taken once:
# building a Case object only to read its attributes back cost more than the INSERT's Python.
_CASE_DEFAULTS = {key: getattr(Case(number="", channel=Channel.hotline), key) for key in _CASE_COLUMNS}
# A Core INSERT whose RETURNING row is loaded as the session's own Case (``from_statement``):
# less Python than the ORM's bulk INSERT with the same RETURNING, for the same object.
_INSERT_CASE = {postgres: select(Case).from_statement(
                    insert(Case.__table__).on_conflict_do_nothing(index_elements=["idempotency_key"])
                    .returning(*Case.__table__.columns))
                for postgres, insert in ((True, pg_insert), (False, sqlite_insert))}


def submit_petition(session: Session, petition: Petition, *, actor: str = "system",
                    key_checked: bool = False) -> tuple[Case, bool]:
    """Write a new case in status ``received``, with its files. Returns ``(case, created)``.

    The same ``idempotency_key`` (a CallSid, a chat dialog) always yields the same case:
    retried webhooks and racing processes never make a second one. ``key_checked``: the
    caller has just looked the key up in this transaction (intake does) and found no case;
    a racing process that files it meanwhile is still caught by the unique index.
    """
    if not petition.description.strip() and not petition.files and not petition.attachment_ids \
            and not petition.recording_lost:
        raise InvalidInput("a petition needs a description, a recording or a photo", code="intake.empty")
    if petition.idempotency_key and not key_checked:
        existing = session.exec(select(Case).where(Case.idempotency_key == petition.idempotency_key)).first()
        if existing is not None:
            return existing, False
    description, cut = petition.description.strip(), False
    if petition.heard:  # words from a voice: never refused, kept up to a cap
        description, cut = limits.keep_words(description)
    else:
        limits.check_text("description", description)
    address_text = petition.address_text
    if address_text is not None and not limits.fits("address", address_text):
        if not petition.heard:
            limits.check_text("address", address_text)
        address_text = address_text[:limits.limit_of("address")]  # heard, not typed: the recording has it all

    category = category_by_code(session, petition.category_code)
    resident_id = petition.resident_id
    if resident_id is None and petition.contact_phone:
        # the id alone, from the lookup routing asks for next (one statement for both)
        registered = registered_under(session, petition.contact_phone)
        if registered:
            resident_id = registered[0][4].id
            keep(session, registered[0][4])  # what follows the new case (a chat notice) reads it again

    now = utcnow()
    row = {
        **_CASE_DEFAULTS,
        "idempotency_key": petition.idempotency_key,
        "channel": petition.channel,
        "status": S.received,
        "resident_id": resident_id,
        "contact_phone": petition.contact_phone,
        "description": description,
        "transcript": petition.transcript,
        "transcript_confidence": petition.transcript_confidence,
        "flags": sorted(set(petition.flags) | ({limits.TEXT_CUT} if cut else set())) or None,
        "latitude": petition.latitude,
        "longitude": petition.longitude,
        "address_text": address_text,
        "category_id": category.id if category else None,
        "urgency": petition.urgency,
        "confidential": petition.confidential,
        "created_at": now,
        "updated_at": now,
    }
    row["number"] = next_case_number(session, now)
    # One INSERT … ON CONFLICT DO NOTHING RETURNING instead of a savepoint around the ORM's
    # flush (three statements, and the unit of work's bookkeeping for one row): the row
    # comes back as the session's own object. Nothing back: another worker committed the
    # same idempotency key between our check and this insert.
    inserted = session.scalars(_INSERT_CASE[session.get_bind().dialect.name == "postgresql"], row).first()
    if inserted is None:
        existing = session.exec(select(Case).where(Case.idempotency_key == petition.idempotency_key)).first()
        if existing is None:  # only that key's conflict is skipped, so its row exists
            raise RuntimeError(f"case with idempotency key {petition.idempotency_key!r} neither written nor found")
        return existing, False
    case = inserted
    filed_here.mark(session, case.id)
    linked = _link_files(session, case, petition.files, petition.attachment_ids)
    data = {"attachments": [_describe(a) for a in linked]} if linked else None
    if cut:  # say on the case that its words were cut, and how long they were
        data = {**(data or {}), "text_cut": {"kept": len(description), "said": len(petition.description.strip())}}
    if petition.event_data:
        data = {**(data or {}), **petition.event_data}
    if petition.confidential:  # the resident's own request, on the record of how the case came in
        data = {**(data or {}), "confidential": True}
    event(session, case, "submit", actor, S.received, reason=f"via {petition.channel.value}", data=data, at=now)
    return case, True


def hold(session: Session, case: Case, *, actor: str, reason: str, flags: tuple[str, ...],
         data: dict | None = None) -> bool:
    """Intake keeps a petition for an operator instead of dispatching it (a suggested
    duplicate, one petition too many from its sender): its flags put it in triage, and one
    ``hold`` event says why and links the earlier case. Already held: nothing new."""
    check(case, "annotate")
    present = set(case.flags or [])
    if set(flags) <= present:
        return False
    case.flags = sorted(present | set(flags))
    event(session, case, "hold", actor, case.status, reason=reason, data=data)
    return True


def attach(
    session: Session,
    case: Case,
    *,
    actor: str,
    files: tuple[FileRef, ...] | list[FileRef] = (),
    attachment_ids: tuple[int, ...] | list[int] = (),
    note: str | None = None,
) -> list[Attachment]:
    """Add files to a case (another recording of the call, a photo of the finished work).
    A file already attached is not attached twice; nothing new writes no event."""
    check(case, "annotate")
    limits.check_text("note", note)
    linked = _link_files(session, case, tuple(files), tuple(attachment_ids))
    if linked:
        event(session, case, "attach", actor, case.status, reason=note,
              data={"attachments": [_describe(a) for a in linked]})
    return linked


def _describe(att: Attachment) -> dict:
    return {"id": att.id, "kind": att.kind, "path": att.path}


def _link_files(session: Session, case: Case, files: tuple[FileRef, ...],
                attachment_ids: tuple[int, ...]) -> list[Attachment]:
    linked: list[Attachment] = []
    known = set()
    if files:
        known = set(session.exec(select(Attachment.path).where(Attachment.case_id == case.id)).all())
    for ref in files:
        if ref.path in known:
            continue
        known.add(ref.path)
        # a channel hands in the type it detected; nothing off the allow-list is ever recorded
        att = Attachment(case_id=case.id, kind=ref.kind, path=ref.path, mime_type=media_types.servable(ref.mime_type),
                         size=ref.size, sha256=ref.sha256)
        session.add(att)
        if ref.waiting_in:
            uploads.mark_waiting(session, att, ref.waiting_in)
        linked.append(att)
    if attachment_ids:
        rows = session.exec(select(Attachment).where(Attachment.id.in_(sorted(set(attachment_ids))))).all()
        found = {a.id for a in rows}
        missing = sorted(set(attachment_ids) - found)
        if missing:
            raise InvalidInput(f"no attachment {missing[0]}", attachment=missing[0],
                               code="intake.no_attachment")
        for att in rows:
            if att.case_id == case.id:
                continue
            if att.case_id is not None:
                raise InvalidInput(f"attachment {att.id} belongs to another case", attachment=att.id,
                                   code="intake.attachment_elsewhere")
            att.case_id = case.id
            session.add(att)
            linked.append(att)
    if linked:
        session.flush()  # ids for the event
    return linked


def idempotency_key(*parts: object) -> str:
    """A stable key from channel identifiers (e.g. ("hotline", CallSid))."""
    raw = "|".join(str(p) for p in parts)
    return raw if len(raw) <= 120 else hashlib.sha256(raw.encode()).hexdigest()
