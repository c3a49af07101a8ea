"""Read-side lookups the channels and console share (no writes here)."""

from __future__ import annotations

from sqlmodel import Session, select

from core.actions import OWNED
from core.models import Attachment, Case, CaseStatus, Resident


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


def resident_by_chat(session: Session, chat_id: str) -> Resident | None:
    return session.exec(select(Resident).where(Resident.chat_id == str(chat_id))).first()


def case_files(session: Session, case_id: int, kind: str | None = None) -> list[Attachment]:
    """A case's files (recordings, voice notes, photos), oldest first; paths are relative to
    the data directory (``core.storage.resolve``)."""
    stmt = select(Attachment).where(Attachment.case_id == case_id).order_by(Attachment.id)
    if kind is not None:
        stmt = stmt.where(Attachment.kind == kind)
    return list(session.exec(stmt).all())
