"""The Telegram bot inside Gridline's one aiohttp application.

``setup(app, services)`` builds a python-telegram-bot ``Application`` and mounts
``POST /telegram/webhook``. Webhook mode (default): no PTB updater; Telegram (or a
self-hosted Bot API server) posts updates to us with the secret header, we check it,
write the update to the database and answer 200; on start we call ``setWebhook``.
Polling mode (``GRIDLINE_TELEGRAM_MODE=polling``, for development) runs PTB's updater
instead. Without ``GRIDLINE_TELEGRAM_TOKEN`` the bot is off and the rest of Gridline runs.

Around PTB's own machinery:

* durable intake (``chat.inbox``): before Telegram hears 200 (webhook), or before the
  updater's next ``getUpdates`` confirms an update (polling, via ``InboxQueue``), its id is
  recorded (``SeenMessage``: redeliveries are dropped) and the raw update kept in the
  inbox; it leaves the inbox when its handlers have run, and on start what is left is
  replayed in update id order. A crash loses nothing a resident sent;
* updates of one chat are handled one after another, different chats concurrently
  (``PerChatUpdateProcessor``), database work in threads; with several instances on one
  PostgreSQL, one instance at a time holds a chat, handles the chat's earlier updates
  first (whoever accepted them), skips an update another instance handled, and loads the
  chat's state when another instance changed it (``chat.gate``), so a resident's updates
  may land on any instance;
* conversation state and the resident's draft are written with the inbox bookkeeping of
  the update that changed them, in one transaction (``DbPersistence``, group-committed
  with other chats' updates), so a restart continues where the resident was; jobs that
  change a chat's data (``edit_chat``) hold the chat the same way;
* a daily job (``chat_seen_cleanup``) forgets update ids older than a week (Telegram
  gives up redelivering after 24 hours);
* an update whose handling failed on the database or on a network problem with the Bot
  API stays in the inbox and is handled again with backoff, its chat's state rolled back to
  before it and the chat's later updates waiting behind it (order is kept); the resident
  hears once that it will be handled. A database error that is not a lost connection is
  tried a few times inline, then the chat moves on and the update is tried again later
  (it is still in the inbox, so a restart tries it too);
* outgoing messages take tokens from buckets in the database, the bot's and the chat's, shared
  by every instance (``chat.sending``: Telegram's 30 messages/s per bot and about 1/s per
  chat), a chat's messages in order, the most urgent first; a 429 is waited out;
* the token (and the webhook secret) never reach a log line (``chat.redact``); a Bot API
  ``file_path`` naming a local file is refused unless ``GRIDLINE_TELEGRAM_LOCAL_MODE`` says a
  local Bot API server is in use (``chat.media``).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from aiohttp import web
from sqlalchemy import and_, or_, select
from telegram import BotCommand, Update
from telegram.error import TelegramError
from telegram.ext import (
    Application,
    ApplicationHandlerStop,
    BaseUpdateProcessor,
    CallbackQueryHandler,
    CommandHandler,
    MessageHandler,
    TypeHandler,
    filters,
)
from telegram.request import HTTPXRequest
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
    wait_chain,
    wait_fixed,
)

from chat import dialog, followup, inbox, redact, sending, shape, welcome, worker, worker_jobs
from chat.bot_http import AiohttpRequest
from chat.callbacks import CallbackCodec
from chat.common import DEPS_KEY, Deps, answer, labels, lang, reply, retryable
from chat.gate import NEVER_SEEN, ChatGate, GateClosed, Turn
from chat.notices import NOTIFY_JOB
from chat.persistence import CHAT, CONV, DbPersistence
from chat.texts import BOT, t
from core.platform import buckets
from core.platform.clock import utcnow
from core.platform.instances import lease_length
from core.platform.models import ChannelState
from core.platform.retry import (
    log_retry,
    retry_if_transient,
    retry_unless_set,
    short,
    transient,
    wait_backoff,
)

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/telegram/webhook"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
ALLOWED_UPDATES = ["message", "callback_query"]
DEFAULT_API = "https://api.telegram.org"
MAX_UPDATE_BYTES = 1024 * 1024  # an update is a few kB; a caption or text at most 4096 characters
MAX_UPDATE_DEPTH = 32  # Telegram's updates nest about 6 levels deep

# Handling an update again after a failure: the first pause, doubling up to the longest.
RETRY_FIRST_S = 0.25
RETRY_LONGEST_S = 30.0
# A database error that is not a lost connection is tried this many times while the chat
# waits; then the chat moves on and the update (still in the inbox) is tried again later.
STUBBORN_ATTEMPTS = 6
STUBBORN_AGAIN_S = 300.0
# Keeping an update in the inbox on a lost connection: quick tries before Telegram hears 503.
ACCEPT_PAUSES_S = (0.05, 0.25)
# Starting the bot (setWebhook …), and keeping a polled update: first pause, doubling up to the longest.
START_FIRST_S, START_LONGEST_S = 1.0, 60.0
POLLED_FIRST_S, POLLED_LONGEST_S = 0.5, 30.0


class BotStopping(RuntimeError):
    """A job asked to change a chat while the bot stops: the job is tried again later."""

    transient = True  # core.platform.retry.transient


class HandlersFailed(Exception):
    """An update's handlers failed (``ChatBot.failed``): its chat is rolled back and the
    update handled again. The failure is ``error`` (and the cause)."""

    def __init__(self, error: BaseException):
        super().__init__(short(error))
        self.error = error


def chat_key(update: Update) -> int | None:
    """The chat an update belongs to (its user when it has none): the unit of ordering."""
    if update.effective_chat is not None:
        return update.effective_chat.id
    return update.effective_user.id if update.effective_user is not None else None


class PerChatUpdateProcessor(BaseUpdateProcessor):
    """Concurrent across chats, in order within a chat (a dialog must see its messages
    one by one)."""

    def __init__(self, max_concurrent_updates: int):
        super().__init__(max_concurrent_updates)
        self._locks: dict[int, list] = {}

    @contextlib.asynccontextmanager
    async def holding(self, key: int):
        """This process's hold on a chat (updates, and jobs that change the chat's data)."""
        entry = self._locks.setdefault(key, [asyncio.Lock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                self._locks.pop(key, None)

    async def do_process_update(self, update: object, coroutine: Any) -> None:
        key = chat_key(update) if isinstance(update, Update) else None
        if key is None:
            await coroutine
            return
        async with self.holding(key):
            slot = sending.update_slot.set(self._semaphore)
            try:
                await coroutine
            finally:
                sending.update_slot.reset(slot)

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None


class InboxQueue(asyncio.Queue):
    """The application's update queue. What PTB's updater puts here (polling) is accepted
    into the durable inbox first, and only then does the updater ask ``getUpdates`` for more
    (which confirms the update to Telegram); a redelivery is dropped. The webhook and the
    replay accept updates themselves and use ``put_accepted``."""

    accept: Any = None  # async (Update) -> bool, set by ChatBot

    async def put(self, item: object) -> None:
        if isinstance(item, Update) and self.accept is not None and not await self.accept(item):
            return
        await super().put(item)

    def put_accepted(self, update: Update) -> None:
        self.put_nowait(update)


class GridlineApplication(Application):
    """PTB's Application plus: an update that failed for a reason worth waiting out is
    handled again (``ChatBot.handle``); after an update's handlers, its chat's state and the
    end of its inbox entry are written in one transaction."""

    gridline_bot: Any = None  # the ChatBot

    async def process_update(self, update: object) -> None:
        if not isinstance(update, Update) or self.gridline_bot is None:
            await super().process_update(update)
            return
        await self.gridline_bot.handle(update, super().process_update)

    async def process_error(self, update: object | None, error: Exception, job: Any = None,
                            coroutine: Any = None) -> bool:
        bot = self.gridline_bot
        if bot is not None and job is None and isinstance(update, Update) and retryable(error):
            bot.failed(update, error)
            return True  # no further handlers and no error message: the update is handled again
        return await super().process_error(update, error, job, coroutine)


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
        retry_first: float = RETRY_FIRST_S,
        retry_longest: float = RETRY_LONGEST_S,
        stubborn_again: float = STUBBORN_AGAIN_S,
    ):
        settings = services.settings
        self.services = services
        self.mode = (mode or settings.telegram_mode or "webhook").lower()
        if self.mode not in ("webhook", "polling"):
            raise ValueError(f"GRIDLINE_TELEGRAM_MODE must be webhook or polling, not {self.mode!r}")
        self.secret = webhook_secret(settings)
        redact.install(settings.telegram_token, self.secret)  # before anything can log them
        self.poll_timeout = poll_timeout
        self.retry_first = retry_first
        self.retry_longest = retry_longest
        self.stubborn_again = stubborn_again
        self.deps = Deps(services, CallbackCodec(f"{settings.telegram_token}\0{self.secret}"))
        self.ready = asyncio.Event()
        self.stopping = asyncio.Event()
        self._starter: asyncio.Task | None = None
        self._failures: dict[int, BaseException] = {}
        self._later: dict[int, asyncio.TimerHandle] = {}
        self.retried = 0  # updates handled again after a failure (tests, the log)
        self.commits = inbox.GroupCommit(services.engine, run=self.deps.db)
        self.limiter: sending.SharedRateLimiter | None = None
        # Several instances on one PostgreSQL: one holds a chat at a time (None on SQLite).
        self.gate = ChatGate.for_engine(services.engine, chat_ns=CHAT, conv_ns=CONV)
        self.skipped = 0  # updates another instance had handled already (tests, the log)
        self.adopted = 0  # updates another instance accepted and left behind (tests, the log)
        self._adopter: asyncio.Task | None = None
        self._adopted_at: dict[int, float] = {}
        self.application = self._build(rate_limit, concurrency)

    @property
    def send_queue(self) -> int:
        """Bot API calls waiting for the rate limiter or on their way (0 without one)."""
        return self.limiter.pending if self.limiter is not None else 0

    # -- building -----------------------------------------------------------------------

    def _build(self, rate_limit: bool, concurrency: int) -> GridlineApplication:
        settings = self.services.settings
        base_url, base_file_url = api_urls(settings.telegram_api_url)
        queue = InboxQueue()
        queue.accept = self._accept_polled
        builder = (
            Application.builder()
            .application_class(GridlineApplication)
            .token(settings.telegram_token)
            .base_url(base_url)
            .base_file_url(base_file_url)
            .persistence(DbPersistence(self.services.engine, run=self.deps.db))
            .concurrent_updates(PerChatUpdateProcessor(concurrency))
            .request(AiohttpRequest(max(8, concurrency)))  # httpx's pool cost a third of the CPU (chat.bot_http)
            .update_queue(queue)
        )
        if self.mode == "webhook":
            builder = builder.updater(None)
        else:
            # One long poll at a time: PTB's own httpx client, as before (the pool's cost is per connection).
            builder = builder.get_updates_request(HTTPXRequest(read_timeout=self.poll_timeout + 5))
        if settings.telegram_local_mode:
            builder = builder.local_mode(True)
        if rate_limit:
            # Telegram's limits, kept by all instances together (buckets in the database).
            bot_id = settings.telegram_token.split(":", 1)[0]  # the bot's public id, never the secret
            self.limiter = sending.SharedRateLimiter(sending.SharedSender(self.services.engine, bot_id))
            builder = builder.rate_limiter(self.limiter)
        app: GridlineApplication = builder.build()
        app.persistence.shared = self.gate is not None
        app.gridline_bot = self
        app.bot_data[DEPS_KEY] = self.deps
        self._add_handlers(app)
        app.add_error_handler(self._on_error)
        return app

    def _add_handlers(self, app: Application) -> None:
        worker.add_handlers(app)  # group -3: staff chats never reach the resident's handlers
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
        app.add_handler(CommandHandler("start", welcome.greet), group=0)
        app.add_handler(CommandHandler("cancel", _nothing_to_cancel), group=0)
        app.add_handler(MessageHandler(filters.CONTACT, followup.contact), group=0)
        app.add_handler(MessageHandler(filters.ALL, followup.unsupported), group=0)
        # Last: a button press nobody answered is answered as expired.
        app.add_handler(CallbackQueryHandler(followup.unanswered_button), group=1)

    async def _on_error(self, update: object, context) -> None:
        log.error("error while handling an update", exc_info=context.error)
        if not isinstance(update, Update):
            return
        try:
            language = lang(update)
            if update.callback_query is not None:
                await answer(self.deps, update.callback_query, t(language, "dialog.error"))
            elif update.effective_message is not None:
                await reply(update, t(language, "dialog.error"), language)
        except Exception as exc:  # saying sorry failed too: the error above is what matters
            log.info("could not tell the chat about the error: %s", short(exc))

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
            await self._replay()
        else:
            await self._replay()
            await app.updater.start_polling(timeout=self.poll_timeout, allowed_updates=ALLOWED_UPDATES,
                                            drop_pending_updates=False, poll_interval=0.0)
            log.info("telegram polling started")
        with contextlib.suppress(TelegramError):
            for language in BOT.languages:
                commands = [BotCommand(c, t(language, f"commands.{c}")) for c in ("new", "mine", "status", "cancel", "help")]
                await app.bot.set_my_commands(commands, language_code=None if language == "zh" else language)
        self.ready.set()
        if self.gate is not None and (self._adopter is None or self._adopter.done()):
            self._adopter = asyncio.get_running_loop().create_task(self._adopt_periodically(),
                                                                   name="telegram-left-behind")

    async def _start_with_retries(self) -> None:
        # Whatever the failure (the Bot API unreachable, a webhook URL Telegram cannot reach
        # yet, a bad token), the rest of Gridline runs and the bot keeps trying to start.
        retrying = AsyncRetrying(retry=retry_if_exception_type(Exception), wait=wait_backoff(START_FIRST_S, START_LONGEST_S),
                                 before_sleep=log_retry(log, lambda _: "telegram bot start"), reraise=True)
        await retrying(self._start_once_or_shut_down)

    async def _start_once_or_shut_down(self) -> None:
        try:
            await self._start_once()
        except Exception:
            await self._shutdown_app()
            raise

    async def start(self, *, wait: bool = False) -> None:
        self.stopping.clear()
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
        self.stopping.set()  # updates waiting to be handled again stay in the inbox
        for later in self._later.values():
            later.cancel()
        self._later.clear()
        if self._starter is not None and not self._starter.done():
            self._starter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starter
        self.ready.clear()
        if self._adopter is not None:
            self._adopter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._adopter
            self._adopter = None
        await self._shutdown_app()
        await self.commits.wait_idle()
        if self.gate is not None:
            await self.gate.close()

    # -- the durable inbox --------------------------------------------------------------

    async def accept(self, update: Update, data: dict) -> bool:
        """Keep the update in the database (one transaction, shared with concurrent ones);
        False for an update id seen before."""
        fresh = await self.commits.run(inbox.accept_op(update.update_id, data, chat_key(update)))
        if not fresh:
            log.info("update %s seen before: ignored", update.update_id)
        return fresh

    async def _accept_polled(self, update: Update) -> bool:
        # The updater confirms an update to Telegram with its next getUpdates, which waits
        # for this: retry whatever failed (the database may be restarting) rather than lose it.
        wrong = shape.problem(update.to_dict())
        if wrong:
            log.warning("telegram update %s ignored: %s", update.update_id, wrong)
            return False
        retrying = AsyncRetrying(retry=retry_if_exception_type(Exception), wait=wait_backoff(POLLED_FIRST_S, POLLED_LONGEST_S),
                                 before_sleep=log_retry(log, lambda _: f"keeping update {update.update_id}"), reraise=True)
        return await retrying(self.accept, update, update.to_dict())

    # -- handling, and handling again ---------------------------------------------------

    def failed(self, update: Update, error: BaseException) -> None:
        """A handler of ``update`` failed in a way worth waiting out (``process_error``)."""
        self._failures[update.update_id] = error

    async def handle(self, update: Update, process: Callable[[Update], Awaitable[None]]) -> None:
        """Handle an update against the state the database holds. With a gate (several
        instances may share the database): take the chat, load it if another instance changed
        it, handle its earlier updates still in the inbox first, then this one unless another
        instance handled it already; let the chat go when its state is written."""
        chat_id = chat_key(update)
        if self.gate is None or chat_id is None:
            await self._handle_one(update, process, None)
            return
        user_id = update.effective_user.id if update.effective_user else None
        turn = await self._enter(chat_id, user_id, update.update_id)
        if turn is None:
            return  # stopping: the update stays in the inbox for the next start
        generation = turn.generation
        try:
            version = turn.version
            for earlier_id, data in turn.earlier:
                try:
                    earlier = Update.de_json(data, self.application.bot)
                except Exception:
                    log.exception("stored update %s is unreadable; dropped", earlier_id)
                    await self.commits.run(inbox.finish_op(earlier_id, {}))
                    continue
                log.info("update %s of chat %s (accepted elsewhere) handled before %s", earlier_id, chat_id,
                         update.update_id)
                version = await self._handle_one(earlier, process, version)
                if version is None:
                    return  # stopping, or parked with the chat's later updates behind it
            if not turn.mine:
                self.skipped += 1
                log.info("update %s was handled by another instance", update.update_id)
                return
            await self._handle_one(update, process, version)
        finally:
            self.gate.leave(chat_id, generation)

    async def _enter(self, chat_id: int, user_id: int | None, update_id: int | None) -> Turn | None:
        """Take the chat through the gate (trying again while the database is unreachable)
        and bring this process's copy of it up to date; None when stopping."""
        app = self.application
        persistence: DbPersistence = app.persistence
        keys: set[str] = set()

        async def enter() -> Turn:
            nonlocal keys
            keys = persistence.chat_keys(app, chat_id, user_id)
            return await self.gate.enter(chat_id, update_id, seen=persistence.seen.get((chat_id, user_id), NEVER_SEEN),
                                         conv_keys=sorted(keys), now=utcnow(), stopping=self.stopping)

        retrying = AsyncRetrying(retry=retry_if_transient & retry_unless_set(self.stopping),
                                 wait=wait_backoff(self.retry_first, self.retry_longest), sleep=self._pause,
                                 before_sleep=log_retry(log, lambda _: f"taking chat {chat_id}"), reraise=True)
        try:
            turn = await retrying(enter)
        except GateClosed:
            return None
        if turn.state is not None:
            persistence.load_chat(app, chat_id, keys, turn.state)
        persistence.seen[(chat_id, user_id)] = turn.version
        # Linked elsewhere: a staff chat from this update on. (Unlinked elsewhere: the staff
        # side finds out itself and tells the chat so.)
        staff_chats = worker.directory_of(app)
        if turn.staff is not None and staff_chats.chats.get(str(chat_id)) != turn.staff:
            staff_chats.add(chat_id, turn.staff)
        return turn

    async def _refresh_user(self, chat_id: int, user_id: int | None, version: int) -> None:
        """An earlier update from another member of the chat (a group): what it consults is
        loaded unless this process saw it at this version."""
        persistence: DbPersistence = self.application.persistence
        if persistence.seen.get((chat_id, user_id)) == version:
            return
        keys = persistence.chat_keys(self.application, chat_id, user_id)
        rows = await self.deps.db(_chat_rows, chat_id, sorted(keys))
        persistence.load_chat(self.application, chat_id, keys, rows)
        persistence.seen[(chat_id, user_id)] = version

    async def _handle_one(self, update: Update, process: Callable[[Update], Awaitable[None]],
                          version: int | None) -> int | None:
        """Run the update's handlers; when they fail on the database or the network, roll the
        chat's data back to before the update and run them again after a pause, keeping the
        update in the inbox and the chat's later updates behind it. Then ``finish`` it.
        ``version``: the chat's version (with a gate); returns the version after the update,
        or None when the update was left in the inbox (stopping, parked)."""
        chat_id = update.effective_chat.id if update.effective_chat else None
        if version is not None and self.gate is not None:
            user_id = update.effective_user.id if update.effective_user else None
            await self._refresh_user(chat_key(update), user_id, version)

        async def attempt() -> None:
            before = self._chat_data(chat_id)
            try:
                await process(update)
            except asyncio.CancelledError:
                raise  # the process is going down: the update stays in the inbox for the replay
            except Exception:
                # PTB's own machinery failed, not a handler: handled badly is still handled
                # (replaying it would fail again).
                self._failures.pop(update.update_id, None)
                await self.finish(update, version)
                raise
            error = self._failures.pop(update.update_id, None)
            if error is not None:
                self._restore_chat_data(chat_id, before)
                await self._tell_delayed(update)
                raise HandlersFailed(error) from error

        tries = 0

        def enough(retry_state: RetryCallState) -> bool:
            # A transient failure is waited out for as long as it lasts; another one is tried
            # a few times while the chat waits, then parked (the chat moves on).
            nonlocal tries
            tries = retry_state.attempt_number
            failure = retry_state.outcome.exception()
            return self.stopping.is_set() or (not transient(failure) and tries >= STUBBORN_ATTEMPTS)

        def again(retry_state: RetryCallState) -> None:
            self.retried += 1
            log.warning("update %s failed (%s); handling it again in %.2fs (attempt %d)", update.update_id,
                        short(retry_state.outcome.exception().error), retry_state.upcoming_sleep,
                        retry_state.attempt_number + 1)

        def retrying() -> AsyncRetrying:
            return AsyncRetrying(retry=retry_if_exception_type(HandlersFailed), stop=enough,
                                 wait=wait_backoff(self.retry_first, self.retry_longest), sleep=self._pause,
                                 before_sleep=again, reraise=True)

        try:
            await _retried_after_a_failure(retrying, attempt)
        except HandlersFailed as failed:
            if self.stopping.is_set():
                log.warning("update %s failed (%s) while stopping; it stays in the inbox for the next start",
                            update.update_id, short(failed.error))
            else:
                log.error("update %s failed %d times (%s); kept in the inbox and tried again in %.0fs",
                          update.update_id, tries, short(failed.error),
                          self.stubborn_again, exc_info=failed.error)
                await self._handle_later(update)
            return None
        self.deps.delayed.discard(update.update_id)
        return await self.finish(update, version)

    def _chat_data(self, chat_id: int | None) -> dict | None:
        if chat_id is None:
            return None
        return copy.deepcopy(dict(self.application.chat_data.get(chat_id) or {}))

    def _restore_chat_data(self, chat_id: int | None, before: dict | None) -> None:
        # The conversation state did not move (PTB keeps it when a handler raises); the
        # draft may have been changed half-way, so it goes back to what the update found.
        if chat_id is None:
            return
        data = self.application.chat_data[chat_id]
        data.clear()
        data.update(copy.deepcopy(before or {}))

    async def _tell_delayed(self, update: Update) -> None:
        """Once per update: "saved, it will be handled" (unless a handler said it already)."""
        if update.update_id in self.deps.delayed:
            return
        self.deps.delayed.add(update.update_id)
        language = lang(update)
        text = t(language, "dialog.delayed")
        with contextlib.suppress(TelegramError):
            if update.callback_query is not None:
                await answer(self.deps, update.callback_query, text)
            if update.effective_message is not None:
                await reply(update, text, language)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    async def _handle_later(self, update: Update) -> None:
        if self.gate is not None:  # other instances leave it too until then
            until = utcnow() + timedelta(seconds=self.stubborn_again)
            with contextlib.suppress(Exception):  # unmarked, it is taken with the chat's next update
                await self.commits.run(inbox.park_op(update.update_id, until))

        def again() -> None:
            self._later.pop(update.update_id, None)
            if not self.stopping.is_set():
                self.application.update_queue.put_accepted(update)

        previous = self._later.pop(update.update_id, None)
        if previous is not None:
            previous.cancel()
        self._later[update.update_id] = asyncio.get_running_loop().call_later(self.stubborn_again, again)

    async def finish(self, update: Update, version: int | None = None) -> int | None:
        """After the handlers: the chat's new state written, its version raised (with a gate)
        and the update out of the inbox, in one transaction (tried until it is written: until
        then the update would be handled again). Returns the chat's version after it."""
        app = self.application
        chat = update.effective_chat
        await app.update_persistence()  # fills the persistence's buffer; no I/O
        writes = app.persistence.take(chat.id if chat else None)
        heads = {chat.id: version + 1} if version is not None and chat is not None and writes else {}
        # Any database error is worth another try here (chat.common.retryable): until it is
        # written, the update would be handled again.
        def retrying() -> AsyncRetrying:
            return AsyncRetrying(retry=retry_if_exception(retryable) & retry_unless_set(self.stopping),
                                 wait=wait_backoff(self.retry_first, self.retry_longest), sleep=self._pause,
                                 before_sleep=log_retry(log, lambda _: f"recording the end of update {update.update_id}"),
                                 reraise=True)

        try:
            await _retried_after_a_failure(retrying, self.commits.run, inbox.finish_op(update.update_id, writes, heads))
        except Exception:
            app.persistence.back(writes)
            if chat is not None:
                app.persistence.forget(chat.id)
            log.exception("could not record the end of update %s; it will be handled again", update.update_id)
            return None
        if heads:
            app.persistence.seen[(chat.id, update.effective_user.id if update.effective_user else None)] = version + 1
        return version + 1 if heads else version

    async def edit_chat(self, chat_id: int, change: Callable[[dict], bool]) -> None:
        """Change a chat's data outside an update (a job): ``change`` gets the chat's data as
        the database holds it and says whether it changed it; the change is written like an
        update's, while the chat is held here (and, with a gate, across instances)."""
        app = self.application
        processor: PerChatUpdateProcessor = app.update_processor
        async with processor.holding(chat_id):
            version = turn = None
            if self.gate is not None:
                turn = await self._enter(chat_id, None, None)
                if turn is None:
                    raise BotStopping("the bot is stopping")
                version = turn.version
            try:
                if not change(app.chat_data[chat_id]):
                    return
                app.mark_data_for_update_persistence(chat_ids=chat_id)
                await app.update_persistence()
                writes = app.persistence.take(chat_id)
                heads = {chat_id: version + 1} if version is not None and writes else {}
                try:
                    await self.commits.run(inbox.finish_op(None, writes, heads))
                except Exception:
                    app.persistence.back(writes)
                    app.persistence.forget(chat_id)
                    raise
                if heads:
                    app.persistence.seen[(chat_id, None)] = version + 1
            finally:
                if turn is not None:
                    self.gate.leave(chat_id, turn.generation)

    async def _replay(self) -> None:
        """Updates accepted but never finished (the process died): handle them now, in the
        order Telegram numbered them, before any new one."""
        left = await self.deps.db(inbox.pending)
        queue: InboxQueue = self.application.update_queue
        for update_id, data in left:
            try:
                update = Update.de_json(data, self.application.bot)
            except Exception:
                log.exception("stored update %s is unreadable; dropped", update_id)
                await self.commits.run(inbox.finish_op(update_id, {}))
                continue
            queue.put_accepted(update)
        if left:
            log.warning("replaying %d telegram update(s) left unfinished", len(left))

    async def _adopt_periodically(self) -> None:
        """Several instances: an update another instance accepted (Telegram heard 200) and
        did not finish within an instance's lease (``[instances] lease_seconds``) was left
        behind by an instance that is gone; nobody replays it until the chat's next update
        or that instance's restart, and the resident waits for a reply that never comes.
        Queue it here. The gate makes this safe: the chat is taken first, and an update
        that its instance handled meanwhile is not handled again."""
        lease = lease_length()
        every = max(lease.total_seconds() / 4, 0.5)
        loop = asyncio.get_running_loop()
        while not self.stopping.is_set():
            await asyncio.sleep(every)
            try:
                now = utcnow()
                left = await self.deps.db(inbox.left_behind, now - lease, now)
            except Exception as exc:  # the database restarting: the next round
                log.warning("could not look for updates left behind: %s", short(exc))
                continue
            queue: InboxQueue = self.application.update_queue
            for update_id, data in left:
                if loop.time() - self._adopted_at.get(update_id, -1e9) < lease.total_seconds():
                    continue  # queued here a moment ago: still on its way
                try:
                    update = Update.de_json(data, self.application.bot)
                except Exception:
                    continue  # the replay at a start drops it
                self._adopted_at[update_id] = loop.time()
                self.adopted += 1
                log.warning("telegram update %s was accepted over %s ago and never handled: taken here",
                            update_id, lease)
                queue.put_accepted(update)
            for update_id in [u for u, at in self._adopted_at.items() if loop.time() - at > 10 * lease.total_seconds()]:
                del self._adopted_at[update_id]

    # -- the webhook --------------------------------------------------------------------

    async def webhook(self, request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), self.secret.encode()):
            log.warning("telegram webhook with a wrong secret from %s", request.remote)
            return web.Response(status=403, text="forbidden")
        if not self.ready.is_set():
            return web.Response(status=503, text="starting")  # Telegram retries later
        body = await _read_bounded(request, MAX_UPDATE_BYTES)
        if body is None:
            return web.Response(status=413, text="an update is never this big")
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested thousands deep
            return web.Response(status=400, text="not json")
        if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
            return web.Response(status=400, text="not an update")
        if _nesting(data, MAX_UPDATE_DEPTH) > MAX_UPDATE_DEPTH:
            log.warning("telegram update %s nested deeper than %d levels: refused", data["update_id"],
                        MAX_UPDATE_DEPTH)
            return web.Response(status=400, text="nested too deeply")
        wrong = shape.problem(data)
        if wrong:  # Telegram never sends it: nothing a handler could answer, nothing to keep
            log.warning("telegram update %s ignored: %s", data["update_id"], wrong)
            return web.Response(status=200)
        try:
            update = Update.de_json(data, self.application.bot)
        except Exception as exc:
            log.warning("unreadable telegram update %s: %s", data.get("update_id"), short(exc))
            return web.Response(status=200)  # redelivering it would not help
        # Kept and queued in a task of its own: a dropped connection cancelling this handler
        # must not leave an update kept (so redeliveries are ignored) but never queued.
        intake = asyncio.get_running_loop().create_task(self._keep_and_queue(update, data))
        intake.add_done_callback(lambda task: task.cancelled() or task.exception())  # retrieved
        try:
            await asyncio.shield(intake)
        except Exception as exc:
            log.error("could not keep telegram update %s (%s); Telegram will deliver it again",
                      update.update_id, short(exc), exc_info=None if transient(exc) else exc)
            return web.Response(status=503, text="try again")  # Telegram redelivers
        return web.Response(status=200)

    async def _keep_and_queue(self, update: Update, data: dict) -> None:
        def retrying() -> AsyncRetrying:
            return AsyncRetrying(retry=retry_if_transient, stop=stop_after_attempt(len(ACCEPT_PAUSES_S) + 1),
                                 wait=wait_chain(*map(wait_fixed, ACCEPT_PAUSES_S)),
                                 before_sleep=log_retry(log, lambda _: f"keeping telegram update {update.update_id}"),
                                 reraise=True)

        fresh = await _retried_after_a_failure(retrying, self.accept, update, data)
        if fresh:
            self.application.update_queue.put_accepted(update)


