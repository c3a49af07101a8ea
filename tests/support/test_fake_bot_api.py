"""The real python-telegram-bot against the fake Bot API: polling, files, webhooks, errors."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp import web
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import BadRequest, Conflict, InvalidToken, RetryAfter
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    MessageHandler,
    filters,
)

from tests.support.fake_bot_api import SECRET_HEADER, FakeBotApi, TelegramLimits, load_fixture

FIXTURE_NAMES = [
    "update_text",
    "update_command",
    "update_callback_query",
    "update_voice",
    "update_photo",
    "update_location",
    "update_contact",
    "update_sticker",
    "update_document",
    "update_video",
]


@pytest.fixture
async def fake():
    async with FakeBotApi() as server:
        yield server


def build_app(fake: FakeBotApi, **kwargs) -> Application:
    builder = (
        ApplicationBuilder()
        .token(fake.token)
        .base_url(fake.base_url)
        .base_file_url(fake.base_file_url)
    )
    if kwargs.get("rate_limiter"):
        builder = builder.rate_limiter(kwargs["rate_limiter"])
    return builder.build()


async def test_application_polls_replies_and_downloads(fake: FakeBotApi):
    voice = fake.add_file(b"OggS fake opus bytes", kind="voice", mime_type="audio/ogg")
    downloaded: list[bytes] = []
    app = build_app(fake)

    async def on_text(update: Update, context) -> None:
        keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("是", callback_data="yes")]])
        await update.message.reply_text(f"收到：{update.message.text}", reply_markup=keyboard)

    async def on_voice(update: Update, context) -> None:
        tg_file = await update.message.voice.get_file()
        downloaded.append(bytes(await tg_file.download_as_bytearray()))
        await update.message.reply_text("语音已收到")

    async def on_button(update: Update, context) -> None:
        await update.callback_query.answer()
        await update.callback_query.edit_message_text("已确认")

    async def on_start(update: Update, context) -> None:
        await update.message.reply_text(f"args={context.args}")

    app.add_handler(CommandHandler("start", on_start))
    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, on_text))
    app.add_handler(MessageHandler(filters.VOICE, on_voice))
    app.add_handler(CallbackQueryHandler(on_button))

    async with app:
        assert app.bot.username == fake.bot_user["username"]
        await app.start()
        await app.updater.start_polling(poll_interval=0, timeout=1)
        try:
            fake.push_update(fake.make_text_update(1001, "路灯坏了"))
            reply = await fake.wait_for("sendMessage", lambda p: p["chat_id"] == 1001)
            assert reply.params["text"] == "收到：路灯坏了"
            assert reply.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "yes"
            message = reply.result
            assert message["from"]["id"] == fake.bot_user["id"]
            assert message["chat"] == {
                "id": 1001,
                "first_name": "Resident",
                "last_name": "1001",
                "type": "private",
            }
            # the resident's message got id 1, the reply id 2
            assert message["message_id"] == 2

            fake.push_update(fake.make_command(1001, "start", "abc"))
            reply = await fake.wait_for("sendMessage")
            assert reply.params["text"] == "args=['abc']"

            fake.push_update(fake.make_callback_query(1001, "yes", message))
            await fake.wait_for("answerCallbackQuery")
            edited = await fake.wait_for("editMessageText")
            assert edited.result["edit_date"] >= message["date"]
            assert fake.message(1001, message["message_id"])["text"] == "已确认"

            fake.push_update(fake.make_voice_update(voice.file_id, duration=4))
            await fake.wait_for("sendMessage", lambda p: p["text"] == "语音已收到")
            assert downloaded == [b"OggS fake opus bytes"]
        finally:
            await app.updater.stop()
            await app.stop()

    methods = [r.method for r in fake.requests]
    assert methods[:2] == ["getMe", "deleteWebhook"]
    assert "getFile" in methods
    # the final getUpdates confirmed everything: nothing is left queued
    assert fake.pending_updates == []


async def test_webhook_delivery_with_secret(fake: FakeBotApi):
    app = build_app(fake)
    seen: list[str] = []

    async def on_text(update: Update, context) -> None:
        seen.append(update.message.text)
        await update.message.reply_text("ok")

    app.add_handler(MessageHandler(filters.TEXT, on_text))

    async def receive(request: web.Request) -> web.Response:
        if request.headers.get(SECRET_HEADER) != "s3cret-Token_1":
            return web.Response(status=403)
        update = Update.de_json(await request.json(), app.bot)
        await app.process_update(update)
        return web.Response()

    receiver = web.Application()
    receiver.router.add_post("/telegram/webhook", receive)
    runner = web.AppRunner(receiver)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}/telegram/webhook"
    try:
        async with app:
            assert await app.bot.set_webhook(
                url, secret_token="s3cret-Token_1", allowed_updates=["message", "callback_query"]
            )
            info = await app.bot.get_webhook_info()
            assert info.url == url
            assert info.allowed_updates == ("message", "callback_query")
            assert fake.webhook["secret_token"] == "s3cret-Token_1"

            assert await fake.deliver_webhook(fake.make_text_update(7, "hi")) == 200
            assert seen == ["hi"]
            assert (await fake.wait_for("sendMessage")).params["chat_id"] == 7

            assert await fake.deliver_webhook(fake.make_text_update(7, "x"), secret="wrong") == 403
            assert await fake.deliver_webhook(fake.make_text_update(7, "y"), secret=None) == 403
            assert seen == ["hi"]
            info = await app.bot.get_webhook_info()
            assert info.last_error_message == "Wrong response from the webhook: 403 Forbidden"

            # polling while a webhook is set is refused, as by Telegram
            with pytest.raises(Conflict):
                await app.bot.get_updates()
    finally:
        await runner.cleanup()


async def test_errors_match_telegram(fake: FakeBotApi):
    app = build_app(fake)
    async with app:
        with pytest.raises(BadRequest, match="(?i)message is too long"):
            await app.bot.send_message(5, "字" * 4097)
        await app.bot.send_message(5, "字" * 4096)
        with pytest.raises(BadRequest, match="(?i)message text is empty"):
            await app.bot.send_message(5, " ")
        big = fake.add_file(b"x", file_size=20 * 1024 * 1024 + 1, kind="video")
        with pytest.raises(BadRequest, match="(?i)file is too big"):
            await app.bot.get_file(big.file_id)
        with pytest.raises(BadRequest, match="(?i)invalid file_id"):
            await app.bot.get_file("AgADnope")
        sent = await app.bot.send_message(5, "a")
        with pytest.raises(BadRequest, match="(?i)message is not modified"):
            await app.bot.edit_message_text("a", chat_id=5, message_id=sent.message_id)
        assert await app.bot.delete_message(5, sent.message_id)
        with pytest.raises(BadRequest, match="(?i)message to delete not found"):
            await app.bot.delete_message(5, sent.message_id)

        fake.fail_next("sendMessage", error_code=429, retry_after=3)
        with pytest.raises(RetryAfter) as caught:
            await app.bot.send_message(5, "flood")
        assert caught.value._retry_after.total_seconds() == 3

        fake.block_chat(6)
        with pytest.raises(Exception, match="(?i)bot was blocked by the user"):
            await app.bot.send_message(6, "hello")

        assert await app.bot.set_my_commands([("status", "查询诉求进度"), ("new", "新诉求")])
        assert [c.command for c in await app.bot.get_my_commands()] == ["status", "new"]
        assert await app.bot.send_chat_action(5, "typing")
        loc = await app.bot.send_location(5, latitude=34.27, longitude=108.08)
        assert loc.location.latitude == pytest.approx(34.27)
        photo = await app.bot.send_photo(5, b"\x89PNG fake", caption="现场照片")
        assert photo.caption == "现场照片"
        uploaded = fake.files[photo.photo[-1].file_id]
        assert uploaded.data == b"\x89PNG fake"

    wrong = ApplicationBuilder().token("1:" + "A" * 35).base_url(fake.base_url).build()
    with pytest.raises(InvalidToken):
        await wrong.initialize()


async def test_rate_limiter_retries_after_429(fake: FakeBotApi):
    app = build_app(fake, rate_limiter=AIORateLimiter(max_retries=2))
    async with app:
        fake.fail_next("sendMessage", error_code=429, retry_after=0.2)
        message = await app.bot.send_message(9, "retried")
        assert message.text == "retried"
    attempts = fake.calls("sendMessage")
    assert [r.status for r in attempts] == [429, 200]
    assert attempts[1].at - attempts[0].at >= 0.2


async def test_raw_http_json_and_unknown_method(fake: FakeBotApi):
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{fake.api_url}/sendMessage", json={"chat_id": 3, "text": "json body"}
        ) as resp:
            body = await resp.json()
            assert resp.status == 200 and body["ok"] is True
            assert body["result"]["text"] == "json body"
        async with http.get(f"{fake.api_url}/getme") as resp:  # case-insensitive names
            assert (await resp.json())["result"]["is_bot"] is True
        async with http.post(f"{fake.api_url}/frobnicate") as resp:
            assert resp.status == 404
            assert await resp.json() == {"ok": False, "error_code": 404, "description": "Not Found"}
        async with http.post(f"{fake.base_url}nonsense/getMe") as resp:
            assert resp.status == 404
        async with http.post(f"{fake.api_url}/sendMessage", data={"chat_id": "3"}) as resp:
            assert resp.status == 400
            assert (await resp.json())["description"] == "Bad Request: message text is empty"
    assert fake.requests[0].params == {"chat_id": 3, "text": "json body"}


async def test_long_poll_offsets_and_duplicates(fake: FakeBotApi):
    first = fake.make_text_update(1, "one")
    fake.push_update(first)
    fake.push_update(fake.make_text_update(1, "again", update_id=first["update_id"]))
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{fake.api_url}/getUpdates", json={"timeout": 0}) as resp:
            updates = (await resp.json())["result"]
        assert [u["update_id"] for u in updates] == [first["update_id"]] * 2
        offset = first["update_id"] + 1

        async def poll():
            async with http.post(
                f"{fake.api_url}/getUpdates", json={"offset": offset, "timeout": 5}
            ) as resp:
                return (await resp.json())["result"]

        pending = asyncio.create_task(poll())
        await asyncio.sleep(0.05)
        assert not pending.done()  # long poll is waiting
        fake.push_update(fake.make_text_update(1, "two"))
        got = await asyncio.wait_for(pending, 2)
        assert [u["message"]["text"] for u in got] == ["two"]
    assert fake.pending_updates[0]["message"]["text"] == "two"  # not yet confirmed


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixtures_parse_with_ptb(name: str):
    data = load_fixture(name)
    update = Update.de_json(data, None)
    assert update.update_id == data["update_id"]
    assert update.effective_user is not None
    assert json.loads(json.dumps(data)) == data


async def test_builders_follow_fixture_shapes(fake: FakeBotApi):
    photo = fake.make_photo_update(caption="下水道堵了")
    msg = photo["message"]
    assert msg["chat"]["type"] == "private" and isinstance(msg["photo"], list)
    assert msg["photo"][-1]["width"] > msg["photo"][0]["width"]
    voice = fake.make_voice_update(duration=5)["message"]["voice"]
    assert voice["mime_type"] == "audio/ogg" and voice["duration"] == 5
    contact = fake.make_contact_update("8613912345678", user_id=42)["message"]["contact"]
    assert contact["user_id"] == 42
    for update in (
        photo,
        fake.make_location_update(34.27, 108.08),
        fake.make_sticker_update(),
        fake.make_document_update(file_name="a.pdf"),
        fake.make_video_update(duration=3),
        fake.make_command(1001, "/status", "20240612-0031"),
    ):
        assert set(update) == {"update_id", "message"}
        parsed = Update.de_json(update, None)
        assert parsed.message is not None
    ids = [fake.make_text_update(1, "x")["update_id"] for _ in range(3)]
    assert ids == sorted(ids) and len(set(ids)) == 3


async def test_telegrams_limits_answer_429_with_retry_after():
    """Past ``per_bot`` messages in a second, or a chat's burst, Telegram's 429 with
    ``retry_after`` in whole seconds; answering a button is not a message and never counts."""
    # A window of a minute: the counts hold however slowly the machine answers.
    limits = TelegramLimits(per_bot=5, chat_per_second=0.01, chat_burst=2, window_seconds=60.0)
    async with FakeBotApi(limits=limits) as fake, aiohttp.ClientSession() as http:

        async def send(chat: int) -> tuple[int, dict]:
            async with http.post(f"{fake.api_url}/sendMessage", json={"chat_id": chat, "text": "hi"}) as resp:
                return resp.status, await resp.json()

        assert [(await send(1))[0] for _ in range(2)] == [200, 200]
        status, body = await send(1)  # the chat's burst is spent
        assert status == 429 and body["parameters"]["retry_after"] >= 1
        assert "retry after" in body["description"]
        async with http.post(f"{fake.api_url}/sendChatAction", json={"chat_id": 2, "action": "typing"}) as resp:
            assert resp.status in (200, 404)  # whichever: it is not counted
        assert [(await send(chat))[0] for chat in (2, 3, 4)] == [200, 200, 200]
        status, body = await send(5)  # the 6th message within the window (the refused one did not count)
        assert status == 429 and body["parameters"]["retry_after"] >= 1
    assert fake.limits.refused == 2
