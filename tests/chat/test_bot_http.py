"""The bot's aiohttp client for the Bot API (chat.bot_http), through a real PTB ``Bot``
against the fake Bot API server: parameters and uploads arrive as Telegram reads them,
downloads work, Telegram's errors and transport failures become PTB's exceptions."""

from __future__ import annotations

import socket

import pytest
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import BadRequest, NetworkError, RetryAfter, TimedOut

from chat.bot_http import AiohttpRequest
from tests.support.fake_bot_api import FakeBotApi, UploadedFile

CHAT = 4242


def _bot(fake: FakeBotApi, **options) -> Bot:
    return Bot(fake.token, base_url=fake.base_url, base_file_url=fake.base_file_url,
               request=AiohttpRequest(4, **options))


async def test_messages_buttons_and_uploads_arrive_as_telegram_reads_them():
    async with FakeBotApi() as fake:
        fake.add_user(CHAT, "Wang", language_code="zh-hans")
        async with _bot(fake) as bot:
            keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("✅ 确认提交", callback_data="d:1:submit:x")]])
            sent = await bot.send_message(CHAT, "请确认您的诉求 & 100%", reply_markup=keyboard)
            photo = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
            await bot.send_photo(CHAT, photo, caption="现场照片", filename="scene.png")
        [message] = fake.calls("sendMessage")
        assert message.params["text"] == "请确认您的诉求 & 100%"
        assert message.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "d:1:submit:x"
        assert sent.text == "请确认您的诉求 & 100%" and sent.chat.id == CHAT
        [upload] = fake.calls("sendPhoto")
        assert upload.params["caption"] == "现场照片"
        part = upload.params["photo"]
        assert isinstance(part, UploadedFile) and part.data == photo and part.filename == "scene.png"


async def test_a_file_is_downloaded():
    async with FakeBotApi() as fake:
        stored = fake.add_file(b"voice bytes " * 100, mime_type="audio/ogg")
        async with _bot(fake) as bot:
            file = await bot.get_file(stored.file_id)
            assert bytes(await file.download_as_bytearray()) == b"voice bytes " * 100


async def test_telegrams_refusals_keep_their_meaning():
    async with FakeBotApi() as fake:
        fake.add_user(CHAT, "Wang")
        async with _bot(fake) as bot:
            fake.fail_next("sendMessage", error_code=429, retry_after=3)
            with pytest.raises(RetryAfter) as refused:
                await bot.send_message(CHAT, "hello")
            assert refused.value.retry_after == 3
            with pytest.raises(BadRequest):
                await bot.send_message(CHAT, "")  # Telegram: message text is empty
            assert (await bot.send_message(CHAT, "again")).text == "again"


async def test_a_bot_api_that_does_not_answer_in_time_is_timed_out_and_the_client_goes_on():
    async with FakeBotApi() as fake:
        fake.add_user(CHAT, "Wang")
        async with _bot(fake, read_timeout=0.3) as bot:
            held = fake.hold("sendMessage")
            with pytest.raises(TimedOut):
                await bot.send_message(CHAT, "slow")
            held.release()
            assert (await bot.send_message(CHAT, "quick")).text == "quick"


async def test_a_bot_api_that_cannot_be_reached_is_a_network_error():
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    bot = Bot("123456:" + "A" * 35, base_url=f"http://127.0.0.1:{port}/bot", request=AiohttpRequest(2))
    with pytest.raises(NetworkError) as failed:
        async with bot:  # starting asks getMe
            pass
    assert not isinstance(failed.value, TimedOut)
    assert "aiohttp.Client" in str(failed.value)
