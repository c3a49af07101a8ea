"""Confidential petitions (保密处理) in core: the petition's wish lands on the case and its
submit event, an operator marks or lifts it with an event of its own, and the mark puts
no case in triage. Runs on SQLite and PostgreSQL (the ``engine`` fixture)."""

from __future__ import annotations

import pytest
from sqlmodel import select

from core import actions
from core.actions import Petition
from core.cases.models import Case, CaseEvent, Channel
from core.errors import InvalidInput
from core.platform.db import session_scope
from tests.core.district import build_district


@pytest.fixture
def district(engine):
    with session_scope(engine) as session:
        return build_district(session)


def _events(session, case: Case, action: str) -> list[CaseEvent]:
    return list(session.exec(select(CaseEvent).where(CaseEvent.case_id == case.id, CaseEvent.action == action)
                             .order_by(CaseEvent.id)).all())


def test_a_confidential_petition_is_a_confidential_case_and_its_submit_event_says_so(engine, district):
    with session_scope(engine) as session:
        case, created = actions.submit_petition(session, Petition(
            channel=Channel.chat, description="楼上邻居半夜装修", idempotency_key="chat|c1", confidential=True))
        plain, _ = actions.submit_petition(session, Petition(
            channel=Channel.chat, description="路灯坏了", idempotency_key="chat|c2"))
        number, plain_number = case.number, plain.number
        assert created
    with session_scope(engine) as session:
        case = actions.get_case(session, number)
        assert case.confidential is True
        assert _events(session, case, "submit")[0].data["confidential"] is True
        plain = actions.get_case(session, plain_number)
        assert plain.confidential is False
        assert "confidential" not in (_events(session, plain, "submit")[0].data or {})


def test_an_operator_marks_and_lifts_it_each_with_an_event_and_no_change_writes_none(engine, district):
    with session_scope(engine) as session:
        case, _ = actions.submit_petition(session, Petition(channel=Channel.console, description="噪音扰民"))
        actions.set_confidential(session, case, actor="console:op", confidential=True, reason="居民来电要求")
        actions.set_confidential(session, case, actor="console:op", confidential=True)  # already: nothing
        number = case.number
    with session_scope(engine) as session:
        case = actions.get_case(session, number)
        assert case.confidential
        marks = _events(session, case, "confidential")
        assert [(e.actor, e.data, e.reason) for e in marks] == [
            ("console:op", {"confidential": True}, "居民来电要求")]
        actions.set_confidential(session, case, actor="console:admin", confidential=False)
    with session_scope(engine) as session:
        case = actions.get_case(session, number)
        assert not case.confidential
        assert [e.data["confidential"] for e in _events(session, case, "confidential")] == [True, False]


def test_a_reason_too_long_is_refused_and_nothing_changes(engine, district):
    with session_scope(engine) as session:
        case, _ = actions.submit_petition(session, Petition(channel=Channel.console, description="噪音扰民"))
        number = case.number
    with pytest.raises(InvalidInput), session_scope(engine) as session:
        case = actions.get_case(session, number)
        actions.set_confidential(session, case, actor="console:op", confidential=True, reason="长" * 5000)
    with session_scope(engine) as session:
        case = actions.get_case(session, number)
        assert not case.confidential and not _events(session, case, "confidential")


def test_the_mark_is_no_flag(engine, district):
    """Triage reads flags (and a missing grid or category): the mark adds none."""
    with session_scope(engine) as session:
        case, _ = actions.submit_petition(session, Petition(
            channel=Channel.chat, description="楼道飞线充电", category_code="flying_lead", confidential=True))
        actions.set_confidential(session, case, actor="console:op", confidential=False)
        actions.set_confidential(session, case, actor="console:op", confidential=True)
        number = case.number
    with session_scope(engine) as session:
        case = actions.get_case(session, number)
        assert case.confidential and not case.flags
