"""The web chat offers the confidential choice (保密提交) at the confirmation, over real HTTP
(SQLite and PostgreSQL): the button and the typed word 保密 file a confidential case."""

from __future__ import annotations

import pytest
from sqlmodel import select

from core.cases.models import Case
from core.platform.db import session_scope
from tests.chat.test_resident_web import _to_confirm
from tests.chat.webchat_support import Resident as Phone
from tests.chat.webchat_support import WebServer


@pytest.fixture
async def server(engine, demo, tmp_path):
    s = WebServer(engine, tmp_path)
    s.extra = {"demo": demo}
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def phone(server):
    p = Phone(server.url)
    await p.open()
    yield p
    await p.close()


def _confidential(engine, number: str) -> bool:
    with session_scope(engine) as session:
        return session.exec(select(Case.confidential).where(Case.number == number)).one()


async def test_the_confirmation_offers_the_confidential_submit_and_it_files_a_confidential_case(
        server, phone, engine):
    demo = server.extra["demo"]
    confirm = await _to_confirm(phone, "邻居家狗天天半夜叫，不想让他知道是我反映的", demo.building)
    last = confirm["replies"][-1]
    assert [b["label"] for b in last["buttons"]] == ["✅ 确认提交", "🔒 保密提交", "取消"]
    assert "保密" in last["text"]
    filed = await phone.press("oks")
    number = filed["case"]
    assert number and "已按保密处理" in filed["replies"][-1]["text"]
    assert _confidential(engine, number) is True


async def test_typing_baomi_files_it_confidential(server, phone, engine):
    demo = server.extra["demo"]
    await _to_confirm(phone, "楼道堆满杂物", demo.building)
    filed = await phone.say("保 密")
    assert filed["case"] and _confidential(engine, filed["case"]) is True


async def test_the_plain_submit_files_an_ordinary_case(server, phone, engine):
    demo = server.extra["demo"]
    await _to_confirm(phone, "楼道里的灯坏了", demo.building)
    filed = await phone.press("ok")
    assert _confidential(engine, filed["case"]) is False and "保密处理" not in filed["replies"][-1]["text"]
