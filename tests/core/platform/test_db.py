"""The database helpers: a savepoint's writes stay in the session's transaction on both databases."""

from __future__ import annotations

import pytest
from sqlmodel import Session, select

from core import actions
from core.actions import Petition
from core.cases.models import Case, CaseEvent, Channel


def test_a_failure_after_a_filed_petition_takes_the_case_back(engine):
    # submit_petition writes the case inside a savepoint; on SQLite that savepoint used to be a
    # transaction of its own, so the case stayed without its "submit" event.
    with Session(engine) as session, pytest.raises(RuntimeError):
        try:
            actions.submit_petition(session, Petition(channel=Channel.chat, description="路灯坏了"), actor="test")
            raise RuntimeError("a failure later in the same transaction")
        except RuntimeError:
            session.rollback()
            raise
    with Session(engine) as session:
        assert session.exec(select(Case)).all() == []
        assert session.exec(select(CaseEvent)).all() == []


def test_a_filed_petition_commits_with_its_event(engine):
    with Session(engine) as session:
        case, created = actions.submit_petition(session, Petition(channel=Channel.chat, description="路灯坏了"),
                                                actor="test")
        session.commit()
        case_id = case.id
    with Session(engine) as session:
        events = session.exec(select(CaseEvent).where(CaseEvent.case_id == case_id)).all()
        assert created and [e.action for e in events] == ["submit"]


def test_idle_postgresql_connections_per_process_follow_the_setting(monkeypatch):
    """GRIDLINE_DB_POOL_SIZE: how many connections a process keeps open while idle (no
    connection is made to build the engine)."""
    from core.platform.db import make_engine

    monkeypatch.setenv("GRIDLINE_DB_POOL_SIZE", "4")
    engine = make_engine("postgresql://postgres@127.0.0.1:5432/none")
    assert (engine.pool.size(), engine.pool._max_overflow) == (4, 20)
    monkeypatch.delenv("GRIDLINE_DB_POOL_SIZE")
    assert make_engine("postgresql://postgres@127.0.0.1:5432/none").pool.size() == 10
