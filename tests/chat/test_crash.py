"""Nothing a resident sent is lost when the real `gridline serve` dies (SIGKILL, never a
graceful stop) in the middle of a chat update. The bot runs in the subprocess, in webhook
mode, against the fake Bot API served by this test. (PostgreSQL dropping its connections
during a burst of dialogs and calls: tests/gridline/test_chaos.py.)"""

from __future__ import annotations

import pytest
from sqlmodel import select

from core import actions
from core.cases.models import Case
from core.followup.models import Survey, SurveyStatus
from core.places.models import Grid, GridLevel
from core.platform.db import session_scope
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


def _answers_on_file(engine, number: str) -> tuple[int, int, int, str]:
    """(answered surveys, the case's count of them, of which satisfied, the case's status)."""
    with session_scope(engine) as session:
        case = session.exec(select(Case).where(Case.number == number)).one()
        answered = len(session.exec(select(Survey.id).where(Survey.case_id == case.id,
                                                            Survey.status == SurveyStatus.answered)).all())
        return answered, case.surveys_answered, case.surveys_satisfied, case.status.value


@pytest.mark.parametrize("moment", ["before_recording", "after_recording"])
async def test_sigkill_while_answering_the_survey_counts_the_answer_once(engine, tmp_path, moment):
    """The process is killed while it handles the resident's last survey press (不用了): after
    the press was acknowledged and before the answer is written, or after the answer is
    committed and before the thanks reached the resident. After the restart the survey is
    answered once and the case's count of answers (what the satisfaction rate reads) agrees
    with the survey rows: never lost, never counted twice by the replay."""
    async with FakeBotApi() as fake:
        server = bot_server(fake, tmp_path / "data", database_url(engine))
        try:
            await start_server(server, fake)
            resident = ChatResident(fake, USER + 1, first_name="Qian")
            number = await resident.file_petition("楼道里的灯坏了")
            with session_scope(engine) as session:
                grid = session.exec(select(Grid).where(Grid.level == GridLevel.micro).order_by(Grid.id)).first()
                case = actions.get_case(session, number)
                actions.dispatch(session, case, actor="operator", grid_id=grid.id)
                actions.accept(session, case, actor="worker")
                actions.report_done(session, case, actor="worker", note="换了灯泡")
                actions.verify(session, case, actor="leader")
            await resident.reply("问题解决了吗", timeout=90)  # the server's job runner asks
            await resident.press("已解决")
            await resident.reply("满意吗")
            await resident.press("满意")
            await resident.reply("还有什么想补充")

            if moment == "before_recording":
                hold = fake.hold("answerCallbackQuery")
            else:
                hold = fake.hold("sendMessage", lambda p: "感谢您的评价" in p["text"])
            await resident.press("不用了")
            await hold.wait_arrived(60)
            before_kill = _answers_on_file(engine, number)
            assert before_kill == ((1, 1, 1, "closed") if moment == "after_recording" else (0, 0, 0, "verified"))
            await kill_server(server)
            hold.release(drop=True)

            await start_server(server, fake)
            await until(lambda: inbox_left(engine) == [], message="the inbox emptied", timeout=90)
            await until(lambda: _answers_on_file(engine, number)[0] == 1, message="the answer on file", timeout=90)
        finally:
            server.stop()
    assert _answers_on_file(engine, number) == (1, 1, 1, "closed")
