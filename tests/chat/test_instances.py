"""Two real bot instances on one PostgreSQL database, a resident's updates alternating
between them (as a round-robin balancer sends them): the dialog goes on wherever an update
lands, every reply comes once, and a chat's updates are handled in order across instances
(``chat.gate``). Each instance is the whole Gridline app with its own engine, data folder
and port, fed by the fake Bot API server over HTTP."""

from __future__ import annotations

import asyncio
import re
from collections import Counter

import pytest
from sqlmodel import select
from telegram import Update

from chat import dialog, inbox
from chat.models import ChatHead
from chat.persistence import conversation_states, persistent_conversations
from chat.web import WEBHOOK_PATH
from core.cases.models import Attachment, Case, CaseStatus, Category
from core.followup.models import Survey, SurveyStatus
from core.platform import clock
from core.platform.clock import utcnow
from core.platform.db import make_engine, session_scope
from core.platform.models import ChannelState
from speech_models.pool import SpeechPool
from tests.chat.conftest import Harness, _fake_speech
from tests.chat.staff import invite, owner_of
from tests.chat.test_followup import _advance, _file_case
from tests.chat.voice import voice_note
from tests.support.fake_transcriber import FakeTranscriber
from tests.support.waiting import until

USER = 9601
FILED = re.compile(r"诉求已受理，编号 (\d+)")
TROUBLE = ("系统有点忙", "出了点问题")


class Pair:
    """Two instances behind a round-robin "balancer": each update goes to the next one."""

    def __init__(self, fake, a: Harness, b: Harness):
        self.fake, self.a, self.b = fake, a, b
        self._turn = 0
        self.routes: list[tuple[int, str]] = []  # (update id, "a" | "b")

    def next(self) -> Harness:
        h = (self.a, self.b)[self._turn % 2]
        self._turn += 1
        return h

    async def send(self, update: dict, to: Harness | None = None) -> None:
        h = to or self.next()
        status = await self.fake.deliver_webhook(update, url=h.url + WEBHOOK_PATH)
        assert status == 200
        self.routes.append((update["update_id"], "a" if h is self.a else "b"))

    async def say(self, user: int, text: str, to: Harness | None = None) -> None:
        await self.send(self.fake.make_text_update(user, text), to)

    async def press(self, user: int, label: str, to: Harness | None = None, timeout: float = 30) -> dict:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for msg in reversed(self.fake.sent_messages(user)):
                current = self.fake.message(user, msg["message_id"]) or msg
                for row in (current.get("reply_markup") or {}).get("inline_keyboard", []):
                    for button in row:
                        if button["text"] == label:
                            update = self.fake.make_callback_query(user, button["callback_data"], current)
                            await self.send(update, to)
                            return update
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"no button {label!r} in the messages to {user}")
            await asyncio.sleep(0.02)

    async def reply(self, user: int, contains: str, timeout: float = 30) -> dict:
        return await self.a.reply(user, contains, timeout)

    def texts(self, user: int) -> list[str]:
        return [m["text"] for m in self.fake.sent_messages(user)]


@pytest.fixture
async def pair(fake, engine, demo, tmp_path):
    if engine.dialect.name != "postgresql":
        pytest.skip("several instances share a PostgreSQL database (one instance owns a SQLite file)")
    second = make_engine(engine.url.render_as_string(hide_password=False))
    a = Harness(fake, engine, _fake_speech(), tmp_path / "a", "webhook")
    b = Harness(fake, second, _fake_speech(), tmp_path / "b", "webhook")
    a.extra["demo"] = b.extra["demo"] = demo
    await a.start()
    await b.start()
    try:
        yield Pair(fake, a, b)
    finally:
        await a.stop()
        await b.stop()
        second.dispose()


def _once(p: Pair, user: int, *phrases: str) -> None:
    texts = p.texts(user)
    for phrase in phrases:
        assert sum(phrase in t for t in texts) == 1, (phrase, texts)
    assert not any(trouble in t for t in texts for trouble in TROUBLE), texts


