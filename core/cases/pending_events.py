"""Case events waiting for the session's next flush, written as rows by one INSERT.

Nothing reads a ``CaseEvent`` back in the transaction that writes it, so an event need not
be an ORM object: building one and tracking it through the unit of work cost more Python
than the rest of a dispatch (bench/intake_profile.py). ``add`` keeps the event's values in
the session; the next flush (an action that changes its case makes one follow: a query's
autoflush, a savepoint, the commit) inserts all waiting events at once. A submit changes
nothing its INSERT has not written, so its event waits for the next change's flush or the
commit. A savepoint rolled back forgets the events added inside it, as it would have
forgotten their ORM objects.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, insert
from sqlalchemy.orm import Session, SessionTransaction

from core.cases.models import CaseEvent

_PENDING = "gridline_pending_events"  # session.info: the values of events not yet inserted
_MARKS = "gridline_pending_marks"  # session.info: per open savepoint, how many were waiting when it began

_INSERT = insert(CaseEvent)


def add(session: Session, row: dict[str, Any]) -> None:
    session.info.setdefault(_PENDING, []).append(row)


def waiting(session: Session) -> list[dict[str, Any]]:
    return list(session.info.get(_PENDING, ()))


def write(session: Session) -> None:
    """Insert the waiting events now (on the session's connection, in its transaction)."""
    rows = session.info.get(_PENDING)
    if rows:
        session.info[_PENDING] = []
        session.connection().execute(_INSERT, rows)


@event.listens_for(Session, "after_flush")
def _write_after_flush(session: Session, _context: Any) -> None:
    write(session)  # after the ORM's rows: the case an event names exists by then


@event.listens_for(Session, "before_commit")
def _write_before_commit(session: Session) -> None:
    write(session)  # a commit with nothing else to flush still writes its events


@event.listens_for(Session, "after_transaction_create")
def _mark(session: Session, transaction: SessionTransaction) -> None:
    if transaction.nested:
        session.info.setdefault(_MARKS, {})[transaction] = len(session.info.get(_PENDING, ()))


@event.listens_for(Session, "after_soft_rollback")
def _forget_rolled_back(session: Session, previous: SessionTransaction) -> None:
    # (fired after after_transaction_end, so the marks live until the transaction itself ends)
    marks = session.info.get(_MARKS, {})
    if previous.nested and previous in marks:
        del session.info.setdefault(_PENDING, [])[marks[previous]:]


@event.listens_for(Session, "after_transaction_end")
def _end(session: Session, transaction: SessionTransaction) -> None:
    # The transaction itself ended: committed (its events were written before), rolled back
    # or closed (they go with it).
    if transaction.parent is None:
        session.info.pop(_MARKS, None)
        session.info.pop(_PENDING, None)
