"""Read-side lookups the channels and console share (no writes here)."""

from __future__ import annotations

from sqlalchemy import or_
from sqlmodel import Session, select

from core.actions import OWNED
from core.cases.filed_here import filed_here
from core.cases.models import OPEN_STATUSES, Attachment, Case, CaseStatus
from core.people.models import Resident


def worker_queue(session: Session, worker_id: int, limit: int = 100) -> list[Case]:
    """A worker's open cases, most urgent deadline first."""
    return list(
        session.exec(
            select(Case)
            .where(Case.worker_id == worker_id, Case.status.in_([s for s in OWNED if s != CaseStatus.verified]))
            .order_by(Case.resolution_due, Case.id)
            .limit(limit)
        ).all()
    )


def resident_cases(session: Session, resident_id: int, limit: int = 20) -> list[Case]:
    return list(
        session.exec(
            select(Case).where(Case.resident_id == resident_id).order_by(Case.created_at.desc()).limit(limit)
        ).all()
    )


def absorbed_cases(session: Session, case: Case) -> list[Case]:
    """The duplicates merged into ``case`` (still merged: an undone merge is not one), oldest
    first. Their callers follow this case: they hear of its progress as its own caller does."""
    if filed_here(session, case.id):
        return []
    return list(session.exec(select(Case).where(Case.merged_into_id == case.id, Case.status == CaseStatus.merged)
                             .order_by(Case.id)).all())
def open_cases_of_caller(session: Session, phones: set[str], resident_id: int | None, limit: int = 5) -> list[Case]:
    """The open cases a caller filed, by their phone number (any of its spellings) or the
    resident the registry knows them as; newest first. A hotline caller with exactly one
    needs no case number to hear its status."""
    who = []
    if phones:
        who.append(Case.contact_phone.in_(sorted(phones)))
    if resident_id is not None:
        who.append(Case.resident_id == resident_id)
    if not who:
        return []
    return list(session.exec(
        select(Case).where(or_(*who), Case.status.in_(sorted(OPEN_STATUSES)))
        .order_by(Case.created_at.desc(), Case.id.desc()).limit(limit)
    ).all())


def resident_by_chat(session: Session, chat_id: str) -> Resident | None:
    return session.exec(select(Resident).where(Resident.chat_id == str(chat_id))).first()


def case_files(session: Session, case_id: int, kind: str | None = None) -> list[Attachment]:
    """A case's files (recordings, voice notes, photos), oldest first; paths are relative to
    the data directory (``core.platform.storage.resolve``)."""
    stmt = select(Attachment).where(Attachment.case_id == case_id).order_by(Attachment.id)
    if kind is not None:
        stmt = stmt.where(Attachment.kind == kind)
    return list(session.exec(stmt).all())


def known_names(session: Session, cases: list[Case]) -> dict[int, tuple[str, ...]]:
    """The names known for each case: its resident's and their household's (two queries for
    a page of cases). What ``core.people.redaction.redact`` masks for certain in the case's text."""
    resident_ids = sorted({c.resident_id for c in cases if c.resident_id is not None})
    if not resident_ids:
        return {}
    residents = {r.id: r for r in session.exec(select(Resident).where(Resident.id.in_(resident_ids))).all()}
    households = sorted({r.household_id for r in residents.values() if r.household_id is not None})
    members: dict[int, set[str]] = {}
    if households:
        for household_id, name in session.exec(select(Resident.household_id, Resident.name)
                                               .where(Resident.household_id.in_(households))).all():
            if name:
                members.setdefault(household_id, set()).add(name)
    out: dict[int, tuple[str, ...]] = {}
    for case in cases:
        resident = residents.get(case.resident_id) if case.resident_id is not None else None
        if resident is None:
            continue
        names = set(members.get(resident.household_id, ())) if resident.household_id is not None else set()
        if resident.name:
            names.add(resident.name)
        out[case.id] = tuple(sorted(names))
    return out
