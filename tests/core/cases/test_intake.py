"""Intake: durable write first, then routing and dispatch (or triage)."""

from __future__ import annotations

import pytest
from sqlmodel import select

from core.actions import Petition
from core.cases import intake
from core.cases.models import CaseEvent, CaseStatus, Channel
from core.places.models import GazetteerEntry
from core.platform.db import session_scope
from tests.core.district import build_district


@pytest.fixture
def district(engine):
    intake.invalidate_routing()
    with session_scope(engine) as session:
        d = build_district(session)
        session.add(GazetteerEntry(name="罗布社区", kind="community", grid_id=d.grids["community"].id))
        session.add(GazetteerEntry(name="洋坊新村9幢", kind="building", grid_id=d.grids["micro1"].id))
        return d


def file(engine, **kw):
    base = dict(channel=Channel.chat, description="楼道里有人飞线给电动车充电")
    base.update(kw)
    return intake.file_petition(engine, Petition(**base))


def test_shared_location_dispatches_to_that_micro_grid(engine, district):
    result = file(engine, latitude=26.3905, longitude=117.7915, idempotency_key="u1")
    assert result.created and result.dispatched
    case = result.case
    assert case.status == CaseStatus.dispatched
    assert case.grid_id == district.grids["micro2"].id
    assert case.worker_id == district.workers["W-M2"].id
    assert case.category_id == district.categories["flying_lead"].id  # suggested from the words
    assert case.routing_trace == [{"code": "point", "params": {"grid": district.grids["micro2"].code}}]
    assert case.routing_reason is None  # the words are the edges' (core.platform.i18n.case_routing_text)


def test_registered_caller_is_routed_by_household(engine, district):
    result = file(engine, channel=Channel.hotline, contact_phone="138 0013 8000")
    assert result.dispatched
    assert result.case.grid_id == district.grids["micro1"].id
    assert result.case.resident_id == district.resident.id


def test_a_caller_whose_number_is_stored_in_another_spelling_is_the_resident_routing_found(engine, district):
    """Linking the petition to its resident and routing it by the household read one lookup:
    a number the registry wrote another way routed the case but left it without its resident."""
    from core.people.models import Resident

    with session_scope(engine) as session:
        aunt = Resident(name="王阿姨", phone="+86 139 0013 9000", household_id=district.resident.household_id)
        session.add(aunt)
        session.flush()
        aunt_id = aunt.id
    result = file(engine, channel=Channel.hotline, contact_phone="13900139000")
    assert result.case.grid_id == district.grids["micro1"].id
    assert result.case.resident_id == aunt_id


def test_spoken_address_with_homophone_routes_by_pinyin(engine, district):
    # speech recognition wrote 萝卜 (radish) for 罗布 and spelled the numbers out
    result = file(engine, channel=Channel.hotline, contact_phone="+8613911112222",
                  address_text="萝卜社区洋坊新村九幢", description="路灯不亮了")
    assert result.case.grid_id == district.grids["micro1"].id
    assert result.dispatched, result.route_reason


def test_unroutable_petition_waits_in_triage(engine, district):
    result = file(engine, description="我想反映一个问题", contact_phone="+8613911112222")
    assert not result.dispatched
    assert result.case.status == CaseStatus.received
    assert "needs_triage" in result.case.flags
    with session_scope(engine) as session:
        actions_done = session.exec(select(CaseEvent.action).where(CaseEvent.case_id == result.case.id)).all()
    assert actions_done == ["submit", "flag"]


def test_retried_intake_returns_the_first_case(engine, district):
    first = file(engine, idempotency_key="CAabc", latitude=26.3905, longitude=117.7905)
    again = file(engine, idempotency_key="CAabc", latitude=26.3905, longitude=117.7905)
    assert not again.created and again.case.id == first.case.id


def test_suggest_categories_ranks_specific_words(engine, district):
    with session_scope(engine) as session:
        ranked = intake.suggest_categories(session, "门口路灯不亮，灯不亮好几天")
    assert ranked[0][0].code == "streetlight"


def test_routing_failure_keeps_the_petition(engine, district, monkeypatch):
    from core.places import routing

    def broken(*a, **kw):
        raise RuntimeError("gazetteer index corrupt")

    monkeypatch.setattr(routing, "route_case", broken)
    result = file(engine, idempotency_key="keep-me")
    assert result.created and not result.dispatched
    with session_scope(engine) as session:
        from core.actions import get_case

        stored = get_case(session, result.case.number)
        assert stored.status == CaseStatus.received and stored.description == "楼道里有人飞线给电动车充电"
        # the category suggestion made inside the failed savepoint was rolled back with it
        assert stored.category_id is None


def test_a_connection_lost_while_routing_is_retried_work_not_a_case_left_in_triage(engine, district, monkeypatch):
    """The routing index's version is read on the petition's own connection. When that
    connection is lost, the case's INSERT is lost with it: the error goes up for the whole
    petition to be tried again (transient), instead of being swallowed so that the next
    statement raised PendingRollbackError, which no retry knew (the hotline's 系统繁忙)."""
    import psycopg
    from sqlalchemy.exc import OperationalError

    from core.places import indexes
    from core.platform.retry import transient

    file(engine, channel=Channel.hotline, contact_phone="138 0013 8000", idempotency_key="warm")  # indexes built

    def lost(_session):
        raise OperationalError("SELECT version", {}, psycopg.OperationalError("server closed the connection"),
                               connection_invalidated=True)

    monkeypatch.setattr(indexes, "_check_seconds", lambda: 0.0)  # the version is read on this petition
    monkeypatch.setattr(indexes, "current_version", lost)
    with pytest.raises(Exception) as raised:
        file(engine, channel=Channel.hotline, contact_phone="138 0013 8000", idempotency_key="lost")
    assert transient(raised.value), repr(raised.value)
    monkeypatch.undo()
    again = file(engine, channel=Channel.hotline, contact_phone="138 0013 8000", idempotency_key="lost")
    assert again.created and again.case.grid_id == district.grids["micro1"].id  # tried again: filed, routed
