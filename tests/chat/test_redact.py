"""The bot's token never reaches a log: httpx logs every Bot API URL (``…/bot<token>/…``)
at INFO, and exceptions may carry it too."""

from __future__ import annotations

import io
import logging

from chat import redact
from tests.support.chat_driver import Resident, bot_server, start_server
from tests.support.fake_bot_api import FakeBotApi
from tests.support.serve import database_url

TOKEN = "7012345678:AAHfq3Zc0mGridlineFakeToken4Tests_0"
KEY = TOKEN.split(":")[1]


def _capture(logger_name: str) -> tuple[logging.Logger, io.StringIO, logging.Handler]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return logger, stream, handler


def test_messages_arguments_and_tracebacks_are_redacted():
    redact.install(TOKEN)
    for name in ("httpx", "telegram.ext.Application", "somebody.else"):
        logger, stream, handler = _capture(name)
        try:
            logger.info('HTTP Request: POST %s "HTTP/1.1 200 OK"', f"http://127.0.0.1:1/bot{TOKEN}/getMe")
            logger.info(f"file at /file/bot{TOKEN.replace(':', '%3A')}/photos/1.jpg")
            try:
                raise RuntimeError(f"cannot reach https://api.example/bot{TOKEN}/getFile")
            except RuntimeError:
                logger.exception("download failed")
        finally:
            logger.removeHandler(handler)
        out = stream.getvalue()
        assert KEY not in out and "AAHfq3Zc0m" not in out, out
        assert out.count(redact.MASK) == 3, out  # every line still says what happened
        assert "getMe" in out and "photos/1.jpg" in out and "RuntimeError" in out


async def test_serve_log_has_no_token(engine, tmp_path):
    """A real `gridline serve` with the bot on: a dialog with a photo (a file download),
    a Bot API failure and a rejected webhook; the whole log is searched for the token."""
    async with FakeBotApi(TOKEN) as fake:
        server = bot_server(fake, tmp_path / "data", database_url(engine))
        try:
            await start_server(server, fake)
            resident = Resident(fake, 6_230_000_001, first_name="Tang")
            jpeg = b"\xff\xd8\xff\xe0" + b"gridline" * 64 + b"\xff\xd9"
            photo = fake.add_file(jpeg, kind="photo", mime_type="image/jpeg")
            await resident.send(fake.make_photo_update(photo.file_id, caption="路边垃圾没人清运",
                                                       user_id=resident.user_id))
            await resident.reply("问题发生在哪里")
            fake.fail_next("sendMessage", error_code=500)  # the answer to "skip" fails once
            await resident.say("跳过")
            await resident.reply("哪一类问题")
            assert await fake.deliver_webhook(fake.make_text_update(resident.user_id, "hi"), secret="wrong") == 403
        finally:
            server.stop()
        log = server.log()
    # The failed call's URL (with the token) was logged, masked; and its retry.
    assert f"/bot{redact.MASK}/sendMessage answered 500" in log
    assert "handling it again" in log
    assert KEY not in log
    assert "AAHfq3Zc0m" not in log
