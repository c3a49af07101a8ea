"""Nothing a resident sent is lost when the real `gridline serve` dies (SIGKILL, never a
graceful stop) in the middle of a chat update. The bot runs in the subprocess, in webhook
mode, against the fake Bot API served by this test. (PostgreSQL dropping its connections
during a burst of dialogs and calls: tests/gridline/test_chaos.py.)"""

from __future__ import annotations

import pytest

from tests.support.chat_driver import (
    FILED,
    all_cases,
    bot_server,
    cases_of,
    inbox_left,
    kill_server,
    number_in,
    start_server,
)
from tests.support.chat_driver import Resident as ChatResident
from tests.support.fake_bot_api import FakeBotApi
from tests.support.serve import database_url
from tests.support.waiting import until

USER = 6_210_000_001


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