async def _retried_after_a_failure(retrying: Callable[[], AsyncRetrying], fn: Callable[..., Awaitable[Any]],
                                   *args: Any) -> Any:
    """``retrying()(fn, *args)``, with tenacity's machinery made only once the first try has
    failed: on the way every update takes (kept, handled, its end written) building the
    policy cost about a tenth of PTB's CPU for an update under a burst. The failure is handed to the policy as its first
    attempt's outcome, so what is tried again, how often and after which pauses is the
    policy's, exactly as if it had run the first try itself."""
    try:
        return await fn(*args)
    except Exception as failure:  # noqa: BLE001 (the policy decides, as it would have)
        first = [failure]

    async def again(*again_args: Any) -> Any:
        if first:
            raise first.pop()
        return await fn(*again_args)

    return await retrying()(again, *args)


async def _read_bounded(request: web.Request, limit: int) -> bytes | None:
    """The request body, or None when it is longer than ``limit`` bytes."""
    if request.content_length is not None and request.content_length > limit:
        return None
    chunks, size = [], 0
    while chunk := await request.content.read(64 * 1024):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _nesting(value: Any, limit: int) -> int:
    """How deep lists and objects nest in ``value`` (counting stops past ``limit``)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


def _chat_rows(engine: Any, chat_id: int, conv_keys: list[str]) -> list[tuple[str, str, Any]]:
    """A chat's data row and the conversation rows under ``conv_keys``."""
    table = ChannelState.__table__
    with engine.connect() as conn:
        rows = conn.execute(select(table.c.namespace, table.c.key, table.c.data).where(or_(
            and_(table.c.namespace == CHAT, table.c.key == str(chat_id)),
            and_(table.c.namespace == CONV, table.c.key.in_(conv_keys))))).all()
    return [(ns, key, data) for ns, key, data in rows]


