"""Case events wait in the session and are inserted at the next flush: every change still
writes its event in the same transaction, and a savepoint rolled back takes its own events
with it, as it took their ORM objects before."""

from __future__ import annotations

import pytest
from sqlalchemy import event
from sqlmodel import select

from core import actions
from core.actions import Petition
from core.cases import intake, pending_events
from core.cases.models import CaseEvent, Channel
from core.platform.db import savepoint, session_scope
from tests.core.district import build_district


@pytest.fixture
def district(engine):
    intake.invalidate_routing()
    with session_scope(engine) as session:
        return build_district(session)


def events_of(engine, case_id: int) -> list[str]:
    with session_scope(engine) as session:
        return list(session.exec(select(CaseEvent.action).where(CaseEvent.case_id == case_id)
                                 .order_by(CaseEvent.id)).all())


def submit(session, key: str):
    case, _ = actions.submit_petition(session, Petition(channel=Channel.chat, description="路灯不亮", idempotency_key=key))
    return case


def test_events_of_a_failed_routing_are_forgotten_and_the_submit_kept(engine, district, monkeypatch):
    from core.places import routing

    def broken(*a, **kw):
        raise RuntimeError("gazetteer index corrupt")

    monkeypatch.setattr(routing, "route_case", broken)
    # the classify event (suggested category) was added inside the savepoint, before the failure
    result = intake.file_petition(engine, Petition(channel=Channel.chat, description="门口路灯不亮了",
                                                   idempotency_key="fail-1"))
    assert result.created and not result.dispatched
    assert events_of(engine, result.case.id) == ["submit"]


def test_a_released_savepoint_keeps_its_events_and_a_rolled_back_one_drops_only_its_own(engine, district):
    with session_scope(engine) as session:
        case = submit(session, "sp-1")
        with savepoint(session):
            actions.set_flags(session, case, actor="t", add=("kept",))
        try:
            with savepoint(session), session.no_autoflush:
                actions.set_flags(session, case, actor="t", add=("dropped",))
                assert [e["action"] for e in pending_events.waiting(session)] == ["flag"]
                raise RuntimeError("undo this block")
        except RuntimeError:
            pass
        assert pending_events.waiting(session) == []
        actions.set_flags(session, case, actor="t", add=("last",))
        case_id = case.id
    assert events_of(engine, case_id) == ["submit", "flag", "flag"]


def test_a_transaction_rolled_back_writes_none_of_its_events(engine, district):
    with session_scope(engine) as session:
        case_id = submit(session, "rb-1").id
    with pytest.raises(RuntimeError), session_scope(engine) as session:
        case = actions.get_case(session, case_id)
        actions.set_flags(session, case, actor="t", add=("x",))
        raise RuntimeError("abandon")
    with session_scope(engine) as session:  # a new transaction of a session starts with none waiting
        assert pending_events.waiting(session) == []
    assert events_of(engine, case_id) == ["submit"]


def test_events_are_in_the_database_before_a_query_in_the_same_transaction(engine, district):
    with session_scope(engine) as session:
        case = submit(session, "q-1")
        actions.set_flags(session, case, actor="t", add=("seen",))
        seen = session.exec(select(CaseEvent.action).where(CaseEvent.case_id == case.id).order_by(CaseEvent.id)).all()
        assert list(seen) == ["submit", "flag"]


def test_a_new_case_stays_clean_and_its_submit_event_goes_in_with_the_next_ones(engine, district):
    """Submitting assigns the case nothing its INSERT has not written, so the savepoint intake
    opens next has no unit of work to flush: the submit event is inserted with the events of
    the savepoint, in one statement."""
    inserts: list[str] = []

    def note(conn, cursor, statement, params, context, executemany):  # noqa: ANN001, ARG001
        if statement.startswith("INSERT INTO caseevent"):
            inserts.append(statement)

    event.listen(engine, "before_cursor_execute", note)
    try:
        with session_scope(engine) as session:
            case = submit(session, "clean-1")
            assert case not in session.dirty
            with savepoint(session):
                actions.set_flags(session, case, actor="t", add=("x",))
            case_id = case.id
    finally:
        event.remove(engine, "before_cursor_execute", note)
    assert events_of(engine, case_id) == ["submit", "flag"]
    assert len(inserts) == 1
