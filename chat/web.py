"""The Telegram bot inside Gridline's one aiohttp application.

``setup(app, services)`` builds a python-telegram-bot ``Application`` and mounts
``POST /telegram/webhook``. Webhook mode (default): no PTB updater; Telegram (or a
self-hosted Bot API server) posts updates to us with the secret header, we check it,
queue the update and answer 200 at once; on start we call ``setWebhook``. Polling mode
(``GRIDLINE_TELEGRAM_MODE=polling``, for development) runs PTB's updater instead. Without
``GRIDLINE_TELEGRAM_TOKEN`` the bot is off and the rest of Gridline runs.

Around PTB's own machinery:

* every update id is recorded (``SeenMessage``) before it is handled: redeliveries are
  dropped, in both modes;
* updates of one chat are handled one after another, different chats concurrently
  (``PerChatUpdateProcessor``), database work in threads;
* conversation state and the resident's draft are written to the database after every
  update (``DbPersistence``), so a restart continues where the resident was;
* outgoing calls go through PTB's ``AIORateLimiter`` (Telegram's 30 messages/s overall,
  20/min per group) with retries on 429.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
from typing import Any

from aiohttp import web
from telegram import BotCommand, Update
from telegram.error import TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationHandlerStop,
    BaseUpdateProcessor,
    CallbackQueryHandler,
    CommandHandler,
    MessageHandler,
    TypeHandler,
    filters,
)

from chat import dialog, followup, store
from chat.callbacks import CallbackCodec
from chat.common import DEPS_KEY, Deps, answer, labels, lang, reply
from chat.persistence import DbPersistence
from chat.texts import t

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/telegram/webhook"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
ALLOWED_UPDATES = ["message", "callback_query"]
DEFAULT_API = "https://api.telegram.org"


class PerChatUpdateProcessor(BaseUpdateProcessor):
    """Concurrent across chats, in order within a chat (a dialog must see its messages
    one by one)."""

    def __init__(self, max_concurrent_updates: int):
        super().__init__(max_concurrent_updates)
        self._locks: dict[int, list] = {}

    async def do_process_update(self, update: object, coroutine: Any) -> None:
        key = None
        if isinstance(update, Update):
            key = update.effective_chat.id if update.effective_chat else (
                update.effective_user.id if update.effective_user else None)
        if key is None:
            await coroutine
            return
        entry = self._locks.setdefault(key, [asyncio.Lock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                await coroutine
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                self._locks.pop(key, None)

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None


class GridlineApplication(Application):
    """PTB's Application plus: drop redelivered updates, persist after every update."""

    gridline_engine: Any = None

    async def process_update(self, update: object) -> None:
        if isinstance(update, Update) and self.gridline_engine is not None:
            fresh = await asyncio.to_thread(store.first_sight, self.gridline_engine, update.update_id)
            if not fresh:
                log.info("update %s seen before: ignored", update.update_id)
                return
        try:
            await super().process_update(update)
        finally:
            if self.persistence is not None and isinstance(update, Update):
                await self.update_persistence()


def webhook_secret(settings: Any) -> str:
    """The configured secret, else one derived from the token (stable across instances).
    Telegram allows 1-256 characters of A-Z, a-z, 0-9, _ and -."""
    if settings.telegram_secret:
        return settings.telegram_secret
    return hashlib.sha256(("gridline-webhook\0" + settings.telegram_token).encode()).hexdigest()[:48]


def api_urls(api_url: str) -> tuple[str, str]:
    """``GRIDLINE_TELEGRAM_API_URL`` (the server's root, e.g. ``http://127.0.0.1:8081``)
    -> PTB's ``base_url`` and ``base_file_url`` (PTB appends the token)."""
    root = (api_url or DEFAULT_API).rstrip("/")
    if root.endswith("/bot"):
        root = root[: -len("/bot")]
    return f"{root}/bot", f"{root}/file/bot"


