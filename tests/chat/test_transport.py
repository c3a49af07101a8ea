"""Transport and robustness: the secret header, redeliveries, restarts, every message and
every button answered, recorded real payloads, the bot off without a token."""

from __future__ import annotations

import copy
import json
import logging

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlmodel import func, select

from chat.models import SeenMessage
from chat.web import CHATBOT
from core.cases.models import Case
from core.platform.db import session_scope
from core.platform.models import ChannelState
from core.platform.settings import Settings
from gridline.app import build_app
from tests.support.fake_bot_api import FIXTURES, load_fixture
from tests.support.waiting import until

USER = 9301


async def test_forged_or_missing_secret_is_refused_and_nothing_processed(harness):
    h = harness
    h.fake.add_user(USER, "Fu", language_code="zh-hans")
    update = h.fake.make_command(USER, "start")
    assert await h.fake.deliver_webhook(update, secret="wrong-secret") == 403
    assert await h.fake.deliver_webhook(update, secret=None) == 403
    # the real one works; the chat's updates are handled in order, so by its answer
    # anything the forged ones had started would have shown
    real = h.fake.make_command(USER, "start")
    assert await h.fake.deliver_webhook(real) == 200
    await h.reply(USER, "您好")
    assert len(h.fake.calls("sendMessage")) == 1
    with session_scope(h.engine) as session:
        seen = session.exec(select(SeenMessage.external_id)).all()
    assert seen == [str(real["update_id"])]


async def test_webhook_registered_with_secret_on_start(harness):
    h = harness
    assert h.fake.webhook["url"] == h.url + "/telegram/webhook"
    assert h.fake.webhook["secret_token"] == h.services.settings.telegram_secret
    assert set(h.fake.webhook["allowed_updates"]) == {"message", "callback_query"}


async def test_bad_bodies(harness):
    h = harness
    headers = {"X-Telegram-Bot-Api-Secret-Token": h.services.settings.telegram_secret}
    import aiohttp

    async with aiohttp.ClientSession() as client:
        async with client.post(h.url + "/telegram/webhook", data=b"{nope", headers=headers) as resp:
            assert resp.status == 400
        async with client.post(h.url + "/telegram/webhook", json={"hello": 1}, headers=headers) as resp:
            assert resp.status == 400


async def test_duplicate_update_is_ignored(harness):
    h = harness
    h.fake.add_user(USER, "Fu", language_code="zh-hans")
    update = h.fake.make_text_update(USER, "路灯坏了")
    await h.send(update)
    await h.reply(USER, "问题发生在哪里")
    await h.send(copy.deepcopy(update))  # Telegram redelivers after a timeout
    await h.command(USER, "help")
    await h.reply(USER, "可以这样用")
    texts = [r.params["text"] for r in h.fake.calls("sendMessage")]
    assert sum("问题发生在哪里" in t for t in texts) == 1


async def test_retried_confirm_never_duplicates_the_case(harness):
    h = harness
    h.fake.add_user(USER, "Fu", language_code="zh-hans")
    await h.say(USER, "路灯坏了")
    await h.say(USER, "跳过")
    await h.press(USER, "路灯故障")
    await h.reply(USER, "请确认")
    press = await h.press(USER, "✅ 确认提交")
    await h.reply(USER, "诉求已受理")
    # the same button pressed again (a new callback query for the same message)
    again = h.fake.make_callback_query(USER, press["callback_query"]["data"], press["callback_query"]["message"])
    await h.send(again)
    qid = again["callback_query"]["id"]
    await until(lambda: qid in h.fake.answered_callback_queries)
    assert h.fake.answered_callback_queries[qid]["text"] == "这个按钮已失效。"
    with session_scope(h.engine) as session:
        assert session.exec(select(func.count()).select_from(Case)).one() == 1


@pytest.mark.parametrize("mode", ["webhook", "polling"])
async def test_restart_mid_dialog_continues(mode, fake, engine, demo, tmp_path):
    from tests.chat.conftest import Harness, _fake_speech

    h = Harness(fake, engine, _fake_speech(), tmp_path, mode)
    await h.start()
    try:
        fake.add_user(USER, "Fu", language_code="zh-hans")
        await h.say(USER, "小区垃圾没人清运")
        await h.reply(USER, "问题发生在哪里")

        def stored() -> set[str]:
            with session_scope(engine) as session:
                return {r.namespace for r in session.exec(select(ChannelState)).all()}

        await until(lambda: stored() == {"tg:conv", "tg:chat"})  # written right after the handler returns
        await h.restart()  # a new process: everything it knows comes from the database
        await h.say(USER, "跳过")
        await h.reply(USER, "工作人员核实")
        await h.press(USER, "垃圾清运")
        await h.reply(USER, "小区垃圾没人清运")  # the summary still has the problem
        await h.restart()
        await h.press(USER, "✅ 确认提交")
        await h.reply(USER, "诉求已受理")
    finally:
        await h.stop()
    with session_scope(engine) as session:
        case = session.exec(select(Case)).one()
        assert case.description == "小区垃圾没人清运"
        # the finished dialog left nothing behind
        assert session.exec(select(ChannelState).where(ChannelState.namespace == "tg:conv")).all() == []


