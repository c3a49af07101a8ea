"""Web chat devices and drafts left unused (SQLite and PostgreSQL, devices made over real
HTTP): the daily sweep removes a device nobody opened for ``device_idle_days``, never one whose
resident has a case open or a survey pending, lets a verified number go, and lets go a
petition left unfinished for ``draft_idle_days`` with a note the page shows."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlmodel import select

from chat import web_store
from chat.models import WebChatDevice, WebChatPhoneCode, WebChatRequest
from chat.resident_web import web_rules
from core import actions
from core.actions.survey import start_survey
from core.cases.models import Case, CaseStatus
from core.people.models import AuditEntry, Resident
from core.platform.clock import utcnow
from core.platform.db import session_scope
from core.platform.models import Job
from tests.chat.webchat_support import Resident as Phone
from tests.chat.webchat_support import WebServer

RULES = {**web_rules(), "device_idle_days": 180, "draft_idle_days": 30}


@pytest.fixture
async def server(engine, demo, tmp_path):
    s = WebServer(engine, tmp_path)
    await s.start()
    yield s
    await s.stop()


async def _phone(server: WebServer, phones: list[Phone]) -> tuple[Phone, str]:
    """A new phone that opened the page, and its device's id."""
    before = _devices(server.engine)
    phone = Phone(server.url)
    phones.append(phone)
    await phone.open()
    (device_id,) = _devices(server.engine) - before
    return phone, device_id


async def _file(phone: Phone) -> str:
    await phone.post({"kind": "start"})
    await phone.say("小区门口的路灯坏了")
    await phone.press("skip")
    await phone.press("c:x")
    return (await phone.press("ok"))["case"]


def _age(engine, device_id: str, days: float) -> None:
    with session_scope(engine) as session:
        session.execute(update(WebChatDevice).where(WebChatDevice.id == device_id)
                        .values(updated_at=utcnow() - timedelta(days=days)))


def _devices(engine) -> set[str]:
    with session_scope(engine) as session:
        return {d.id for d in session.exec(select(WebChatDevice)).all()}


def _set_status(engine, number: str, status: CaseStatus) -> None:
    with session_scope(engine) as session:
        case = session.exec(select(Case).where(Case.number == number)).one()
        case.status = status
        session.add(case)


async def test_unused_devices_go_those_with_open_cases_or_pending_surveys_stay(server, engine):
    phones: list[Phone] = []
    try:
        idle, idle_id = await _phone(server, phones)
        await idle.post({"kind": "start"})  # an answered post: it goes with the device
        with_open, open_id = await _phone(server, phones)
        await _file(with_open)  # its case stays open: the device stays
        closed, closed_id = await _phone(server, phones)
        _set_status(engine, await _file(closed), CaseStatus.closed)
        surveyed, surveyed_id = await _phone(server, phones)
        number = await _file(surveyed)
        _set_status(engine, number, CaseStatus.verified)
        with session_scope(engine) as session:  # handled and checked: its survey waits for the resident
            start_survey(session, session.exec(select(Case).where(Case.number == number)).one())
        recent, recent_id = await _phone(server, phones)
        for device_id in (idle_id, open_id, closed_id, surveyed_id):
            _age(engine, device_id, 181)
        _age(engine, recent_id, 179)

        swept = web_store.sweep_devices(engine, RULES)
        assert (swept.devices, swept.kept) == (2, 2)
        assert _devices(engine) == {open_id, surveyed_id, recent_id}
        with session_scope(engine) as session:
            assert session.exec(select(WebChatRequest).where(WebChatRequest.device_id.in_([idle_id, closed_id])))\
                .all() == []
            assert len(session.exec(select(Case)).all()) == 3  # no case is touched
            assert session.exec(select(Resident).where(Resident.chat_id == f"web:{closed_id}")).one()
        # a removed device's cookie starts afresh: a new, empty conversation
        state = await idle.state()
        assert state["messages"] == [] and state["state"] is None
        assert idle_id in _devices(engine)
        # opening the page again counts as use: the device is not removed
        _age(engine, recent_id, 400)
        await recent.state()
        assert web_store.sweep_devices(engine, RULES).devices == 0
        assert recent_id in _devices(engine)
    finally:
        for phone in phones:
            await phone.close()


async def test_an_unused_device_lets_its_verified_number_go(server, engine):
    phones: list[Phone] = []
    try:
        _, device_id = await _phone(server, phones)
        with session_scope(engine) as session:
            registered = session.exec(select(Resident).where(Resident.household_id.is_not(None),
                                                             Resident.phone.is_not(None))).first()
            chat = web_store.chat_key(device_id)
            actions.link_verified_phone(session, chat, registered.phone, actor="test", language="zh")
            session.execute(update(WebChatDevice).where(WebChatDevice.id == device_id)
                            .values(phone=registered.phone, phone_verified_at=utcnow(), resident_id=registered.id))
            session.add(WebChatPhoneCode(device_id=device_id, phone=registered.phone, code_hash="0" * 64,
                                         expires_at=utcnow()))
            registered_id = registered.id
        _age(engine, device_id, 200)
        assert web_store.sweep_devices(engine, RULES).devices == 1
        with session_scope(engine) as session:
            assert session.get(Resident, registered_id).chat_id is None  # another phone may link it now
            assert session.exec(select(WebChatPhoneCode)).all() == []
            entry = session.exec(select(AuditEntry).where(AuditEntry.action == "resident.unlink_phone")).one()
            assert entry.actor == "system:web_chat_cleanup" and entry.target_id == str(registered_id)
    finally:
        for phone in phones:
            await phone.close()


async def test_an_unfinished_petition_is_let_go_with_a_note(server, engine):
    phones: list[Phone] = []
    try:
        stale, stale_id = await _phone(server, phones)
        await stale.post({"kind": "start"})
        await stale.say("楼道的灯不亮")
        fresh, fresh_id = await _phone(server, phones)
        await fresh.post({"kind": "start"})
        await fresh.say("下水道堵了")
        _age(engine, stale_id, 31)
        _age(engine, fresh_id, 29)
        swept = web_store.sweep_devices(engine, RULES)
        assert (swept.devices, swept.drafts) == (0, 1)
        state = await stale.state()
        assert state["state"] is None and state["dialog"] is None
        assert "已经清除" in state["messages"][-1]["text"]
        assert (await fresh.state())["state"] == "where"
        # the page's old button is answered from the new state, not replayed into the old draft
        await stale.post({"kind": "button", "action": "skip"}, expect=200)
        # a new petition starts as usual
        await stale.post({"kind": "start"})
        assert stale.last["state"] == "problem"
    finally:
        for phone in phones:
            await phone.close()


def test_the_sweep_is_queued_once_a_day_across_instances(engine):
    web_store.schedule_cleanup(engine)
    web_store.schedule_cleanup(engine)
    with session_scope(engine) as session:
        queued = session.exec(select(Job).where(Job.kind == web_store.CLEANUP_JOB)).all()
        assert len(queued) == 1 and queued[0].dedupe_key.endswith(f"{utcnow():%Y-%m-%d}")
