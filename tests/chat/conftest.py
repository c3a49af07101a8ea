"""The real python-telegram-bot application inside Gridline's aiohttp app, talking HTTP to
the fake Bot API server (``tests/support/fake_bot_api.py``), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from sqlmodel import select

from chat.web import CHATBOT, ChatBot
from chat.web import setup as setup_chat
from core.people.models import Resident
from core.places.models import GazetteerEntry, Grid, GridLevel, Household
from core.platform.db import session_scope
from core.platform.settings import Settings
from core.reference.demo import grid_centre
from gridline.app import SERVICES, build_app
from tests.support.fake_bot_api import FakeBotApi, TelegramLimits
from tests.support.fake_transcriber import FakeTranscriber

SECRET = "gridline-test-secret_0123456789"


@dataclass
class Demo:
    micro_code: str
    micro_id: int
    micro_name: str
    point: tuple[float, float]
    building: str  # a gazetteer building name
    building_grid: int
    household_phone: str
    household_address: str


# A chat as fast as a deployment whose Telegram limits were raised; the sender and the fake
# Bot API agree on it. Tests of the pacing itself are marked ``telegram_pace``.
FAST_CHAT_LIMITS = TelegramLimits(per_bot=200, chat_per_second=50.0, chat_burst=10.0)


@pytest.fixture(autouse=True)
def _chat_pace(request, monkeypatch):
    """Telegram's pace in a chat (one message a second, ``[chat.send]``) is the rule in
    production; a dialog of six messages would wait four seconds for it here. Tests of the
    pacing itself are marked ``telegram_pace`` and keep the shipped rates; the others send as a
    deployment whose rules allow a faster chat would."""
    if request.node.get_closest_marker("telegram_pace"):
        return
    import chat.sending

    shipped = chat.sending.send_rules
    monkeypatch.setattr(chat.sending, "send_rules", lambda: {
        **shipped(), "chat_per_second": FAST_CHAT_LIMITS.chat_per_second,
        "chat_burst": FAST_CHAT_LIMITS.chat_burst, "bot_per_second": float(FAST_CHAT_LIMITS.per_bot)})


@pytest.fixture
def demo(demo_district) -> Demo:
    with session_scope(demo_district) as session:
        micro = session.exec(select(Grid).where(Grid.level == GridLevel.micro).order_by(Grid.code).offset(4)).first()
        point = grid_centre(session, micro.code)
        building = session.exec(
            select(GazetteerEntry).where(GazetteerEntry.kind == "building", GazetteerEntry.name.like("%幢"))
            .order_by(GazetteerEntry.id).offset(3)).first()
        resident, household = session.exec(
            select(Resident, Household).join(Household, Household.id == Resident.household_id)
            .where(Resident.phone.is_not(None)).order_by(Resident.id)).first()
        return Demo(micro.code, micro.id, micro.name, point, building.name, building.grid_id,
                    resident.phone, household.address)


@dataclass
class Harness:
    fake: FakeBotApi
    engine: object
    speech: object
    tmp_path: object
    mode: str
    app: web.Application | None = None
    runner: web.AppRunner | None = None
    sock: socket.socket | None = None
    extra: dict = field(default_factory=dict)
    # Short pauses before an update is handled again, so retry tests wait little.
    bot_options: dict = field(default_factory=lambda: {"retry_first": 0.02, "retry_longest": 0.2,
                                                       "stubborn_again": 0.5})
    settings_options: dict = field(default_factory=dict)

    @property
    def bot(self) -> ChatBot:
        return self.app[CHATBOT]

    @property
    def services(self):
        return self.app[SERVICES]

    def settings(self, port: int) -> Settings:
        return Settings(
            data_dir=self.tmp_path / "data",
            public_url=f"http://127.0.0.1:{port}",
            telegram_token=self.fake.token,
            telegram_secret=SECRET,
            telegram_api_url=self.fake.root_url,
            telegram_mode=self.mode,
            **self.settings_options,
        )

    async def start(self) -> Harness:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        port = self.sock.getsockname()[1]
        self.app = build_app(self.settings(port), engine=self.engine, speech=self.speech, channels=(),
                             run_jobs=False)
        setup_chat(self.app, self.app[SERVICES], poll_timeout=1.0, **self.bot_options)
        self.runner = web.AppRunner(self.app, handle_signals=False, access_log=None, shutdown_timeout=1)
        await self.runner.setup()
        await web.SockSite(self.runner, self.sock).start()
        await self.bot.ready.wait()
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    @property
    def url(self) -> str:
        return self.app[SERVICES].settings.public_url

    async def send(self, update: dict) -> None:
        if self.mode == "webhook":
            status = await self.fake.deliver_webhook(update)
            assert status == 200
        else:
            self.fake.push_update(update)

    async def say(self, user: int, text: str) -> None:
        await self.send(self.fake.make_text_update(user, text))

    async def command(self, user: int, command: str, args: str | None = None) -> None:
        await self.send(self.fake.make_command(user, command, args))

    async def reply(self, user: int, contains: str | None = None, timeout: float = 30) -> dict:
        """The bot's next message to ``user`` (containing ``contains``)."""
        req = await self.fake.wait_for(
            "sendMessage",
            lambda p: int(p["chat_id"]) == user and (contains is None or contains in p["text"]),
            timeout=timeout,
        )
        return req.params

    async def press(self, user: int, label: str, timeout: float = 30) -> dict:
        """Press the inline button labelled ``label`` on the latest message that has it
        (waiting for the bot to send it)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for msg in reversed(self.fake.sent_messages(user)):
                current = self.fake.message(user, msg["message_id"]) or msg
                markup = current.get("reply_markup") or {}
                for row in markup.get("inline_keyboard", []):
                    for button in row:
                        if button["text"] == label:
                            update = self.fake.make_callback_query(user, button["callback_data"], current)
                            await self.send(update)
                            return update
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"no button {label!r} in the messages to {user}")
            await asyncio.sleep(0.02)

    async def run_jobs(self) -> int:
        return await self.services.jobs.run_once()


def _fake_speech() -> FakeTranscriber:
    return FakeTranscriber()


@pytest.fixture
async def fake(request):
    """The fake Bot API; it refuses as Telegram does at the pace the test's sender keeps."""
    limits = None if request.node.get_closest_marker("telegram_pace") else FAST_CHAT_LIMITS
    async with FakeBotApi(limits=limits) as api:
        yield api


@pytest.fixture(params=["webhook"])
async def harness(request, fake, engine, demo, tmp_path):
    h = Harness(fake, engine, _fake_speech(), tmp_path, request.param)
    h.extra["demo"] = demo
    await h.start()
    yield h
    await h.stop()


@pytest.fixture(params=["webhook", "polling"])
async def any_mode(request, fake, engine, demo, tmp_path):
    h = Harness(fake, engine, _fake_speech(), tmp_path, request.param)
    h.extra["demo"] = demo
    await h.start()
    yield h
    await h.stop()