async def test_unsupported_messages_get_a_polite_answer(harness):
    h = harness
    h.fake.add_user(USER, "Fu", language_code="zh-hans")
    await h.send(h.fake.make_sticker_update(user_id=USER))
    await h.reply(USER, "表情")
    await h.send(h.fake.make_video_update(user_id=USER))
    await h.reply(USER, "暂不接收视频")
    await h.send(h.fake.make_document_update(user_id=USER))
    await h.reply(USER, "暂不接收文件")
    # in the middle of the dialog too
    await h.say(USER, "路灯坏了")
    await h.reply(USER, "问题发生在哪里")
    await h.send(h.fake.make_sticker_update(user_id=USER))
    await h.reply(USER, "表情")
    await h.say(USER, "跳过")
    await h.reply(USER, "哪一类问题")
    await h.say(USER, "随便打几个字")
    await h.reply(USER, "请点上面消息里的按钮")


async def test_every_callback_query_is_answered(harness):
    h = harness
    h.fake.add_user(USER, "Fu", language_code="zh-hans")
    await h.command(USER, "start")
    await h.reply(USER, "您好")
    for data in ["garbage", "sv:1:s:aaaaaaaa", "d:abcd:ok:zzzzzzzz", "x" * 64]:
        update = h.fake.make_callback_query(USER, data)
        await h.send(update)
    await until(lambda: len(h.fake.answered_callback_queries) == 4)


async def test_long_text_is_cut_with_a_clear_note(harness):
    h = harness
    h.fake.add_user(USER, "Fu", language_code="zh-hans")
    long_text = "楼上漏水" * 1000  # 4000 characters, a full Telegram message
    await h.say(USER, long_text)
    await h.say(USER, "跳过")
    await h.press(USER, "其他 / 不确定")
    summary = await h.reply(USER, "请确认")
    assert len(summary["text"]) < 4096 and "…" in summary["text"]
    await h.press(USER, "✅ 确认提交")
    await h.reply(USER, "诉求已受理")
    with session_scope(h.engine) as session:
        case = session.exec(select(Case)).one()
        assert case.description == long_text  # within [limits] description: kept whole, never cut


@pytest.mark.parametrize("name", sorted(p.stem for p in FIXTURES.glob("update_*.json")))
async def test_recorded_payloads_all_get_an_answer(harness, name):
    """Real update payloads as Telegram sent them, through the webhook."""
    h = harness
    update = load_fixture(name)
    chat_id = (update.get("message") or update["callback_query"]["message"])["chat"]["id"]
    if "callback_query" in update:
        await h.send(update)
        qid = update["callback_query"]["id"]
        await until(lambda: qid in h.fake.answered_callback_queries)
        return
    await h.send(update)
    await h.reply(chat_id, timeout=10)


async def test_no_token_means_no_bot_and_gridline_runs(engine, tmp_path):
    app = build_app(Settings(data_dir=tmp_path), engine=engine, channels=("chat",), run_jobs=False)
    assert CHATBOT not in app
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/healthz")).status == 200
        assert (await client.post("/telegram/webhook", json={"update_id": 1})).status == 404


async def test_unreachable_bot_api_does_not_stop_gridline(engine, tmp_path):
    settings = Settings(data_dir=tmp_path, telegram_token="123:" + "A" * 35,
                        telegram_api_url="http://127.0.0.1:9", telegram_secret="s")
    app = build_app(settings, engine=engine, channels=("chat",), run_jobs=False)
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/healthz")).status == 200
        resp = await client.post("/telegram/webhook", json={"update_id": 1},
                                 headers={"X-Telegram-Bot-Api-Secret-Token": "s"})
        assert resp.status == 503  # not ready: Telegram will retry