async def _ignore_edits(update: Update, context) -> None:
    # Edits and channel posts are not messages to a dialog; leave them unanswered.
    if update.edited_message or update.channel_post or update.edited_channel_post:
        raise ApplicationHandlerStop


async def _nothing_to_cancel(update: Update, context) -> None:
    language = lang(update)
    await reply(update, t(language, "dialog.nothing_to_cancel"), language)


class ChatBot:
    """The bot's lifecycle inside the aiohttp app and the webhook endpoint."""

    def __init__(
        self,
        services: Any,
        *,
        mode: str | None = None,
        rate_limit: bool = True,
        concurrency: int = 64,
        poll_timeout: float = 10.0,
    ):
        settings = services.settings
        self.services = services
        self.mode = (mode or settings.telegram_mode or "webhook").lower()
        if self.mode not in ("webhook", "polling"):
            raise ValueError(f"GRIDLINE_TELEGRAM_MODE must be webhook or polling, not {self.mode!r}")
        self.secret = webhook_secret(settings)
        self.poll_timeout = poll_timeout
        self.deps = Deps(services, CallbackCodec(f"{settings.telegram_token}\0{self.secret}"))
        self.ready = asyncio.Event()
        self._starter: asyncio.Task | None = None
        self.application = self._build(rate_limit, concurrency)

    # -- building -----------------------------------------------------------------------

    def _build(self, rate_limit: bool, concurrency: int) -> GridlineApplication:
        settings = self.services.settings
        base_url, base_file_url = api_urls(settings.telegram_api_url)
        builder = (
            Application.builder()
            .application_class(GridlineApplication)
            .token(settings.telegram_token)
            .base_url(base_url)
            .base_file_url(base_file_url)
            .persistence(DbPersistence(self.services.engine))
            .concurrent_updates(PerChatUpdateProcessor(concurrency))
            .connection_pool_size(max(8, concurrency))
        )
        if self.mode == "webhook":
            builder = builder.updater(None)
        else:
            builder = builder.get_updates_read_timeout(self.poll_timeout + 5)
        if rate_limit:
            builder = builder.rate_limiter(AIORateLimiter(max_retries=2))
        app: GridlineApplication = builder.build()
        app.gridline_engine = self.services.engine
        app.bot_data[DEPS_KEY] = self.deps
        self._add_handlers(app)
        app.add_error_handler(self._on_error)
        return app

    def _add_handlers(self, app: Application) -> None:
        app.add_handler(TypeHandler(Update, _ignore_edits), group=-2)
        # Before the dialog, and final (ApplicationHandlerStop): survey buttons and comments,
        # status queries — they work in the middle of a dialog without disturbing it.
        app.add_handler(CallbackQueryHandler(followup.survey_button, pattern=r"^sv:"), group=-1)
        app.add_handler(CommandHandler("status", followup.status), group=-1)
        app.add_handler(CommandHandler("mine", followup.mine), group=-1)
        app.add_handler(CommandHandler("help", followup.help_), group=-1)
        app.add_handler(MessageHandler(filters.Text(sorted(labels("menu.mine"))), followup.mine), group=-1)
        app.add_handler(MessageHandler((filters.TEXT & ~filters.COMMAND) | filters.VOICE,
                                       followup.survey_comment), group=-1)
        # The dialog, then what is left when no dialog took the update.
        app.add_handler(dialog.build(), group=0)
        app.add_handler(CommandHandler("start", followup.greet), group=0)
        app.add_handler(CommandHandler("cancel", _nothing_to_cancel), group=0)
        app.add_handler(MessageHandler(filters.CONTACT, followup.contact), group=0)
        app.add_handler(MessageHandler(filters.ALL, followup.unsupported), group=0)
        # Last: a button press nobody answered is answered as expired.
        app.add_handler(CallbackQueryHandler(followup.unanswered_button), group=1)

    async def _on_error(self, update: object, context) -> None:
        log.error("error while handling an update", exc_info=context.error)
        if not isinstance(update, Update):
            return
        language = lang(update)
        with contextlib.suppress(TelegramError):
            if update.callback_query is not None:
                await answer(self.deps, update.callback_query, t(language, "dialog.error"))
            elif update.effective_message is not None:
                await reply(update, t(language, "dialog.error"), language)

    # -- lifecycle ----------------------------------------------------------------------

    async def _start_once(self) -> None:
        app = self.application
        await app.initialize()
        await app.start()
        settings = self.services.settings
        if self.mode == "webhook":
            url = settings.public_url.rstrip("/") + WEBHOOK_PATH
            await app.bot.set_webhook(url=url, secret_token=self.secret, allowed_updates=ALLOWED_UPDATES,
                                      max_connections=40)
            log.info("telegram webhook set to %s", url)
        else:
            await app.updater.start_polling(timeout=self.poll_timeout, allowed_updates=ALLOWED_UPDATES,
                                            drop_pending_updates=False, poll_interval=0.0)
            log.info("telegram polling started")
        with contextlib.suppress(TelegramError):
            for language in ("zh", "en"):
                commands = [BotCommand(c, t(language, f"commands.{c}")) for c in ("new", "mine", "status", "cancel", "help")]
                await app.bot.set_my_commands(commands, language_code=None if language == "zh" else language)
        self.ready.set()

    async def _start_with_retries(self) -> None:
        delay = 1.0
        while True:
            try:
                await self._start_once()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Bot API unreachable, bad token: the rest of Gridline runs
                log.error("telegram bot failed to start (%s); retrying in %.0fs", exc, delay)
                await self._shutdown_app()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)

    async def start(self, *, wait: bool = False) -> None:
        self._starter = asyncio.get_running_loop().create_task(self._start_with_retries(), name="telegram-start")
        if wait:
            await self._starter

    async def _shutdown_app(self) -> None:
        app = self.application
        with contextlib.suppress(Exception):
            if app.updater is not None and app.updater.running:
                await app.updater.stop()
        with contextlib.suppress(Exception):
            if app.running:
                await app.stop()
        with contextlib.suppress(Exception):
            await app.shutdown()

    async def stop(self) -> None:
        if self._starter is not None and not self._starter.done():
            self._starter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starter
        self.ready.clear()
        await self._shutdown_app()

    # -- the webhook --------------------------------------------------------------------

    async def webhook(self, request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), self.secret.encode()):
            log.warning("telegram webhook with a wrong secret from %s", request.remote)
            return web.Response(status=403, text="forbidden")
        if not self.ready.is_set():
            return web.Response(status=503, text="starting")  # Telegram retries later
        try:
            data = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            return web.Response(status=400, text="not json")
        if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
            return web.Response(status=400, text="not an update")
        try:
            update = Update.de_json(data, self.application.bot)
        except Exception:
            log.warning("unreadable telegram update %s", data.get("update_id"), exc_info=True)
            return web.Response(status=200)  # redelivering it would not help
        await self.application.update_queue.put(update)
        return web.Response(status=200)


CHATBOT = web.AppKey("gridline_chatbot", ChatBot)


def setup(app: web.Application, services: Any, **options: Any) -> ChatBot | None:
    """Mount the bot on the Gridline app (``options`` go to ``ChatBot``: tests, bench)."""
    if not services.settings.telegram_token:
        log.info("GRIDLINE_TELEGRAM_TOKEN is not set: the Telegram bot is off")
        return None
    bot = ChatBot(services, **options)
    app[CHATBOT] = bot
    app.router.add_post(WEBHOOK_PATH, bot.webhook)
    jobs = followup.JobHandlers(bot)
    services.jobs.register("notify_resident", jobs.notify_resident)
    services.jobs.register("survey_chat", jobs.survey_chat)
    services.jobs.register("chat_survey_finish", jobs.chat_survey_finish)

    async def lifecycle(app: web.Application):
        await bot.start()
        yield
        await bot.stop()

    app.cleanup_ctx.append(lifecycle)
    return bot
