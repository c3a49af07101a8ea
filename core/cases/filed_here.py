"""Cases filed through a session: nothing is merged into a case in the transaction that files
it (``merge`` forgets the mark), so the subscribers that follow each step of a new petition
(SMS, chat notices) need not ask the database for its duplicates."""

from __future__ import annotations

from sqlmodel import Session

_KEY = "gridline.filed_here"


def mark(session: Session, case_id: int) -> None:
    session.info.setdefault(_KEY, set()).add(case_id)


def forget(session: Session, case_id: int) -> None:
    session.info.get(_KEY, set()).discard(case_id)


def filed_here(session: Session, case_id: int | None) -> bool:
    return case_id in session.info.get(_KEY, ())