async def test_deeply_nested_or_huge_bodies_are_refused_cleanly(harness, caplog):
    """JSON nested thousands deep made json.loads raise RecursionError (only ValueError
    was caught): a 500 and a traceback. Now: 400 (413 for a body no update ever has), no
    traceback, and the bot goes on."""
    import aiohttp

    h = harness
    h.fake.add_user(USER, "Fu", language_code="zh-hans")
    headers = {"X-Telegram-Bot-Api-Secret-Token": h.services.settings.telegram_secret,
               "Content-Type": "application/json"}
    deep_array = b"[" * 100_000 + b"]" * 100_000
    deep_inside = h.fake.make_text_update(USER, "路灯坏了")
    value: object = 1
    for _ in range(200):  # parses, but no update nests like this
        value = {"x": value}
    deep_inside["message"]["extra"] = value
    huge = b'{"update_id": 1, "pad": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    async with aiohttp.ClientSession() as client:
        for body, expected in ((deep_array, 400), (json.dumps(deep_inside).encode(), 400), (huge, 413)):
            async with client.post(h.url + "/telegram/webhook", data=body, headers=headers) as resp:
                assert resp.status == expected
    assert not any(r.exc_info for r in caplog.records)
    assert not any(r.levelno >= logging.ERROR for r in caplog.records)
    await h.say(USER, "路灯坏了")
    await h.reply(USER, "问题发生在哪里")
    with session_scope(h.engine) as session:
        assert session.exec(select(func.count()).select_from(SeenMessage)).one() == 1


async def test_the_send_queue_on_metrics_counts_messages_on_their_way(fake, engine, demo, tmp_path):
    """gridline_chat_send_queue: what the bot sends and Telegram has not answered yet."""
    import aiohttp
    from prometheus_client.parser import text_string_to_metric_families

    from tests.chat.conftest import Harness
    from tests.support.fake_transcriber import FakeTranscriber

    token = "metrics-token-0123456789"
    h = await Harness(fake, engine, FakeTranscriber(), tmp_path, "webhook",
                      settings_options={"metrics_token": token}).start()

    async def send_queue() -> float:
        async with aiohttp.ClientSession() as http, http.get(
                f"{h.url}/metrics", headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 200
            text = await resp.text()
        found = [s.value for family in text_string_to_metric_families(text) for s in family.samples
                 if s.name == "gridline_chat_send_queue"]
        assert len(found) == 1
        return found[0]

    try:
        h.fake.add_user(USER, "Fu", language_code="zh-hans")
        assert await send_queue() == 0
        hold = fake.hold("sendMessage")
        await h.command(USER, "start")
        await hold.wait_arrived()  # the greeting is on its way and Telegram does not answer
        assert await send_queue() == 1
        hold.release()
        await h.reply(USER, "您好")
        await until(lambda: h.bot.send_queue == 0)
        assert await send_queue() == 0
    finally:
        await h.stop()


async def test_updates_of_a_shape_telegram_never_sends_are_ignored_with_a_warning(harness, caplog):
    """A message without its chat or sender, text as a list, a longitude as a string: PTB
    passed them to the handlers, which raised (and so did the error handler, saying sorry to
    a chat it did not have). Now each is ignored at the webhook with one WARNING line naming
    what is wrong; nothing is kept or answered, and the bot goes on."""
    import aiohttp

    from chat import inbox

    h = harness
    h.fake.add_user(USER, "Fu", language_code="zh-hans")
    text = h.fake.make_text_update(USER, "路灯坏了")
    where = h.fake.make_location_update(26.39, 117.79, user_id=USER)
    odd = []
    for drop in ("chat", "from"):
        update = copy.deepcopy(text)
        del update["message"][drop]
        odd.append((update, f"message.{drop} is missing"))
    listed = copy.deepcopy(text)
    listed["message"]["text"] = ["路灯", "坏了"]
    odd.append((listed, "message.text is not a str"))
    east = copy.deepcopy(where)
    east["message"]["location"]["longitude"] = "117.79"
    odd.append((east, "message.location.longitude is not a number between -180 and 180"))
    press = load_fixture("update_callback_query")
    press["callback_query"]["data"] = {"survey": "yes"}
    odd.append((press, "callback_query.data is not a str"))
    headers = {"X-Telegram-Bot-Api-Secret-Token": h.services.settings.telegram_secret}
    caplog.set_level(logging.INFO)
    async with aiohttp.ClientSession() as client:
        for i, (update, _) in enumerate(odd):
            update["update_id"] = h.fake.next_update_id()
            async with client.post(h.url + "/telegram/webhook", json=update, headers=headers) as resp:
                assert resp.status == 200, i
    ignored = [r for r in caplog.records if "ignored" in r.getMessage() and r.name == "chat.web"]
    assert [r.getMessage().split(": ", 1)[1] for r in ignored] == [reason for _, reason in odd]
    assert all(r.levelno == logging.WARNING for r in ignored)
    assert inbox.pending_ids(h.engine) == []
    await h.say(USER, "路灯坏了")
    await h.reply(USER, "问题发生在哪里")
    assert len(h.fake.sent_messages(USER)) == 1  # the odd updates got no answer
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