def _both_served(p: Pair) -> None:
    assert {route for _, route in p.routes} == {"a", "b"}


async def test_a_dialog_alternating_between_two_instances_files_one_case(pair):
    p = pair
    demo = p.a.extra["demo"]
    p.fake.add_user(USER, "Fu", language_code="zh-hans")
    await p.say(USER, "小区门口的路灯坏了，晚上一片漆黑")  # a
    await p.reply(USER, "问题发生在哪里")
    lat, lon = demo.point
    await p.send(p.fake.make_location_update(lat, lon, user_id=USER))  # b: knows the problem
    await p.reply(USER, "哪一类问题")
    await p.press(USER, "路灯故障")  # a: knows the place
    summary = await p.reply(USER, "请确认您的诉求")
    assert "路灯坏了" in summary["text"] and demo.micro_name in summary["text"]
    await p.press(USER, "✅ 确认提交")  # b
    filed = FILED.search((await p.reply(USER, "诉求已受理"))["text"]).group(1)
    _both_served(p)
    await until(lambda: inbox.pending_ids(p.a.engine) == [])
    with session_scope(p.a.engine) as session:
        case = session.exec(select(Case)).one()
        assert case.number == filed
        assert case.description == "小区门口的路灯坏了，晚上一片漆黑"
        assert case.grid_id == demo.micro_id and (case.latitude, case.longitude) == (lat, lon)
        assert session.get(Category, case.category_id).name == "路灯故障"
        assert case.status == CaseStatus.dispatched
        assert session.get(ChatHead, USER).version >= 4  # every step wrote the chat's state
        # the finished dialog left nothing behind, whoever finished it
        assert session.exec(select(ChannelState).where(ChannelState.namespace == "tg:conv")).all() == []
    _once(p, USER, "问题发生在哪里", "哪一类问题", "请确认您的诉求", "诉求已受理")
    assert len(p.fake.answered_callback_queries) == 2
    # a new dialog afterwards starts from the beginning on either instance
    await p.say(USER, "井盖丢了")
    await until(lambda: sum("问题发生在哪里" in t for t in p.texts(USER)) == 2)


async def test_photo_and_voice_note_alternating_between_instances(pair):
    p = pair
    fake_asr = FakeTranscriber()
    note = voice_note("lu4 deng1 huai4 le5")
    fake_asr.script(note, "三 号 楼 门口 的 路灯 坏 了")
    for h in (p.a, p.b):
        h.services.speech = SpeechPool(fake_asr, workers=1)
    p.fake.add_user(USER, "Lan", language_code="zh-hans")
    jpeg = b"\xff\xd8\xff\xe0" + b"gridline-photo" * 200 + b"\xff\xd9"
    photo = p.fake.add_file(jpeg, kind="photo", mime_type="image/jpeg")
    voice = p.fake.add_file(note, kind="voice", mime_type="audio/ogg")

    await p.say(USER, "我要反映")  # a
    await p.reply(USER, "遇到了什么问题")
    await p.send(p.fake.make_voice_update(voice.file_id, duration=2, user_id=USER))  # b
    heard = await p.reply(USER, "我听到的是")
    assert "3号楼门口的路灯坏了" in heard["text"]
    await p.press(USER, "对，就是这样")  # a
    await p.reply(USER, "问题发生在哪里")
    await p.send(p.fake.make_photo_update(photo.file_id, user_id=USER))  # b: a photo while asked where
    await until(lambda: len(p.texts(USER)) >= 4)
    await p.say(USER, "跳过")  # a
    await p.reply(USER, "哪一类问题")
    await p.press(USER, "路灯故障")  # b
    summary = await p.reply(USER, "请确认")
    assert "语音：已保存" in summary["text"]
    await p.press(USER, "✅ 确认提交")  # a
    filed = FILED.search((await p.reply(USER, "诉求已受理"))["text"]).group(1)
    _both_served(p)
    with session_scope(p.a.engine) as session:
        case = session.exec(select(Case)).one()
        assert case.number == filed and case.description == "3号楼门口的路灯坏了"
        kinds = Counter(a.kind for a in session.exec(select(Attachment).where(Attachment.case_id == case.id)).all())
    expected = Counter({"voice": 1})
    if "照片：1 张" in summary["text"]:  # the dialog took the photo where it was asked where
        expected["photo"] = 1
    assert kinds == expected
    _once(p, USER, "遇到了什么问题", "我听到的是", "问题发生在哪里", "哪一类问题", "请确认", "诉求已受理")


