"""core.cases.events: what follows a case change is its subscribers, called in the order they were
registered, in the action's transaction; a subscriber that raises aborts the action; a
change before the subscribers are wired is refused."""

from __future__ import annotations

import pytest
from sqlmodel import func, select

from core import actions
from core.cases import events
from core.cases.events import CaseChange, NotWired, Subscribers
from core.cases.models import Case, CaseEvent, CaseStatus, Channel
from core.people.models import Resident
from core.platform import clock
from core.platform.db import session_scope
from core.platform.models import Job
from tests.core.actions.test_lifecycle import MORNING, district  # noqa: F401  (fixture)
from tests.core.staffing import link


def _change(to_status=CaseStatus.dispatched, from_status=CaseStatus.received) -> CaseChange:
    return CaseChange(session=None, case=Case(number="2026000001"), action="dispatch", actor="op",  # type: ignore[arg-type]
                      from_status=from_status, to_status=to_status, reason=None, data=None, at=MORNING)


def test_subscribers_run_in_the_order_they_were_registered():
    heard: list[str] = []
    subscribers = Subscribers()
    for name in ("c", "a", "b"):
        subscribers.subscribe(name, lambda change, name=name: heard.append(f"{name}:{change.to_status.value}"))
    subscribers.mark_wired()
    subscribers.publish(_change())
    subscribers.publish(_change(CaseStatus.accepted, CaseStatus.dispatched))
    assert heard == ["c:dispatched", "a:dispatched", "b:dispatched", "c:accepted", "a:accepted", "b:accepted"]
    assert subscribers.names() == ("c", "a", "b")


def test_a_name_is_registered_once():
    subscribers = Subscribers()
    subscribers.subscribe("sms", lambda change: None)
    with pytest.raises(ValueError, match="sms"):
        subscribers.subscribe("sms", lambda change: None)


def test_a_change_before_the_wiring_is_refused():
    heard = []
    subscribers = Subscribers()
    subscribers.subscribe("x", heard.append)
    with pytest.raises(NotWired, match="2026000001"):
        subscribers.publish(_change())
    assert heard == []


def test_status_changed():
    assert _change().status_changed
    assert _change(CaseStatus.received, None).status_changed  # a submitted case
    assert not _change(CaseStatus.dispatched, CaseStatus.dispatched).status_changed  # an escalation in place


def test_the_process_is_wired_in_the_owners_order():
    """The tests wire as every entry point does (tests/conftest.py → gridline.wiring)."""
    assert events.SUBSCRIBERS.wired
    assert events.SUBSCRIBERS.names() == ("chat.notice", "sms.progress", "staff.messages")


def test_one_dispatch_queues_the_notice_the_sms_and_the_staff_message_in_that_order(engine, district):  # noqa: F811
    clock.freeze(MORNING)
    link(engine, 801, "W-M1")  # the micro grid's leader, who is sent the dispatch
    with session_scope(engine) as s:
        s.get(Resident, district.resident.id).chat_id = "424242"
        case, _ = actions.submit_petition(s, actions.Petition(
            channel=Channel.hotline, description="路灯坏了", category_code="streetlight",
            contact_phone="+8613800138000", resident_id=district.resident.id))
        actions.dispatch(s, case, actor="op", grid_id=district.grids["micro1"].id)
    with session_scope(engine) as s:
        kinds = [j.kind for j in s.exec(select(Job).order_by(Job.id))]
    assert kinds == ["notify_resident", "sms_progress", "staff_message"]


def test_a_subscriber_that_raises_rolls_the_action_back(engine, district):  # noqa: F811
    """As before subscribers: an SMS rule that fails takes the change down with it."""
    def broken(change: CaseChange) -> None:
        if change.action == "dispatch":
            raise RuntimeError("the SMS rules cannot be read")

    with session_scope(engine) as s:
        case, _ = actions.submit_petition(s, actions.Petition(
            channel=Channel.hotline, description="路灯坏了", category_code="streetlight"))
        number = case.number
    events.subscribe("test.broken", broken)
    try:
        with pytest.raises(RuntimeError, match="SMS rules"), session_scope(engine) as s:
            actions.dispatch(s, actions.get_case(s, number), actor="op", grid_id=district.grids["micro1"].id)
    finally:
        events.unsubscribe("test.broken")
    with session_scope(engine) as s:
        case = actions.get_case(s, number)
        assert case.status == CaseStatus.received
        assert [e.action for e in s.exec(select(CaseEvent).where(CaseEvent.case_id == case.id))] == ["submit"]
        assert s.exec(select(func.count()).select_from(Job)).one() == 0


def test_an_unwired_process_changes_no_case(engine, district, monkeypatch):  # noqa: F811
    with session_scope(engine) as s:
        case, _ = actions.submit_petition(s, actions.Petition(channel=Channel.hotline, description="路灯坏了"))
        number = case.number
    monkeypatch.setattr(events.SUBSCRIBERS, "wired", False)
    with pytest.raises(NotWired, match="gridline.wiring"), session_scope(engine) as s:
        actions.dispatch(s, actions.get_case(s, number), actor="op", grid_id=district.grids["micro1"].id)
    with session_scope(engine) as s:
        case = actions.get_case(s, number)
        assert case.status == CaseStatus.received
        assert s.exec(select(func.count()).select_from(CaseEvent)).one() == 1
