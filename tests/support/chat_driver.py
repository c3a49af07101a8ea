"""Residents chatting with the bot, wherever the bot runs (in the test's process or in a
`gridline serve` subprocess), through the fake Bot API: Telegram's side of a dialog.

* ``deliver(fake, update)`` posts an update to the registered webhook the way Telegram
  does: anything but a 2xx (a 503 while the bot starts or cannot keep the update, a
  refused connection while the server restarts) is delivered again, with backoff, until
  the bot takes it.
* ``Resident`` says things, presses buttons and waits for the bot's answers;
  ``Resident.file_petition`` runs a whole dialog and returns the case number the bot sent.
* ``bot_server(fake, data_dir, url)`` is a ``ServeProcess`` with the bot on, in webhook
  mode, against the fake; ``start_server`` / ``kill_server`` run its blocking calls off
  the event loop (the fake must keep answering the subprocess meanwhile).

The burst with PostgreSQL backends terminated (tests/chat/test_crash.py) is built from
these, so a test can run chat dialogs and hotline calls against the same server at once.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp
from sqlmodel import select

from chat import inbox
from core.cases.models import Case
from core.people.models import Resident as ResidentRow
from core.platform.db import session_scope
from tests.support.fake_bot_api import FakeBotApi
from tests.support.serve import ServeProcess

WEBHOOK_SECRET = "gridline-crash-test-secret_0123456789"
CASE_NUMBER = re.compile(r"\d{10,}")
FILED = "诉求已受理"


async def deliver(fake: FakeBotApi, update: dict, *, timeout: float = 120) -> int:
    """Deliver ``update`` to the webhook until it answers 2xx (Telegram's redelivery)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pause = 0.05
    while True:
        try:
            status = await fake.deliver_webhook(update, timeout=30)
        except (aiohttp.ClientError, OSError, TimeoutError):
            status = None  # the server is down or restarting
        if status is not None and 200 <= status < 300:
            return status
        if status is not None and status not in (429, 500, 502, 503, 504):
            return status  # refused for good (400, 403, 413): redelivering would not help
        if loop.time() > deadline:
            raise AssertionError(f"update {update['update_id']} was never accepted (last status {status})")
        await asyncio.sleep(pause)
        pause = min(pause * 2, 1.0)


class Resident:
    """One resident in their private chat with the bot."""

    def __init__(self, fake: FakeBotApi, user_id: int, *, first_name: str = "Resident",
                 language_code: str = "zh-hans", timeout: float = 60):
        self.fake = fake
        self.user_id = user_id
        self.timeout = timeout
        fake.add_user(user_id, first_name, language_code=language_code)

    async def send(self, update: dict) -> None:
        status = await deliver(self.fake, update, timeout=self.timeout * 2)
        assert status == 200, f"the webhook refused update {update['update_id']} with {status}"

    async def say(self, text: str) -> None:
        await self.send(self.fake.make_text_update(self.user_id, text))

    async def command(self, command: str, args: str | None = None) -> None:
        await self.send(self.fake.make_command(self.user_id, command, args))

    async def reply(self, contains: str, timeout: float | None = None) -> dict:
        """The bot's next message to this resident containing ``contains``."""
        request = await self.fake.wait_for(
            "sendMessage",
            lambda p: int(p["chat_id"]) == self.user_id and contains in p["text"],
            timeout=timeout or self.timeout,
        )
        return request.params

    def texts(self) -> list[str]:
        return [m.get("text", "") for m in self.fake.sent_messages(self.user_id)]

    async def press(self, label: str, timeout: float | None = None) -> dict:
        """Press the button ``label`` on the newest message that has it (waiting for one)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout or self.timeout)
        while True:
            for sent in reversed(self.fake.sent_messages(self.user_id)):
                current = self.fake.message(self.user_id, sent["message_id"]) or sent
                for row in (current.get("reply_markup") or {}).get("inline_keyboard", []):
                    for button in row:
                        if button["text"] == label:
                            update = self.fake.make_callback_query(self.user_id, button["callback_data"], current)
                            await self.send(update)
                            return update
            if loop.time() > deadline:
                raise AssertionError(f"no button {label!r} in the messages to {self.user_id}")
            await asyncio.sleep(0.05)

    async def file_petition(self, problem: str, category: str = "其他 / 不确定") -> str:
        """A whole dialog: the problem, "skip" for the place, a category, submit. Returns the
        case number from the bot's answer."""
        await self.say(problem)
        await self.reply("问题发生在哪里")
        await self.say("跳过")
        await self.reply("哪一类问题")
        await self.press(category)
        await self.reply("请确认")
        await self.press("✅ 确认提交")
        return number_in((await self.reply(FILED))["text"])

    def numbers_received(self) -> list[str]:
        """Every case number the bot announced to this resident as filed."""
        return [number_in(text) for text in self.texts() if FILED in text]


def number_in(text: str) -> str:
    found = CASE_NUMBER.search(text)
    assert found, f"no case number in {text!r}"
    return found.group(0)


def bot_server(fake: FakeBotApi, data_dir: Path, database_url: str, *, env: dict[str, str] | None = None
               ) -> ServeProcess:
    """`gridline serve` with the bot on, webhook mode, against ``fake``."""
    return ServeProcess(data_dir, database_url, env={
        "GRIDLINE_TELEGRAM_TOKEN": fake.token,
        "GRIDLINE_TELEGRAM_API_URL": fake.root_url,
        "GRIDLINE_TELEGRAM_SECRET": WEBHOOK_SECRET,
        "GRIDLINE_TELEGRAM_MODE": "webhook",
        **(env or {}),
    })


async def start_server(server: ServeProcess, fake: FakeBotApi, timeout: float = 120) -> None:
    """Start (or restart) the server and wait until its bot has registered the webhook."""
    calls_before = len(fake.calls("setWebhook"))
    await asyncio.to_thread(server.start)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not any(r.ok for r in fake.calls("setWebhook")[calls_before:]):
        if server.proc.poll() is not None or loop.time() > deadline:
            raise AssertionError(f"the bot never set its webhook:\n{server.log()[-3000:]}")
        await asyncio.sleep(0.05)


async def kill_server(server: ServeProcess) -> None:
    await asyncio.to_thread(server.kill)


# -- what the database holds of the residents' chats ---------------------------------------


def cases_of(engine, chat_id: int) -> list[str]:
    with session_scope(engine) as session:
        return list(session.exec(
            select(Case.number).join(ResidentRow, ResidentRow.id == Case.resident_id)
            .where(ResidentRow.chat_id == str(chat_id)).order_by(Case.id)).all())


def all_cases(engine) -> int:
    with session_scope(engine) as session:
        return len(session.exec(select(Case.id)).all())


def inbox_left(engine) -> list[str]:
    return [str(update_id) for update_id in inbox.pending_ids(engine)]
