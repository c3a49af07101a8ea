"""Sending within Telegram's limits, shared by every process on the database.

Telegram takes about 30 messages a second from a bot and about one a second in a chat
(short bursts tolerated), and answers 429 with ``retry_after`` past that. Each message
(``send*``, ``copyMessage``, ``forwardMessage``) takes a token from the bot's bucket and
the chat's (``core.platform.buckets``, rows in ``send_bucket``): N instances together keep
to the limits, instead of N × 30/s. Other calls (answering a button, editing a keyboard,
downloading a file) are not counted by Telegram and go at once.

In this process:

* a chat's messages go one after another, in the order they were asked for (a lock per
  chat, held until Telegram answered), so a resident reads the answers in order;
* one sender at a time asks the database for a token (``PriorityTurn``), the most urgent
  first: a job's priority (``core.platform.jobs``: a worker's dispatch message is URGENT,
  reminders and digests BULK), PROMPT for the answers of the dialog. A sender whose chat
  has no token yet waits outside the turn, so a busy chat never holds up the others;
* a 429 is waited out (its ``retry_after``) and the message asked for again.

Rates are rules data: ``[chat.send]`` in ``core/data/rules.toml``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from datetime import timedelta
from typing import Any

from telegram.error import RetryAfter
from telegram.ext import BaseRateLimiter

from core.platform import buckets, jobs
from core.platform.rules import load_rules
from core.platform.runner import current_job

log = logging.getLogger(__name__)

# The update's place among those handled at once (the update processor's semaphore), set
# while an update's handlers run: a handler waiting for Telegram's permission to send steps
# aside, so that the other residents' updates (a case being filed, whose worker is waiting
# for it) are not held up behind answers that only wait for their turn.
update_slot: ContextVar[asyncio.Semaphore | None] = ContextVar("gridline_update_slot", default=None)

CHAT_BUCKETS = "tg:chat:"  # key prefix of the chats' buckets (the bot's: "tg:bot:<id>")

# Bot API methods Telegram counts as messages.
COUNTED = frozenset({"copyMessage", "copyMessages", "forwardMessage", "forwardMessages"})


def counted(endpoint: str) -> bool:
    return endpoint in COUNTED or (endpoint.startswith("send") and endpoint != "sendChatAction")


def send_rules() -> dict:
    return load_rules()["chat"]["send"]


class PriorityTurn:
    """One holder at a time; waiters are let in by (priority, arrival)."""

    def __init__(self) -> None:
        self._held = False
        self._waiting: list[tuple[int, int, asyncio.Future]] = []
        self._arrivals = itertools.count()

    @property
    def waiting(self) -> int:
        return sum(1 for *_, fut in self._waiting if not fut.done())

    async def acquire(self, priority: int) -> None:
        if not self._held and not self.waiting:
            self._held = True
            return
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (priority, next(self._arrivals), fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # it was handed to us as we were cancelled: pass it on
            raise

    def release(self) -> None:
        while self._waiting:
            *_, fut = heapq.heappop(self._waiting)
            if not fut.done():
                fut.set_result(None)  # the turn passes straight to it (still held)
                return
        self._held = False


class SharedSender:
    """Takes tokens from the shared buckets before each counted call (see module)."""

    def __init__(self, engine: Any, bot_id: str):
        self.engine = engine
        # A thread of its own: a token must not wait in the database pool's queue behind the
        # very updates that wait for it.
        self._thread: ThreadPoolExecutor | None = None
        rules = send_rules()
        self.bot_bucket = buckets.Bucket(f"tg:bot:{bot_id}", float(rules["bot_per_second"]),
                                         float(rules["bot_burst"]))
        self.chat_rate = float(rules["chat_per_second"])
        self.chat_burst = float(rules["chat_burst"])
        self.turn = PriorityTurn()
        self._chat_locks: dict[str, list] = {}  # chat -> [lock, users]
        self.pending = 0  # counted calls waiting or on their way (/metrics' send queue)
        self.sent = 0
        self.refused = 0  # 429 answers waited out
        self.takes = 0  # token requests made to the database

    def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.shutdown(wait=False)

    def _chat_bucket(self, chat: str) -> buckets.Bucket:
        return buckets.Bucket(f"{CHAT_BUCKETS}{chat}", self.chat_rate, self.chat_burst)

    async def _token(self, chat: str, priority: int) -> None:
        wanted = [self._chat_bucket(chat), self.bot_bucket]  # the bot's, the hot row, last
        while True:
            await self.turn.acquire(priority)
            try:
                while True:
                    self.takes += 1
                    if self._thread is None:
                        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gridline-send-tokens")
                    taken = await asyncio.get_running_loop().run_in_executor(
                        self._thread, buckets.take, self.engine, wanted)
                    if taken.ok or taken.short != self.bot_bucket.key:
                        break
                    await asyncio.sleep(taken.wait)  # keeping the turn: the bot's next token is ours
            finally:
                self.turn.release()
            if taken.ok:
                return
            await asyncio.sleep(taken.wait)  # the chat's next token, out of everyone's way

    async def send(self, chat: str, priority: int, call: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        slot = update_slot.get()
        if slot is None:
            return await self._send(chat, priority, call)
        slot.release()
        try:
            return await self._send(chat, priority, call)
        finally:
            try:
                await slot.acquire()
            except asyncio.CancelledError:
                # Stopping: the processor gives the place back when the update ends; take it
                # without waiting so that the count stays right.
                slot._value -= 1  # noqa: SLF001
                raise

    async def _send(self, chat: str, priority: int, call: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        entry = self._chat_locks.setdefault(chat, [asyncio.Lock(), 0])
        entry[1] += 1
        self.pending += 1
        try:
            async with entry[0]:
                refusals = 0
                while True:
                    await self._token(chat, priority)
                    try:
                        result = await call()
                    except RetryAfter as exc:
                        # Another sender on the same bot that does not share our buckets, or
                        # Telegram stricter than its figures: wait as told, then try again.
                        refusals += 1
                        self.refused += 1
                        if refusals > int(send_rules()["max_refusals"]):
                            raise
                        pause = _seconds(exc)
                        log.info("telegram said 429 for chat %s: waiting %.1f s", chat, pause)
                        await asyncio.sleep(pause)
                        continue
                    self.sent += 1
                    return result
        finally:
            self.pending -= 1
            entry[1] -= 1
            if entry[1] == 0:
                self._chat_locks.pop(chat, None)


def _seconds(exc: RetryAfter) -> float:
    wait = exc._retry_after if hasattr(exc, "_retry_after") else exc.retry_after
    return wait.total_seconds() if isinstance(wait, timedelta) else float(wait)


def priority_now() -> int:
    """The running job's priority; PROMPT for the dialog's own answers."""
    job = current_job.get()
    return job.priority if job is not None and job.priority is not None else jobs.PROMPT


class SharedRateLimiter(BaseRateLimiter):
    """PTB's rate limiter interface over ``SharedSender``."""

    def __init__(self, sender: SharedSender):
        self.sender = sender

    @property
    def pending(self) -> int:
        return self.sender.pending

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        self.sender.close()

    async def process_request(self, callback, args, kwargs, endpoint, data, rate_limit_args):  # noqa: ANN001, ANN201
        chat = (data or {}).get("chat_id")
        if not counted(endpoint) or chat is None:
            return await _patiently(callback, args, kwargs, self.sender)
        return await self.sender.send(str(chat), priority_now(), lambda: callback(*args, **kwargs))


async def _patiently(callback, args, kwargs, sender: SharedSender):  # noqa: ANN001, ANN202
    """An uncounted call: at once, a 429 waited out like a message's."""
    for attempt in itertools.count():
        try:
            return await callback(*args, **kwargs)
        except RetryAfter as exc:
            sender.refused += 1
            if attempt >= int(send_rules()["max_refusals"]):
                raise
            await asyncio.sleep(_seconds(exc))
    return None  # not reached


# The job runner's lanes of the chat's message jobs (``[chat.send] jobs_at_once`` at once
# each). A worker's new task has a lane of its own: its jobs are claimed first anyway, but
# in a shared lane they could find every place taken by notices waiting for their tokens.
CHAT_LANE = "chat"
URGENT_LANE = "chat-urgent"


def chat_of_job(job: Any) -> str | None:
    """The order key of a message job: its chat, or the staff member it is for."""
    payload = job.payload or {}
    target = payload.get("chat_id") or payload.get("to")
    return f"chat:{target}" if isinstance(target, (str, int)) and target != "" else None


def register_lanes(runner: Any) -> None:
    for lane in (CHAT_LANE, URGENT_LANE):
        runner.set_concurrency(lane, int(send_rules()["jobs_at_once"]))