CHATBOT = web.AppKey("gridline_chatbot", ChatBot)


def setup(app: web.Application, services: Any, **options: Any) -> ChatBot | None:
    """Mount the bot on the Gridline app (``options`` go to ``ChatBot``: tests, bench)."""
    if not services.settings.telegram_token:
        log.info("GRIDLINE_TELEGRAM_TOKEN is not set: the Telegram bot is off")
        return None
    bot = ChatBot(services, **options)
    app[CHATBOT] = bot
    services.gauges["gridline_chat_send_queue"] = lambda: bot.send_queue  # for /metrics
    app.router.add_post(WEBHOOK_PATH, bot.webhook)
    jobs = followup.JobHandlers(bot)
    messages = {"lane": sending.CHAT_LANE, "order_key": sending.chat_of_job}
    sending.register_lanes(services.jobs)
    services.jobs.register(NOTIFY_JOB, jobs.notify_resident, **messages)
    services.jobs.register("survey_chat", jobs.survey_chat, **messages)
    services.jobs.register(followup.SURVEY_FINISH_JOB, jobs.chat_survey_finish, **messages)
    worker_jobs.setup(app, services, bot)

    async def seen_cleanup(job) -> None:  # noqa: ANN001
        forgotten = await bot.deps.db(inbox.forget_seen)
        log.info("forgot %d telegram update id(s) older than %s", forgotten, inbox.SEEN_KEEP)
        # A chat's send bucket idle for an hour is full again: its row says nothing more.
        await bot.deps.db(buckets.forget, sending.CHAT_BUCKETS, 3600.0)

    services.jobs.register(inbox.CLEANUP_JOB, seen_cleanup)

    async def schedule_cleanup() -> None:
        while True:
            try:
                await bot.deps.db(inbox.schedule_cleanup)
                services.jobs.wake()
            except Exception:  # database restarting: try again later
                log.exception("could not schedule the chat cleanup")
            await asyncio.sleep(3600)

    async def lifecycle(app: web.Application):
        ticker = asyncio.get_running_loop().create_task(schedule_cleanup(), name="chat-cleanup-ticker")
        await bot.start()
        yield
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        await bot.stop()

    app.cleanup_ctx.append(lifecycle)
    return bot
