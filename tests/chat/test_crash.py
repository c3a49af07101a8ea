"""Nothing a resident sent is lost when the real `gridline serve` dies (SIGKILL, never a
graceful stop) in the middle of a chat update, or when PostgreSQL drops its connections
again and again during a burst of dialogs. The bot runs in the subprocess, in webhook mode,
against the fake Bot API served by this test."""

from __future__ import annotations

import asyncio

import pytest
from sqlmodel import select

from chat import inbox
from core.db import session_scope
from core.models import Case, ChannelState, Resident
from tests.support.chat_driver import FILED, bot_server, kill_server, number_in, start_server
from tests.support.chat_driver import Resident as ChatResident
from tests.support.fake_bot_api import FakeBotApi
from tests.support.pg_chaos import BackendTerminator
from tests.support.serve import database_url
from tests.support.waiting import until

USER = 6_210_000_001


def cases_of(engine, chat_id: int) -> list[str]:
    with session_scope(engine) as session:
        return list(session.exec(
            select(Case.number).join(Resident, Resident.id == Case.resident_id)
            .where(Resident.chat_id == str(chat_id)).order_by(Case.id)).all())


def all_cases(engine) -> int:
    with session_scope(engine) as session:
        return len(session.exec(select(Case.id)).all())


def inbox_left(engine) -> list[str]:
    with session_scope(engine) as session:
        return list(session.exec(select(ChannelState.key).where(ChannelState.namespace == inbox.INBOX)).all())


@pytest.mark.parametrize("moment", ["before_filing", "after_filing"])
async def test_sigkill_while_confirming_loses_nothing(engine, tmp_path, moment, record_property):
    """The process is killed while it handles the resident's 确认提交: before the case is
    written (it waits for Telegram to take the button's answer), or after the case is
    committed and before the number reached the resident. After the restart the inbox
    replays the press: exactly one case, and the resident has its number, once."""
    async with FakeBotApi() as fake:
        server = bot_server(fake, tmp_path / "data", database_url(engine))
        try:
            await start_server(server, fake)
            resident = ChatResident(fake, USER, first_name="Zhou")
            await resident.say("小区门口的路灯坏了")
            await resident.reply("问题发生在哪里")
            await resident.say("跳过")
            await resident.reply("哪一类问题")
            await resident.press("其他 / 不确定")
            await resident.reply("请确认")

            if moment == "before_filing":
                hold = fake.hold("answerCallbackQuery")
            else:
                hold = fake.hold("sendMessage", lambda p: FILED in p["text"])
            await resident.press("✅ 确认提交")
            held = await hold.wait_arrived(60)
            assert all_cases(engine) == (1 if moment == "after_filing" else 0)
            if moment == "after_filing":
                assert number_in(held["text"]) == cases_of(engine, USER)[0]
            await kill_server(server)
            hold.release(drop=True)  # the call never reached Telegram
            assert not resident.numbers_received()

            await start_server(server, fake)
            filed = await resident.reply(FILED, timeout=90)
            await until(lambda: inbox_left(engine) == [], message="the inbox emptied")
            # Anything else the resident sends is answered as usual after the replay.
            await resident.command("mine")
            await resident.reply("您反映的问题")
        finally:
            server.stop()
        assert server.proc.returncode is not None
        log = server.log()

    numbers = cases_of(engine, USER)
    assert len(numbers) == 1 and all_cases(engine) == 1
    assert number_in(filed["text"]) == numbers[0]
    assert resident.numbers_received() == numbers  # exactly once
    assert "replaying 1 telegram update(s)" in log
    assert fake.token.split(":")[1] not in log
    record_property("petitions_sent", 1)
    record_property("cases_stored", all_cases(engine))


async def test_backends_terminated_during_a_burst_of_dialogs(engine, tmp_path, record_property):
    """30 residents file petitions at once while every PostgreSQL connection of the server
    is terminated again and again: every confirmed petition is a case, every resident has
    their number, nothing is left in the inbox."""
    if engine.dialect.name != "postgresql":
        pytest.skip("pg_terminate_backend is PostgreSQL's")
    count = 30
    async with FakeBotApi() as fake:
        server = bot_server(fake, tmp_path / "data", database_url(engine))
        try:
            await start_server(server, fake)
            residents = [ChatResident(fake, 6_220_000_000 + i, first_name=f"R{i}", timeout=180)
                         for i in range(count)]
            async with BackendTerminator(database_url(engine), every=0.3, min_rounds=5) as chaos:
                numbers = await asyncio.gather(*(r.file_petition(f"第{i}号楼的下水道堵了，污水漫到路上")
                                                 for i, r in enumerate(residents)))
            await until(lambda: inbox_left(engine) == [], timeout=120, message="the inbox emptied")
        finally:
            server.stop()
        log = server.log()

    assert chaos.terminated > 0, "no connection was terminated: the test proved nothing"
    for resident, number in zip(residents, numbers, strict=True):
        assert cases_of(engine, resident.user_id) == [number]
        assert set(resident.numbers_received()) == {number}
    assert all_cases(engine) == count
    assert fake.token.split(":")[1] not in log
    record_property("petitions_sent", count)
    record_property("cases_stored", all_cases(engine))
    record_property("backends_terminated", chaos.terminated)
    record_property("termination_rounds", chaos.rounds)
    record_property("updates_handled_again", log.count("handling it again"))
    record_property("updates_redelivered", log.count("Telegram will deliver it again"))
