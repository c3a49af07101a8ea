"""The writer of retention (保留期限): shredding a closed case's personal data.

What goes: the files (recordings, voice notes, photos: on disk and their ``Attachment``
rows), the hotline calls' numbers, recordings and transcripts, the description and the
transcript, the address and the point, the caller's number, the link to the resident (and
the resident's own name and number when nothing else of theirs is kept: no registered
household, no other case), free text in the case's events (notes, comments, routing
reasons, the text before a correction), survey comments, and free text copied into the
case's audit rows. What stays: the anonymous figures (category, grid, urgency, channel,
every time and on-time flag, the outcome and the survey's answers), so the rates of past
periods do not change. The case's ``shred`` event and an ``AuditEntry`` record it.

Files are removed through the media store (``core.platform.media``: the data directory or a bucket),
with any copy still waiting in this instance's spool, before the transaction commits: if
the commit fails (or the bucket cannot be reached, which stops the shredding), the rows
still name files that are gone, and the next run finishes the job; a file is never left
behind with no row naming it. A copy waiting in another instance's spool is dropped by its
``media_upload`` job, which finds no row waiting for it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from sqlmodel import Session, select

from core.actions._base import check, event
from core.cases.models import Attachment, CallSession, Case, CaseEvent
from core.errors import IllegalTransition
from core.followup.models import Survey
from core.people import audit
from core.people.models import AuditEntry, Resident
from core.platform.clock import utcnow
from core.platform.media import LocalStore, MediaStore
from core.platform.storage import resolve, stored_path

# Keys of event data that are figures or references, never a person's words or files.
KEPT_EVENT_DATA = frozenset({
    "grid", "grid_id", "level", "worker", "from_level", "to_level", "confidence", "category", "urgency",
    "survey_id", "solved", "satisfied", "attempt", "attempts", "outcome", "into", "duplicate",
    "reopen_count", "passed", "add", "remove", "worker_id",
})
# Keys of a case's audit rows that are not free text typed about the resident.
KEPT_AUDIT_DETAIL = frozenset({"phone_shown", "files", "attachment", "kind", "category", "urgency", "grid",
                               "worker", "department", "passed", "into"})


@dataclass
class Shredded:
    number: str
    files: int = 0
    bytes: int = 0
    calls: int = 0
    resident_cleared: bool = False
    missing: list[str] = field(default_factory=list)


def _close_reason(reason: str | None) -> str | None:
    """The outcome without what an operator typed after it (``withdrawn: 居民说…``)."""
    if not reason or reason.startswith("survey:"):
        return reason
    return reason.split(":", 1)[0].strip()[:64] or None


def _call_paths(call: CallSession) -> set[str]:
    paths = {call.audio_path} if call.audio_path else set()
    for seg in ((call.state or {}).get("segments") or {}).values():
        if isinstance(seg, dict) and seg.get("audio_path"):
            paths.add(str(seg["audio_path"]))
    return paths


def files_of(session: Session, case: Case, data_dir: str | os.PathLike
             ) -> tuple[list[Attachment], list[CallSession], set[str]]:
    """A case's attachments, its hotline calls (the petition's and the survey's) and the
    media key of every file they name (a recording named by both its attachment, relative
    to the data directory, and its call, by an absolute path, is one file)."""
    attachments = list(session.exec(select(Attachment).where(Attachment.case_id == case.id)).all())
    survey_ids = list(session.exec(select(Survey.id).where(Survey.case_id == case.id)).all())
    stmt = select(CallSession).where(CallSession.case_id == case.id)
    if survey_ids:
        stmt = select(CallSession).where((CallSession.case_id == case.id) | CallSession.survey_id.in_(survey_ids))
    calls = list(session.exec(stmt).all())
    stored = {a.path for a in attachments}
    for call in calls:
        stored |= _call_paths(call)
    return attachments, calls, {stored_path(resolve(p, data_dir).resolve(), data_dir) for p in stored}


def shred(session: Session, case: Case, *, actor: str, data_dir: str | os.PathLike,
          store: MediaStore | None = None) -> Shredded:
    """Shred one closed (or merged) case's personal data; see the module's docstring."""
    check(case, "shred")
    if case.shredded_at is not None:
        raise IllegalTransition(f"case {case.number} was already shredded on {case.shredded_at:%Y-%m-%d}",
                                code="case.already_shredded", case=case.number, date=f"{case.shredded_at:%Y-%m-%d}")
    out = Shredded(case.number)
    attachments, calls, keys = files_of(session, case, data_dir)
    store = store or LocalStore(Path(data_dir))
    for att in attachments:
        session.delete(att)
    for call in calls:
        call.from_number = call.to_number = None
        call.audio_path = None
        call.transcript = None
        call.state = None
        call.stream_token = None
        session.add(call)
    out.calls = len(calls)

    for survey in session.exec(select(Survey).where(Survey.case_id == case.id)).all():
        if survey.comment is not None:
            survey.comment = None
            session.add(survey)
    for ev in session.exec(select(CaseEvent).where(CaseEvent.case_id == case.id)).all():
        ev.reason = None
        if ev.data:
            ev.data = {k: v for k, v in ev.data.items() if k in KEPT_EVENT_DATA} or None
        session.add(ev)
    for entry in session.exec(select(AuditEntry).where(AuditEntry.target_type == "case",
                                                       AuditEntry.target_id == case.number)).all():
        if entry.detail:
            entry.detail = {k: v for k, v in entry.detail.items() if k in KEPT_AUDIT_DETAIL} or None
            session.add(entry)

    resident_id = case.resident_id
    case.contact_phone = None
    case.description = ""
    case.transcript = None
    case.address_text = None
    case.latitude = case.longitude = None
    case.routing_reason = None
    case.routing_trace = None  # what was heard, and a household code
    case.resident_id = None
    case.idempotency_key = None  # a CallSid or a chat's ids: a way back to the person
    case.close_reason = _close_reason(case.close_reason)
    case.shredded_at = utcnow()
    session.add(case)
    session.flush()
    if resident_id is not None:
        out.resident_cleared = _forget_resident(session, resident_id)

    for key in sorted(keys):
        size = store.stat(key)  # MediaUnavailable stops the shredding: nothing is committed
        spooled = store.spool_path(key)
        if not store.spool_is_store and spooled.is_file():  # still waiting for the bucket
            size = spooled.stat().st_size if size is None else size
            spooled.unlink()
        if size is None:
            out.missing.append(key)
            continue
        store.delete(key)
        out.bytes += size
        out.files += 1
    event(session, case, "shred", actor, case.status,
          data={"files": out.files, "calls": out.calls, "resident_cleared": out.resident_cleared})
    audit.record(session, actor=actor, action="case.shred", target_type="case", target_id=case.number,
                 detail={"files": out.files, "bytes": out.bytes, "calls": out.calls, "missing": len(out.missing),
                         "resident_cleared": out.resident_cleared})
    return out


def _forget_resident(session: Session, resident_id: int) -> bool:
    """A resident who is only a name and a number we kept for their cases (no registered
    household) loses both when their last case is shredded; the registry keeps its own."""
    resident = session.get(Resident, resident_id)
    if resident is None or resident.household_id is not None:
        return False
    if session.exec(select(Case.id).where(Case.resident_id == resident_id).limit(1)).first() is not None:
        return False
    if resident.name is None and resident.phone is None:
        return False
    resident.name = None
    resident.phone = None
    session.add(resident)
    audit.record(session, actor="system", action="resident.shred", target_type="resident", target_id=resident.id)
    return True