async def test_photo_first_then_the_rest_on_the_other_instance(pair):
    p = pair
    p.fake.add_user(USER, "Ming", language_code="zh-hans")
    jpeg = b"\xff\xd8\xff\xe0" + b"gridline-photo" * 200 + b"\xff\xd9"
    photo = p.fake.add_file(jpeg, kind="photo", mime_type="image/jpeg")
    await p.send(p.fake.make_photo_update(photo.file_id, caption="垃圾堆在路边好几天没人清运", user_id=USER))  # a
    await p.reply(USER, "问题发生在哪里")
    await p.say(USER, "跳过")  # b
    await p.reply(USER, "工作人员核实")
    await p.press(USER, "垃圾清运")  # a
    summary = await p.reply(USER, "请确认")
    assert "照片：1 张" in summary["text"]  # the photo taken on a, shown by a after b's step
    await p.press(USER, "✅ 确认提交")  # b
    number = FILED.search((await p.reply(USER, "诉求已受理"))["text"]).group(1)
    with session_scope(p.a.engine) as session:
        case = session.exec(select(Case).where(Case.number == number)).one()
        att = session.exec(select(Attachment).where(Attachment.case_id == case.id)).one()
        assert att.kind == "photo" and att.size == len(jpeg)
        assert case.description == "垃圾堆在路边好几天没人清运"
    _once(p, USER, "问题发生在哪里", "请确认", "诉求已受理")


async def test_survey_answered_across_instances(pair):
    p = pair
    demo = p.a.extra["demo"]
    p.fake.add_user(USER, "Hua", language_code="zh-hans")
    number = _file_case(p.a.engine, demo, USER)
    _advance(p.a.engine, number, "accept", "start", "report_done", "verify")
    while await p.a.run_jobs():
        pass
    await p.reply(USER, "问题解决了吗")
    await p.press(USER, "没有解决")  # a
    await p.reply(USER, "您对这次办理满意吗")
    await p.press(USER, "不满意")  # b: waits for a comment
    await p.reply(USER, "还有什么想补充的吗")
    await p.say(USER, "灯还是不亮，晚上很危险")  # a: knows it is the comment
    await p.reply(USER, "已重新办理")
    _both_served(p)
    with session_scope(p.a.engine) as session:
        survey = session.exec(select(Survey)).one()
        assert survey.status == SurveyStatus.answered
        assert (survey.solved, survey.satisfied) == ("not", "not")
        assert survey.comment == "灯还是不亮，晚上很危险"
        assert session.exec(select(Case)).one().status == CaseStatus.reopened
    _once(p, USER, "您对这次办理满意吗", "还有什么想补充的吗", "已重新办理")
    await p.say(USER, "楼道灯也坏了")  # b: no longer a comment, a new petition
    await p.reply(USER, "问题发生在哪里")


async def test_comment_wait_ends_on_one_instance_while_the_other_asked(pair):
    """The job that records the answers when no comment came runs on instance a; b asked
    for the comment. a drops the wait from the chat as the database holds it, and b's next
    update sees that: the resident's next words start a petition, not a comment."""
    from datetime import timedelta

    p = pair
    demo = p.a.extra["demo"]
    p.fake.add_user(USER, "Hua", language_code="zh-hans")
    number = _file_case(p.a.engine, demo, USER)
    _advance(p.a.engine, number, "accept", "start", "report_done", "verify")
    while await p.a.run_jobs():
        pass
    await p.reply(USER, "问题解决了吗")
    await p.press(USER, "已解决", to=p.a)
    await p.reply(USER, "您对这次办理满意吗")
    await p.press(USER, "满意", to=p.b)
    await p.reply(USER, "还有什么想补充的吗")
    await until(lambda: inbox.pending_ids(p.a.engine) == [])
    clock.freeze(utcnow() + timedelta(minutes=16))
    while await p.a.run_jobs():
        pass
    await p.reply(USER, f"您的诉求 {number} 已结案")
    with session_scope(p.a.engine) as session:
        stored = session.get(ChannelState, ("tg:chat", str(USER)))
        assert stored is None or "survey_comment" not in (stored.data or {})
    await p.say(USER, "小区门口的垃圾没人清运", to=p.b)
    await p.reply(USER, "问题发生在哪里")
    with session_scope(p.a.engine) as session:
        assert session.exec(select(Survey)).one().comment is None


