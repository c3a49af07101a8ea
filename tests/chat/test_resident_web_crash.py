"""The real `gridline serve` is killed (SIGKILL) while it handles a web resident's 确认提交:
before the case is written, or after the case is committed and before the answer (the
dialog's step and the post's answer) is. The page still holds the post in its queue and
sends it again, with the same key, once the server is back: exactly one case, and the page
shows its number.

The moment is made by the database itself (PostgreSQL): a lock held by the test stops the
server's transaction where the moment is; pg_stat_activity shows it waiting there."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlmodel import select

from core.cases.models import Case
from core.platform.db import session_scope
from tests.chat.webchat_support import Resident
from tests.support.serve import ServeProcess, database_url
from tests.support.waiting import until


def _cases(engine) -> list[str]:
    with session_scope(engine) as session:
        return [c.number for c in session.exec(select(Case)).all()]


def _waiting_on_a_lock(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                 "AND datname = current_database()")).scalar_one()


@pytest.mark.parametrize("engine", ["postgres"], indirect=True)
@pytest.mark.parametrize("moment", ["before_filing", "after_filing"])
async def test_sigkill_between_confirm_and_the_answer(engine, tmp_path, moment):
    server = ServeProcess(tmp_path / "data", database_url(engine), env={"GRIDLINE_SPEECH_MODEL": ""})
    phone = Resident(server.url)
    try:
        await asyncio.to_thread(server.start)
        await phone.open()
        await phone.post({"kind": "start"})
        await phone.say("小区门口的路灯坏了")
        await phone.press("skip")
        await phone.press("c:x")
        assert phone.last["state"] == "confirm"

        blocker = engine.connect()
        holding = blocker.begin()
        if moment == "before_filing":  # no case can be written
            blocker.execute(text('LOCK TABLE "case" IN SHARE ROW EXCLUSIVE MODE'))
        else:  # the case commits; the step's answer cannot be written
            blocker.execute(text("SELECT * FROM web_chat_device FOR UPDATE"))
        press = {"kind": "button", "action": "ok", "label": "✅ 确认提交", "dialog": phone.dialog}
        confirm = asyncio.ensure_future(phone.post(press, key="confirm-press-0001"))
        await until(lambda: _waiting_on_a_lock(engine) > 0, message="the server waiting at the moment", timeout=60)
        assert len(_cases(engine)) == (1 if moment == "after_filing" else 0)
        await asyncio.to_thread(server.kill)
        holding.rollback()
        blocker.close()
        with pytest.raises(Exception):  # noqa: B017 - the connection died with the server
            await confirm

        await asyncio.to_thread(server.start)
        # the page sends its queued post again, with the same key
        filed = await phone.post(press, key="confirm-press-0001")
        again = await phone.post(press, key="confirm-press-0001")
        assert again["replayed"] and again["case"] == filed["case"]
        state = await phone.state()
    finally:
        await phone.close()
        server.close()
    numbers = _cases(engine)
    assert numbers == [filed["case"]]
    assert state["state"] is None
    assert [m["case"] for m in state["messages"] if m.get("case")] == numbers  # the page shows it, once