async def test_updates_of_one_chat_delivered_to_both_at_once_are_handled_in_order(pair):
    """While instance a is in the middle of the chat's first update (its answer held at the
    fake Telegram), five more arrive, alternately at both instances and at the same time.
    They are answered in the order the resident sent them, each once."""
    p = pair
    p.fake.add_user(USER, "Fu", language_code="zh-hans")
    numbers = [f"99000000{i:02d}" for i in range(1, 7)]
    held = p.fake.hold("sendMessage", lambda params: numbers[0] in params.get("text", ""))
    await p.send(p.fake.make_command(USER, "status", numbers[0]), to=p.a)
    await held.wait_arrived()
    later = [p.fake.make_command(USER, "status", n) for n in numbers[1:]]
    await asyncio.gather(*(p.send(u, to=(p.b, p.a)[i % 2]) for i, u in enumerate(later)))
    await asyncio.sleep(0.3)  # both instances have them; neither may answer before the first
    assert not any(n in t for t in p.texts(USER) for n in numbers[1:])
    held.release()
    await until(lambda: sum("没有找到" in t for t in p.texts(USER)) == len(numbers))
    answered = [next(n for n in numbers if n in t) for t in p.texts(USER)]
    assert answered == numbers
    await until(lambda: inbox.pending_ids(p.a.engine) == [])
    # the instance that held the chat took the other's updates in turn, and the other skipped them
    assert p.a.bot.skipped + p.b.bot.skipped >= 1


async def test_a_chat_linked_on_one_instance_is_a_staff_chat_on_the_other(pair):
    p = pair
    staff_chat = 9701
    p.fake.add_user(USER + 1, "Fu", language_code="zh-hans")
    await p.send(p.fake.make_command(USER + 1, "help"), to=p.b)  # b has loaded its directory of staff chats
    await p.reply(USER + 1, "可以这样用")
    worker = owner_of(p.a.engine, p.a.extra["demo"].micro_id)
    p.fake.add_user(staff_chat, "Wang", language_code="zh-hans")
    await p.send(p.fake.make_command(staff_chat, "start", f"w-{invite(p.a, worker)}"), to=p.a)
    await p.reply(staff_chat, "绑定成功")
    await p.send(p.fake.make_command(staff_chat, "tasks"), to=p.b)
    await p.reply(staff_chat, "目前没有待办任务")


async def test_conversation_states_is_the_mapping_ptb_consults(harness):
    """The one reach into PTB's private state (``conversation_states``): what it returns is
    what the dialog's ``check_update`` reads and what ``update_persistence`` writes from.
    Fails loudly when a PTB release moves it."""
    app = harness.bot.application
    [handler] = persistent_conversations(app)
    assert handler.name == dialog.NAME
    states = conversation_states(handler)
    update = Update.de_json(harness.fake.make_text_update(USER, "跳过"), app.bot)
    assert handler.check_update(update)[0] is None  # no dialog yet: an entry point takes it
    states.update_no_track({(USER, USER): dialog.WHERE})
    assert handler.check_update(update)[0] == dialog.WHERE
    states[(USER, USER)] = dialog.CATEGORY
    await app.update_persistence()
    assert app.persistence.take(USER) == {("tg:conv", f"{dialog.NAME}:{USER}:{USER}"):
                                          {"key": [USER, USER], "state": dialog.CATEGORY}}
