"""A local fake of the Telegram Bot API, good enough for the real python-telegram-bot.

The server speaks the wire protocol of https://core.telegram.org/bots/api: methods under
``/bot<token>/<method>`` (GET or POST; JSON, form-urlencoded or multipart bodies; method
names case-insensitive), answers ``{"ok": true, "result": ...}`` or
``{"ok": false, "error_code": ..., "description": ...}`` with Telegram's own error texts,
and serves downloads under ``/file/bot<token>/<file_path>``.

Typical use with PTB::

    async with FakeBotApi() as fake:
        app = (
            ApplicationBuilder()
            .token(fake.token)
            .base_url(fake.base_url)
            .base_file_url(fake.base_file_url)
            .build()
        )
        ...
        fake.push_update(fake.make_text_update(1001, "路灯坏了"))
        reply = await fake.wait_for("sendMessage", lambda p: p["chat_id"] == 1001)
        assert "收到" in reply.params["text"]

Everything the bot sent is in :attr:`FakeBotApi.requests` (``ApiRequest`` objects, which
also unpack as ``method, params``); values that Telegram would parse as JSON
(``reply_markup``, ``chat_id``, ``allowed_updates`` ...) are parsed, whatever encoding the
client used.
"""

from __future__ import annotations

import asyncio
import copy
import html
import json
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

FIXTURES = Path(__file__).resolve().parent.parent / "chat" / "fixtures"

DEFAULT_TOKEN = "7012345678:AAHfq3Zc0mGridlineFakeToken4Tests_0"
TOKEN_RE = re.compile(r"\d+:[A-Za-z0-9_-]{30,}")

MAX_MESSAGE_LENGTH = 4096  # UTF-16 code units, as Telegram counts
MAX_CAPTION_LENGTH = 1024
MAX_DOWNLOAD_SIZE = 20 * 1024 * 1024  # getFile refuses bigger files
MAX_UPLOAD_SIZE = 50 * 1024 * 1024

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"

# Update types Telegram leaves out when allowed_updates is empty / never set.
_NOT_DEFAULT_UPDATES = {"chat_member", "message_reaction", "message_reaction_count"}

_CHAT_ACTIONS = {
    "typing",
    "upload_photo",
    "record_video",
    "upload_video",
    "record_voice",
    "upload_voice",
    "upload_document",
    "choose_sticker",
    "find_location",
    "record_video_note",
    "upload_video_note",
}

# Parameters whose form-encoded value is plain text, never JSON.
_TEXT_PARAMS = {
    "text",
    "caption",
    "url",
    "secret_token",
    "callback_query_id",
    "parse_mode",
    "action",
    "file_id",
    "ip_address",
    "language_code",
    "phone_number",
    "first_name",
    "last_name",
    "vcard",
    "title",
    "address",
    "emoji",
    "inline_message_id",
    "business_connection_id",
    "message_effect_id",
    "description",
    "short_description",
    "name",
    "query",
    "callback_data",
}

# Bot API methods that only acknowledge (result ``true``) and are not modelled further.
_ACK_METHODS = [
    "setMyDescription",
    "setMyShortDescription",
    "setMyName",
    "setChatMenuButton",
    "setMyDefaultAdministratorRights",
    "setMessageReaction",
    "pinChatMessage",
    "unpinChatMessage",
    "unpinAllChatMessages",
    "leaveChat",
    "close",
    "logOut",
]

_SUCCESS_DESCRIPTIONS = {"setWebhook": "Webhook was set", "deleteWebhook": "Webhook was deleted"}

_FILE_ID_PREFIX = {
    "voice": "AwACAgUAAxkBAA",
    "audio": "CQACAgUAAxkBAA",
    "photo": "AgACAgUAAxkBAA",
    "document": "BQACAgUAAxkBAA",
    "video": "BAACAgUAAxkBAA",
    "sticker": "CAACAgIAAxkBAA",
}
_FILE_PATH_DIR = {
    "voice": ("voice", ".oga"),
    "audio": ("music", ".mp3"),
    "photo": ("photos", ".jpg"),
    "document": ("documents", ""),
    "video": ("videos", ".mp4"),
    "sticker": ("stickers", ".webp"),
}


def counted_message(method: str) -> bool:
    """A call Telegram counts against its message limits (``sendChatAction`` is not one)."""
    low = method.lower()
    return (low.startswith("send") and low != "sendchataction") or low in {
        "copymessage", "copymessages", "forwardmessage", "forwardmessages"}


@dataclass
class TelegramLimits:
    """Telegram's flood limits as the fake enforces them: at most ``per_bot`` messages in
    any second, and per chat about ``chat_per_second`` with bursts up to ``chat_burst`` (a
    token bucket). Past them: 429 with ``parameters.retry_after`` in whole seconds, as
    Telegram answers. ``enforce=False`` only records: a test then counts on
    ``FakeBotApi.requests`` what the bot tried to send."""

    per_bot: int = 30
    chat_per_second: float = 1.0
    chat_burst: float = 3.0
    enforce: bool = True
    window_seconds: float = 1.0  # ``per_bot`` counts within this window (tests may widen it)


class _LimitKeeper:
    def __init__(self, limits: TelegramLimits) -> None:
        self.limits = limits
        self.accepted: list[float] = []  # the bot's counted messages, last second
        self.chats: dict[str, tuple[float, float]] = {}  # chat -> (tokens, at)
        self.refused = 0

    def check(self, params: dict, now: float) -> None:
        """Raise 429 if this message would break a limit; else count it."""
        limits = self.limits
        self.accepted = [at for at in self.accepted if at > now - limits.window_seconds]
        chat = str(params.get("chat_id"))
        tokens, at = self.chats.get(chat, (limits.chat_burst, now))
        tokens = min(limits.chat_burst, tokens + (now - at) * limits.chat_per_second)
        wait = 0.0
        if len(self.accepted) >= limits.per_bot:
            wait = self.accepted[0] + limits.window_seconds - now
        if tokens < 1:
            wait = max(wait, (1 - tokens) / limits.chat_per_second)
        if wait > 0:
            self.refused += 1  # refused, or (not enforcing) one that would have been
        if wait > 0 and limits.enforce:
            retry_after = max(1, int(wait + 0.999))
            raise BotApiError(429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after})
        self.accepted.append(now)
        self.chats[chat] = (tokens - 1, now)


class BotApiError(Exception):
    """An error answer of the Bot API (raised inside method handlers)."""

    def __init__(self, code: int, description: str, parameters: dict | None = None):
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters

    def payload(self) -> dict:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.code,
            "description": self.description,
        }
        if self.parameters:
            body["parameters"] = self.parameters
        return body


def _bad_request(what: str) -> BotApiError:
    return BotApiError(400, f"Bad Request: {what}")


@dataclass
class UploadedFile:
    """A file part of a multipart request, as the server received it."""

    field: str
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class FakeFile:
    """A file the fake can hand out through getFile and the download route."""

    file_id: str
    file_unique_id: str
    file_path: str
    file_size: int
    data: bytes
    mime_type: str | None = None
    kind: str = "document"

    def as_file(self) -> dict:
        return {
            "file_id": self.file_id,
            "file_unique_id": self.file_unique_id,
            "file_size": self.file_size,
            "file_path": self.file_path,
        }


@dataclass
class ApiRequest:
    """One call the bot made. Unpacks as ``method, params``."""

    method: str
    params: dict[str, Any]
    http_method: str = "POST"
    status: int | None = None  # None while pending (long polls), then the HTTP status
    result: Any = None
    error: str | None = None
    at: float = field(default_factory=time.time)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.method, self.params))

    @property
    def ok(self) -> bool:
        return self.status == 200


class Hold:
    """Requests held back by :meth:`FakeBotApi.hold`: the bot's call hangs, as if the
    network had stalled, until :meth:`release`. ``arrived`` is set when the first one
    comes in; ``requests`` are their parameters."""

    def __init__(self, method: str, predicate: Callable[[dict], bool] | None) -> None:
        self.method = method.lower()
        self.predicate = predicate
        self.arrived = asyncio.Event()
        self.requests: list[dict] = []
        self._released = asyncio.Event()
        self._drop = False

    def matches(self, method: str, params: dict) -> bool:
        return method.lower() == self.method and (self.predicate is None or self.predicate(params))

    def release(self, *, drop: bool = False) -> None:
        """Let the held requests go on (``drop``: answer them 502 without doing anything,
        as a request that never reached Telegram)."""
        self._drop = drop
        self._released.set()

    async def wait_arrived(self, timeout: float = 30) -> dict:
        async with asyncio.timeout(timeout):
            await self.arrived.wait()
        return self.requests[0]


@dataclass
class _FailureRule:
    method: str  # lower-cased, "*" for any
    code: int
    description: str
    parameters: dict | None
    times: int


class FakeBotApi:
    """A Telegram Bot API server on 127.0.0.1 for tests (see module docstring)."""

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        bot_first_name: str = "Gridline",
        bot_username: str = "gridline_test_bot",
        first_update_id: int = 846_300_001,
        limits: TelegramLimits | None = None,
    ) -> None:
        if not TOKEN_RE.fullmatch(token):
            raise ValueError(f"not a Bot API token: {token!r}")
        self.token = token
        self.host = host
        self._port = port
        self.bot_user: dict[str, Any] = {
            "id": int(token.split(":", 1)[0]),
            "is_bot": True,
            "first_name": bot_first_name,
            "username": bot_username,
        }
        self.requests: list[ApiRequest] = []
        self.webhook: dict[str, Any] = {
            "url": "",
            "secret_token": None,
            "allowed_updates": None,
            "max_connections": None,
            "ip_address": None,
            "last_error_date": None,
            "last_error_message": None,
        }
        self.webhook_deliveries: list[dict[str, Any]] = []
        self.commands: dict[tuple[str, str], list[dict]] = {}
        self.files: dict[str, FakeFile] = {}
        self.answered_callback_queries: dict[str, dict] = {}
        self.blocked_chats: set[int] = set()

        self._updates: list[dict] = []
        self._allowed_updates: list[str] | None = None
        self._next_update_id = first_update_id
        self._poll_generation = 0
        self._users: dict[int, dict] = {}
        self._chats: dict[int, dict] = {}
        self._next_message_id: dict[int, int] = {}
        self._messages: dict[tuple[int, int], dict] = {}
        self._issued_callback_ids: set[str] = set()
        self._failures: list[_FailureRule] = []
        # Telegram's flood limits (None: every message is taken, as most tests want).
        self.limits = _LimitKeeper(limits) if limits is not None else None
        self._holds: list[Hold] = []
        self._waited: set[int] = set()
        self._file_counter = 0
        self._cond: asyncio.Condition | None = None
        self._tasks: set[asyncio.Task] = set()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._client: aiohttp.ClientSession | None = None
        self._methods: dict[str, tuple[str, Callable[[dict], Any]]] = {}
        for name, handler in [
            ("getMe", self._get_me),
            ("setWebhook", self._set_webhook),
            ("deleteWebhook", self._delete_webhook),
            ("getWebhookInfo", self._get_webhook_info),
            ("getUpdates", self._get_updates),
            ("sendMessage", self._send_message),
            ("editMessageText", self._edit_message_text),
            ("editMessageReplyMarkup", self._edit_message_reply_markup),
            ("answerCallbackQuery", self._answer_callback_query),
            ("sendChatAction", self._send_chat_action),
            ("sendPhoto", self._send_photo),
            ("sendVoice", self._send_voice),
            ("sendDocument", self._send_document),
            ("sendLocation", self._send_location),
            ("getFile", self._get_file),
            ("deleteMessage", self._delete_message),
            ("setMyCommands", self._set_my_commands),
            ("getMyCommands", self._get_my_commands),
            ("deleteMyCommands", self._delete_my_commands),
        ]:
            self._methods[name.lower()] = (name, handler)
        for name in _ACK_METHODS:
            self._methods[name.lower()] = (name, self._ack)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> FakeBotApi:
        self._cond = asyncio.Condition()
        app = web.Application(client_max_size=MAX_UPLOAD_SIZE + 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_method)
        app.router.add_route("GET", "/file/bot{token}/{file_path:.+}", self._handle_file)
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=0.5
        )
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.host, self._port)
        await self._site.start()
        sockets = self._site._server.sockets  # type: ignore[union-attr]
        self._port = sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        for hold in self._holds:
            hold.release(drop=True)
        if self._cond is not None:
            async with self._cond:
                self._poll_generation += 1  # release pending long polls
                self._cond.notify_all()
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeBotApi:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self._port}"

    @property
    def base_url(self) -> str:
        """Value for PTB's ``base_url`` (PTB appends the token)."""
        return f"{self.root_url}/bot"

    @property
    def base_file_url(self) -> str:
        """Value for PTB's ``base_file_url`` (PTB appends the token)."""
        return f"{self.root_url}/file/bot"

    @property
    def api_url(self) -> str:
        """Full method prefix including the token, for raw HTTP clients."""
        return f"{self.base_url}{self.token}"

    # ------------------------------------------------------------------ test hooks

    def fail_next(
        self,
        method: str = "*",
        *,
        error_code: int = 429,
        description: str | None = None,
        retry_after: float | None = None,
        times: int = 1,
    ) -> None:
        """Make the next ``times`` calls of ``method`` (``"*"``: any but getUpdates) fail.

        429 answers carry ``parameters.retry_after`` (default 1 second; a float is allowed
        to keep tests fast, PTB accepts it) and Telegram's "Too Many Requests" text.
        """
        parameters = None
        if error_code == 429:
            retry_after = 1 if retry_after is None else retry_after
            parameters = {"retry_after": retry_after}
            description = description or f"Too Many Requests: retry after {retry_after}"
        elif retry_after is not None:
            parameters = {"retry_after": retry_after}
        description = description or {
            400: "Bad Request: injected failure",
            401: "Unauthorized",
            403: "Forbidden: bot was blocked by the user",
            404: "Not Found",
            409: "Conflict: injected failure",
            500: "Internal Server Error",
            502: "Bad Gateway",
        }.get(error_code, "Injected failure")
        self._failures.append(
            _FailureRule(method.lower(), error_code, description, parameters, times)
        )

    def hold(self, method: str, predicate: Callable[[dict], bool] | None = None) -> Hold:
        """From now on, calls of ``method`` (whose params satisfy ``predicate``) hang until
        the returned :class:`Hold` is released: a test can kill the bot's process while the
        bot waits for Telegram, at an exact point of its work."""
        hold = Hold(method, predicate)
        self._holds.append(hold)
        return hold

    def block_chat(self, chat_id: int) -> None:
        """From now on sends to ``chat_id`` fail with 403 "bot was blocked by the user"."""
        self.blocked_chats.add(chat_id)

    def add_user(
        self,
        user_id: int,
        first_name: str = "Resident",
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = "zh-hans",
    ) -> dict:
        """Register how a user looks in updates (and in their private chat)."""
        user: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
        if last_name:
            user["last_name"] = last_name
        if username:
            user["username"] = username
        if language_code:
            user["language_code"] = language_code
        self._users[user_id] = user
        self._chats[user_id] = self._private_chat_for(user)
        return user

    def add_file(
        self,
        data: bytes,
        *,
        file_id: str | None = None,
        file_unique_id: str | None = None,
        file_path: str | None = None,
        file_size: int | None = None,
        mime_type: str | None = None,
        kind: str = "document",
    ) -> FakeFile:
        """Register downloadable bytes; returns the ids to put into updates.

        ``file_size`` may claim more than ``len(data)`` to exercise the 20 MB getFile
        limit without allocating it.
        """
        self._file_counter += 1
        n = self._file_counter
        if file_id is None:
            file_id = _FILE_ID_PREFIX.get(kind, "BQACAgUAAxkBAA") + secrets.token_urlsafe(42)
        if file_unique_id is None:
            file_unique_id = "AgAD" + secrets.token_urlsafe(9)
        if file_path is None:
            folder, ext = _FILE_PATH_DIR.get(kind, ("documents", ""))
            file_path = f"{folder}/file_{n}{ext}"
        fake = FakeFile(
            file_id=file_id,
            file_unique_id=file_unique_id,
            file_path=file_path,
            file_size=len(data) if file_size is None else file_size,
            data=data,
            mime_type=mime_type,
            kind=kind,
        )
        self.files[file_id] = fake
        return fake

    def file_by_path(self, file_path: str) -> FakeFile | None:
        return next((f for f in self.files.values() if f.file_path == file_path), None)

    def push_update(self, update: dict) -> int:
        """Queue an update for getUpdates (polling). Returns its update_id."""
        if not isinstance(update, dict) or "update_id" not in update:
            raise ValueError("an update is a dict with an update_id")
        update = copy.deepcopy(update)
        self._remember_update(update)
        self._updates.append(update)
        self._notify_soon()
        return update["update_id"]

    @property
    def pending_updates(self) -> list[dict]:
        return list(self._updates)

    def sent_messages(self, chat_id: int | None = None) -> list[dict]:
        """Message objects the bot produced (sendMessage/sendPhoto/...), oldest first."""
        out = []
        for req in self.requests:
            if (
                req.ok
                and isinstance(req.result, dict)
                and "message_id" in req.result
                and req.method.startswith("send")
                and (chat_id is None or req.result["chat"]["id"] == chat_id)
            ):
                out.append(req.result)
        return out

    def calls(self, method: str) -> list[ApiRequest]:
        """All recorded requests of one method (case-insensitive), failed ones included."""
        return [r for r in self.requests if r.method.lower() == method.lower()]

    def message(self, chat_id: int, message_id: int) -> dict | None:
        """Current state of a message (after edits), or None if unknown/deleted."""
        msg = self._messages.get((chat_id, message_id))
        return copy.deepcopy(msg) if msg else None

    async def wait_for(
        self,
        method: str,
        predicate: Callable[[dict], bool] | None = None,
        timeout: float = 5,
        *,
        include_errors: bool = False,
    ) -> ApiRequest:
        """Wait for a completed request of ``method`` whose params satisfy ``predicate``.

        Each request is handed out once: repeated calls return successive matches, so a
        dialog test can alternate ``push_update`` and ``wait_for``. Only successful requests
        count unless ``include_errors``.
        """
        assert self._cond is not None, "start() the fake first"
        wanted = method.lower()

        def find() -> ApiRequest | None:
            for index, req in enumerate(self.requests):
                if index in self._waited or req.status is None:
                    continue
                if req.method.lower() != wanted or (not req.ok and not include_errors):
                    continue
                if predicate is None or predicate(req.params):
                    self._waited.add(index)
                    return req
            return None

        try:
            async with asyncio.timeout(timeout), self._cond:
                while (found := find()) is None:
                    await self._cond.wait()
                return found
        except TimeoutError:
            seen = [(r.method, r.params) for r in self.requests if r.method.lower() == wanted]
            raise TimeoutError(
                f"no {method} request matched within {timeout}s; saw {seen!r}"
            ) from None

    # ------------------------------------------------------------------ webhook delivery

    _UNSET: Any = object()

    async def deliver_webhook(
        self,
        update: dict,
        secret: str | None = _UNSET,
        *,
        url: str | None = None,
        timeout: float = 10,
    ) -> int:
        """POST ``update`` to the registered webhook like Telegram does; return the status.

        ``secret`` defaults to the secret_token given to setWebhook; pass a string to send a
        wrong one, or None to omit the header. A JSON answer carrying ``"method"`` is
        executed as a Bot API call, as Telegram does with webhook replies.
        """
        target = url or self.webhook["url"]
        if not target:
            raise RuntimeError("no webhook set (call setWebhook or pass url=)")
        if hasattr(update, "to_dict"):
            update = update.to_dict()
        self._remember_update(copy.deepcopy(update))
        token = self.webhook["secret_token"] if secret is self._UNSET else secret
        headers = {"Content-Type": "application/json"}
        if token:
            headers[SECRET_HEADER] = token
        if self._client is None:
            self._client = aiohttp.ClientSession()
        body = json.dumps(update, ensure_ascii=False).encode()
        async with self._client.post(
            target, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as resp:
            status = resp.status
            reason = resp.reason
            text = await resp.text()
            content_type = resp.content_type
        self.webhook_deliveries.append(
            {"url": target, "update": update, "secret": token, "status": status, "body": text}
        )
        if not 200 <= status < 300:
            self.webhook["last_error_date"] = int(time.time())
            self.webhook["last_error_message"] = (
                f"Wrong response from the webhook: {status} {reason}"
            )
        elif content_type == "application/json" and text:
            try:
                reply = json.loads(text)
            except ValueError:
                reply = None
            if isinstance(reply, dict) and isinstance(reply.get("method"), str):
                params = {k: v for k, v in reply.items() if k != "method"}
                await self._dispatch(reply["method"], params, "POST")
        return status

    # ------------------------------------------------------------------ update builders

    def next_update_id(self, update_id: int | None = None) -> int:
        if update_id is not None:
            self._next_update_id = max(self._next_update_id, update_id + 1)
            return update_id
        update_id = self._next_update_id
        self._next_update_id += 1
        return update_id

    def user(self, user_id: int) -> dict:
        if user_id not in self._users:
            self.add_user(user_id, first_name="Resident", last_name=str(user_id))
        return copy.deepcopy(self._users[user_id])

    def _message_update(
        self,
        fixture: str,
        user_id: int,
        chat_id: int | None,
        update_id: int | None,
        **fields: Any,
    ) -> dict:
        update = load_fixture(fixture)
        msg = update["message"]
        user = self.user(user_id)
        chat_id = user_id if chat_id is None else chat_id
        msg["from"] = user
        msg["chat"] = self._chat(chat_id)
        msg["date"] = int(time.time())
        msg["message_id"] = self._allocate_message_id(chat_id)
        for key, value in fields.items():
            if value is None:
                msg.pop(key, None)
            else:
                msg[key] = value
        update["update_id"] = self.next_update_id(update_id)
        return update

    def make_text_update(
        self, user_id: int, text: str, chat_id: int | None = None, *, update_id: int | None = None
    ) -> dict:
        return self._message_update("update_text", user_id, chat_id, update_id, text=text)

    def make_command(
        self,
        user_id: int,
        command: str,
        args: str | None = None,
        chat_id: int | None = None,
        *,
        update_id: int | None = None,
    ) -> dict:
        """``/command args`` with the bot_command entity Telegram attaches."""
        command = command if command.startswith("/") else "/" + command
        text = f"{command} {args}" if args else command
        entity = {"offset": 0, "length": _utf16_len(command), "type": "bot_command"}
        return self._message_update(
            "update_command", user_id, chat_id, update_id, text=text, entities=[entity]
        )

    def make_callback_query(
        self,
        user_id: int,
        data: str,
        message: dict | None = None,
        *,
        chat_id: int | None = None,
        update_id: int | None = None,
    ) -> dict:
        """A button press on ``message`` (default: the bot's latest message in the chat)."""
        update = load_fixture("update_callback_query")
        query = update["callback_query"]
        chat_id = user_id if chat_id is None else chat_id
        if message is None:
            sent = self.sent_messages(chat_id)
            if not sent:
                raise ValueError(f"the bot sent nothing to chat {chat_id} to press a button on")
            message = sent[-1]
        current = self._messages.get((message["chat"]["id"], message["message_id"]))
        query["message"] = copy.deepcopy(current or message)
        query["from"] = self.user(user_id)
        query["data"] = data
        query["id"] = str(secrets.randbelow(9 * 10**18) + 10**18)
        query["chat_instance"] = str(-(abs(hash((self.token, message["chat"]["id"]))) % 10**19))
        self._issued_callback_ids.add(query["id"])
        update["update_id"] = self.next_update_id(update_id)
        return update

    def make_location_update(
        self,
        latitude: float,
        longitude: float,
        *,
        user_id: int = 1001,
        chat_id: int | None = None,
        update_id: int | None = None,
    ) -> dict:
        location = {"latitude": latitude, "longitude": longitude}
        return self._message_update(
            "update_location", user_id, chat_id, update_id, location=location
        )

    def make_contact_update(
        self,
        phone_number: str,
        user_id: int = 1001,
        *,
        contact_user_id: int | None = None,
        first_name: str | None = None,
        last_name: str | None = None,
        chat_id: int | None = None,
        update_id: int | None = None,
    ) -> dict:
        """The user shares a contact; by default their own (``request_contact`` button).

        Telegram usually sends the number without a leading ``+`` (``8613912345678``).
        """
        user = self.user(user_id)
        contact: dict[str, Any] = {
            "phone_number": phone_number,
            "first_name": first_name or user["first_name"],
        }
        last = last_name if first_name else (last_name or user.get("last_name"))
        if last:
            contact["last_name"] = last
        contact["user_id"] = user_id if contact_user_id is None else contact_user_id
        return self._message_update("update_contact", user_id, chat_id, update_id, contact=contact)

    def _media_fields(self, file_id: str | None, kind: str, default_size: int) -> dict:
        """File fields for an update: a registered file's, or made-up ids (getFile fails)."""
        if file_id is None:
            file_id = _FILE_ID_PREFIX.get(kind, "BQACAgUAAxkBAA") + secrets.token_urlsafe(42)
        fake = self.files.get(file_id)
        if fake is not None:
            return {
                "file_id": fake.file_id,
                "file_unique_id": fake.file_unique_id,
                "file_size": fake.file_size,
            }
        return {
            "file_id": file_id,
            "file_unique_id": "AgAD" + secrets.token_urlsafe(9),
            "file_size": default_size,
        }

    def make_voice_update(
        self,
        file_id: str | None = None,
        duration: int = 3,
        *,
        user_id: int = 1001,
        chat_id: int | None = None,
        mime_type: str = "audio/ogg",
        caption: str | None = None,
        update_id: int | None = None,
    ) -> dict:
        voice = {"duration": int(duration), "mime_type": mime_type}
        voice.update(self._media_fields(file_id, "voice", 4_000 * max(1, int(duration))))
        return self._message_update(
            "update_voice", user_id, chat_id, update_id, voice=voice, caption=caption
        )

    def make_photo_update(
        self,
        file_id: str | None = None,
        caption: str | None = None,
        *,
        user_id: int = 1001,
        chat_id: int | None = None,
        width: int = 1280,
        height: int = 960,
        update_id: int | None = None,
    ) -> dict:
        """A photo as Telegram sends it: a list of sizes, the last (largest) = ``file_id``."""
        sizes = _photo_sizes(self._media_fields(file_id, "photo", 150_000), width, height)
        return self._message_update(
            "update_photo", user_id, chat_id, update_id, photo=sizes, caption=caption
        )

    def make_sticker_update(
        self,
        emoji: str = "👍",
        *,
        file_id: str | None = None,
        user_id: int = 1001,
        chat_id: int | None = None,
        update_id: int | None = None,
    ) -> dict:
        sticker = load_fixture("update_sticker")["message"]["sticker"]
        sticker["emoji"] = emoji
        if file_id is not None:
            sticker.update(self._media_fields(file_id, "sticker", sticker["file_size"]))
        return self._message_update("update_sticker", user_id, chat_id, update_id, sticker=sticker)

    def make_document_update(
        self,
        file_id: str | None = None,
        file_name: str = "document.pdf",
        mime_type: str = "application/pdf",
        caption: str | None = None,
        *,
        user_id: int = 1001,
        chat_id: int | None = None,
        update_id: int | None = None,
    ) -> dict:
        document = {"file_name": file_name, "mime_type": mime_type}
        document.update(self._media_fields(file_id, "document", 48_000))
        return self._message_update(
            "update_document", user_id, chat_id, update_id, document=document, caption=caption
        )

    def make_video_update(
        self,
        file_id: str | None = None,
        duration: int = 10,
        caption: str | None = None,
        *,
        user_id: int = 1001,
        chat_id: int | None = None,
        width: int = 720,
        height: int = 1280,
        update_id: int | None = None,
    ) -> dict:
        video = load_fixture("update_video")["message"]["video"]
        video.update({"duration": int(duration), "width": width, "height": height})
        video.update(self._media_fields(file_id, "video", video["file_size"]))
        return self._message_update(
            "update_video", user_id, chat_id, update_id, video=video, caption=caption
        )

    # ------------------------------------------------------------------ HTTP plumbing

    async def _handle_method(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        if not TOKEN_RE.fullmatch(token):
            return _error(BotApiError(404, "Not Found"))
        if token != self.token:
            return _error(BotApiError(401, "Unauthorized"))
        try:
            params = await _read_params(request)
        except ValueError as exc:
            return _error(_bad_request(f"can't parse request: {exc}"))
        method = request.match_info["method"]
        hold = next((h for h in self._holds if not h._released.is_set() and h.matches(method, params)), None)
        if hold is not None:
            hold.requests.append(params)
            hold.arrived.set()
            await hold._released.wait()
            if hold._drop:
                return _error(BotApiError(502, "Bad Gateway"))
        status, body = await self._dispatch(method, params, request.method)
        return web.json_response(body, status=status, dumps=_dumps)

    async def _dispatch(self, method: str, params: dict, http_method: str) -> tuple[int, dict]:
        canonical, handler = self._methods.get(method.lower(), (method, None))
        params = self._resolve_attachments(params)
        record = ApiRequest(method=canonical, params=params, http_method=http_method)
        self.requests.append(record)
        try:
            self._maybe_fail(canonical)
            if self.limits is not None and counted_message(canonical) and "chat_id" in params:
                self.limits.check(params, record.at)
            if handler is None:
                raise BotApiError(404, "Not Found")
            result = handler(params)
            if asyncio.iscoroutine(result):
                result = await result
        except BotApiError as exc:
            record.status, record.error = exc.code, exc.description
            await self._notify()
            return exc.code, exc.payload()
        record.status, record.result = 200, result
        await self._notify()
        body: dict[str, Any] = {"ok": True, "result": result}
        if canonical in _SUCCESS_DESCRIPTIONS:
            body["description"] = _SUCCESS_DESCRIPTIONS[canonical]
        return 200, body

    async def _handle_file(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return _error(BotApiError(404, "Not Found"))
        fake = self.file_by_path(request.match_info["file_path"])
        if fake is None:
            return _error(BotApiError(404, "Not Found"))
        return web.Response(
            body=fake.data, content_type=fake.mime_type or "application/octet-stream"
        )

    def _maybe_fail(self, method: str) -> None:
        low = method.lower()
        for rule in self._failures:
            if rule.times > 0 and (
                rule.method == low or (rule.method == "*" and low != "getupdates")
            ):
                rule.times -= 1
                if rule.times == 0:
                    self._failures.remove(rule)
                raise BotApiError(rule.code, rule.description, rule.parameters)

    async def _notify(self) -> None:
        if self._cond is not None:
            async with self._cond:
                self._cond.notify_all()

    def _notify_soon(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self._notify())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _resolve_attachments(self, params: dict) -> dict:
        """Replace ``attach://name`` references by the uploaded part they name."""
        out = {}
        for key, value in params.items():
            if isinstance(value, str) and value.startswith("attach://"):
                part = params.get(value[len("attach://") :])
                out[key] = part if part is not None else value
            else:
                out[key] = value
        return out

    # ------------------------------------------------------------------ state helpers

    def _remember_update(self, update: dict) -> None:
        msg = None
        for key, value in update.items():
            if key == "callback_query" and isinstance(value, dict):
                self._issued_callback_ids.add(str(value.get("id")))
                self._remember_user(value.get("from"))
            elif isinstance(value, dict) and "message_id" in value and "chat" in value:
                msg = value
        if msg is None:
            return
        self._remember_user(msg.get("from"))
        chat = msg["chat"]
        self._chats.setdefault(chat["id"], copy.deepcopy(chat))
        self._messages[(chat["id"], msg["message_id"])] = copy.deepcopy(msg)
        current = self._next_message_id.get(chat["id"], 1)
        self._next_message_id[chat["id"]] = max(current, msg["message_id"] + 1)

    def _remember_user(self, user: dict | None) -> None:
        if isinstance(user, dict) and "id" in user and not user.get("is_bot"):
            self._users.setdefault(user["id"], copy.deepcopy(user))

    @staticmethod
    def _private_chat_for(user: dict) -> dict:
        chat = {"id": user["id"], "first_name": user["first_name"]}
        for key in ("last_name", "username"):
            if key in user:
                chat[key] = user[key]
        chat["type"] = "private"
        return chat

    def _chat(self, chat_id: Any) -> dict:
        """The Chat object for ``chat_id``; unknown positive ids are private chats."""
        if isinstance(chat_id, str):
            if chat_id.lstrip("-").isdigit():
                chat_id = int(chat_id)
            else:
                raise _bad_request("chat not found")
        if not isinstance(chat_id, int) or isinstance(chat_id, bool) or chat_id == 0:
            raise _bad_request("chat not found")
        if chat_id not in self._chats:
            if chat_id > 0:
                self._chats[chat_id] = self._private_chat_for(self.user(chat_id))
            else:
                self._chats[chat_id] = {"id": chat_id, "title": "Grid group", "type": "supergroup"}
        return copy.deepcopy(self._chats[chat_id])

    def _allocate_message_id(self, chat_id: int) -> int:
        message_id = self._next_message_id.get(chat_id, 1)
        self._next_message_id[chat_id] = message_id + 1
        return message_id

    def _target_chat(self, params: dict) -> dict:
        if params.get("chat_id") in (None, ""):
            raise _bad_request("chat_id is empty")
        chat = self._chat(params["chat_id"])
        if chat["id"] in self.blocked_chats:
            raise BotApiError(403, "Forbidden: bot was blocked by the user")
        return chat

    def _new_bot_message(self, chat: dict, params: dict, **content: Any) -> dict:
        msg: dict[str, Any] = {
            "message_id": self._allocate_message_id(chat["id"]),
            "from": copy.deepcopy(self.bot_user),
            "chat": chat,
            "date": int(time.time()),
        }
        reply = params.get("reply_parameters") or {}
        reply_id = reply.get("message_id") if isinstance(reply, dict) else None
        reply_id = reply_id or params.get("reply_to_message_id")
        if reply_id is not None:
            original = self._messages.get((chat["id"], int(reply_id)))
            if original is None:
                if not (isinstance(reply, dict) and reply.get("allow_sending_without_reply")):
                    raise _bad_request("message to be replied not found")
            else:
                replied = copy.deepcopy(original)
                replied.pop("reply_to_message", None)
                msg["reply_to_message"] = replied
        msg.update({k: v for k, v in content.items() if v is not None})
        markup = params.get("reply_markup")
        if isinstance(markup, dict) and "inline_keyboard" in markup:
            msg["reply_markup"] = markup  # Telegram echoes inline keyboards only
        self._messages[(chat["id"], msg["message_id"])] = copy.deepcopy(msg)
        return msg

    def _editable(self, params: dict) -> tuple[tuple[int, int] | None, dict | None]:
        if params.get("inline_message_id"):
            return None, None
        chat = self._chat(params.get("chat_id"))
        if params.get("message_id") in (None, ""):
            raise _bad_request("message identifier is not specified")
        key = (chat["id"], int(params["message_id"]))
        msg = self._messages.get(key)
        if msg is None:
            raise _bad_request("message to edit not found")
        if msg["from"].get("id") != self.bot_user["id"]:
            raise _bad_request("message can't be edited")
        return key, msg

    def _resolve_media(self, params: dict, field_name: str, kind: str) -> FakeFile:
        value = params.get(field_name)
        if value in (None, ""):
            raise _bad_request(f"there is no {field_name} in the request")
        if isinstance(value, UploadedFile):
            return self.add_file(value.data, mime_type=value.content_type, kind=kind)
        if isinstance(value, str):
            if value in self.files:
                return self.files[value]
            if value.startswith(("http://", "https://")):
                return self.add_file(b"", kind=kind, file_size=0)
        raise _bad_request("wrong file identifier/HTTP URL specified")

    def _caption(self, params: dict) -> dict:
        caption = params.get("caption")
        if caption and _utf16_len(caption) > MAX_CAPTION_LENGTH:
            raise _bad_request("message caption is too long")
        return {"caption": _visible_text(caption, params.get("parse_mode")) if caption else None}

    # ------------------------------------------------------------------ Bot API methods

    def _ack(self, params: dict) -> bool:
        return True

    def _get_me(self, params: dict) -> dict:
        me = copy.deepcopy(self.bot_user)
        me.update(
            {
                "can_join_groups": True,
                "can_read_all_group_messages": False,
                "supports_inline_queries": False,
                "can_connect_to_business": False,
                "has_main_web_app": False,
            }
        )
        return me

    def _set_webhook(self, params: dict) -> bool:
        if "url" not in params:
            raise _bad_request("url is empty")  # Telegram answers like this when absent
        url = params.get("url") or ""
        secret = params.get("secret_token")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", str(secret)):
            raise _bad_request("secret token contains unallowed characters")
        self.webhook.update(
            {
                "url": url,
                "secret_token": secret if url else None,
                "max_connections": int(params.get("max_connections") or 40) if url else None,
                "ip_address": params.get("ip_address") if url else None,
            }
        )
        if params.get("allowed_updates") is not None:
            self._allowed_updates = list(params["allowed_updates"])
        self.webhook["allowed_updates"] = self._allowed_updates if url else None
        if params.get("drop_pending_updates"):
            self._updates.clear()
        return True

    def _delete_webhook(self, params: dict) -> bool:
        self.webhook.update(
            {"url": "", "secret_token": None, "max_connections": None, "ip_address": None}
        )
        if params.get("drop_pending_updates"):
            self._updates.clear()
        return True

    def _get_webhook_info(self, params: dict) -> dict:
        info: dict[str, Any] = {
            "url": self.webhook["url"],
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }
        for key in ("ip_address", "last_error_date", "last_error_message", "max_connections"):
            if self.webhook.get(key) is not None:
                info[key] = self.webhook[key]
        if self.webhook["url"] and self._allowed_updates:
            info["allowed_updates"] = self._allowed_updates
        return info

    def _confirm(self, offset: int) -> None:
        if offset > 0:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        elif offset < 0:
            self._updates = self._updates[offset:]

    def _deliverable(self, limit: int) -> list[dict]:
        allowed = set(self._allowed_updates or [])
        out = []
        for update in list(self._updates):
            kind = next((k for k in update if k != "update_id"), None)
            if (allowed and kind not in allowed) or (not allowed and kind in _NOT_DEFAULT_UPDATES):
                self._updates.remove(update)  # never delivered, like Telegram
                continue
            out.append(copy.deepcopy(update))
            if len(out) >= limit:
                break
        return out

    async def _get_updates(self, params: dict) -> list[dict]:
        assert self._cond is not None
        if self.webhook["url"]:
            raise BotApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        offset = int(params.get("offset") or 0)
        limit = max(1, min(100, int(params.get("limit") or 100)))
        timeout = max(0.0, float(params.get("timeout") or 0))
        if params.get("allowed_updates") is not None:
            self._allowed_updates = list(params["allowed_updates"])
        async with self._cond:
            self._poll_generation += 1
            generation = self._poll_generation
            self._cond.notify_all()  # terminates an older long poll with 409
            self._confirm(offset)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while True:
                ready = self._deliverable(limit)
                remaining = deadline - loop.time()
                if ready or remaining <= 0:
                    return ready
                try:
                    async with asyncio.timeout(remaining):
                        await self._cond.wait()
                except TimeoutError:
                    return self._deliverable(limit)
                if generation != self._poll_generation:
                    raise BotApiError(
                        409,
                        "Conflict: terminated by other getUpdates request; "
                        "make sure that only one bot instance is running",
                    )

    def _send_message(self, params: dict) -> dict:
        chat = self._target_chat(params)
        text = params.get("text")
        if text is None or str(text).strip() == "":
            raise _bad_request("message text is empty")
        text = str(text)
        if _utf16_len(text) > MAX_MESSAGE_LENGTH:
            raise _bad_request("message is too long")
        content: dict[str, Any] = {"text": _visible_text(text, params.get("parse_mode"))}
        if params.get("entities"):
            content["entities"] = params["entities"]
        return self._new_bot_message(chat, params, **content)

    def _edit_message_text(self, params: dict) -> dict | bool:
        text = params.get("text")
        if text is None or str(text).strip() == "":
            raise _bad_request("message text is empty")
        if _utf16_len(str(text)) > MAX_MESSAGE_LENGTH:
            raise _bad_request("message is too long")
        key, msg = self._editable(params)
        if key is None or msg is None:
            return True  # inline message
        new_text = _visible_text(str(text), params.get("parse_mode"))
        markup = params.get("reply_markup")
        new_markup = markup if isinstance(markup, dict) and "inline_keyboard" in markup else None
        if msg.get("text") == new_text and msg.get("reply_markup") == new_markup:
            raise _bad_request(
                "message is not modified: specified new message content and reply markup are "
                "exactly the same as a current content and reply markup of the message"
            )
        msg["text"] = new_text
        _set_markup(msg, new_markup)
        msg["edit_date"] = int(time.time())
        return copy.deepcopy(msg)

    def _edit_message_reply_markup(self, params: dict) -> dict | bool:
        key, msg = self._editable(params)
        if key is None or msg is None:
            return True
        markup = params.get("reply_markup")
        new_markup = markup if isinstance(markup, dict) and markup.get("inline_keyboard") else None
        if msg.get("reply_markup") == new_markup:
            raise _bad_request(
                "message is not modified: specified new message content and reply markup are "
                "exactly the same as a current content and reply markup of the message"
            )
        _set_markup(msg, new_markup)
        msg["edit_date"] = int(time.time())
        return copy.deepcopy(msg)

    def _answer_callback_query(self, params: dict) -> bool:
        query_id = params.get("callback_query_id")
        if not query_id:
            raise _bad_request("query_id is empty")  # wording of the real server
        query_id = str(query_id)
        if query_id not in self._issued_callback_ids or query_id in self.answered_callback_queries:
            raise _bad_request(
                "query is too old and response timeout expired or query ID is invalid"
            )
        self.answered_callback_queries[query_id] = params
        return True

    def _send_chat_action(self, params: dict) -> bool:
        self._target_chat(params)
        action = params.get("action")
        if action not in _CHAT_ACTIONS:
            raise _bad_request("wrong parameter action in request")
        return True

    def _send_photo(self, params: dict) -> dict:
        chat = self._target_chat(params)
        fake = self._resolve_media(params, "photo", "photo")
        sizes = _photo_sizes(
            {
                "file_id": fake.file_id,
                "file_unique_id": fake.file_unique_id,
                "file_size": fake.file_size,
            },
            1280,
            960,
        )
        return self._new_bot_message(chat, params, photo=sizes, **self._caption(params))

    def _send_voice(self, params: dict) -> dict:
        chat = self._target_chat(params)
        fake = self._resolve_media(params, "voice", "voice")
        voice = {
            "duration": int(params.get("duration") or 0),
            "mime_type": fake.mime_type or "audio/ogg",
            "file_id": fake.file_id,
            "file_unique_id": fake.file_unique_id,
            "file_size": fake.file_size,
        }
        return self._new_bot_message(chat, params, voice=voice, **self._caption(params))

    def _send_document(self, params: dict) -> dict:
        chat = self._target_chat(params)
        upload = params.get("document")
        fake = self._resolve_media(params, "document", "document")
        document: dict[str, Any] = {}
        if isinstance(upload, UploadedFile) and upload.filename:
            document["file_name"] = upload.filename
        document.update(
            {
                "mime_type": fake.mime_type or "application/octet-stream",
                "file_id": fake.file_id,
                "file_unique_id": fake.file_unique_id,
                "file_size": fake.file_size,
            }
        )
        return self._new_bot_message(chat, params, document=document, **self._caption(params))

    def _send_location(self, params: dict) -> dict:
        chat = self._target_chat(params)
        for key in ("latitude", "longitude"):
            if params.get(key) in (None, ""):
                raise _bad_request(f"{key} is empty")
        lat, lon = float(params["latitude"]), float(params["longitude"])
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise _bad_request("wrong location specified")
        return self._new_bot_message(chat, params, location={"latitude": lat, "longitude": lon})

    def _get_file(self, params: dict) -> dict:
        file_id = params.get("file_id")
        if not file_id:
            raise _bad_request("file_id not specified")
        fake = self.files.get(str(file_id))
        if fake is None:
            raise _bad_request("invalid file_id")
        if fake.file_size > MAX_DOWNLOAD_SIZE:
            raise _bad_request("file is too big")
        return fake.as_file()

    def _delete_message(self, params: dict) -> bool:
        chat = self._chat(params.get("chat_id"))
        if params.get("message_id") in (None, ""):
            raise _bad_request("message identifier is not specified")
        if self._messages.pop((chat["id"], int(params["message_id"])), None) is None:
            raise _bad_request("message to delete not found")
        return True

    @staticmethod
    def _commands_key(params: dict) -> tuple[str, str]:
        scope = params.get("scope") or {"type": "default"}
        return json.dumps(scope, sort_keys=True), str(params.get("language_code") or "")

    def _set_my_commands(self, params: dict) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list):
            raise _bad_request("can't parse commands JSON object")
        for cmd in commands:
            if not isinstance(cmd, dict) or not cmd.get("command") or not cmd.get("description"):
                raise _bad_request("command description is empty")
            if not re.fullmatch(r"[a-z0-9_]{1,32}", cmd["command"]):
                raise _bad_request("BOT_COMMAND_INVALID")
        self.commands[self._commands_key(params)] = commands
        return True

    def _get_my_commands(self, params: dict) -> list[dict]:
        return copy.deepcopy(self.commands.get(self._commands_key(params), []))

    def _delete_my_commands(self, params: dict) -> bool:
        self.commands.pop(self._commands_key(params), None)
        return True


# ---------------------------------------------------------------------- helpers


def load_fixture(name: str) -> dict:
    """A recorded update from tests/chat/fixtures (``name`` without ``.json``), a fresh copy."""
    with open(FIXTURES / f"{name}.json", encoding="utf-8") as fh:
        return json.load(fh)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


def _error(exc: BotApiError) -> web.Response:
    return web.json_response(exc.payload(), status=exc.code, dumps=_dumps)


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _visible_text(text: str, parse_mode: Any) -> str:
    """Roughly what Telegram stores after parsing entities (HTML tags stripped)."""
    if isinstance(parse_mode, str) and parse_mode.upper() == "HTML":
        return html.unescape(re.sub(r"<[^>]+>", "", text))
    return text


def _set_markup(msg: dict, markup: dict | None) -> None:
    if markup is None:
        msg.pop("reply_markup", None)
    else:
        msg["reply_markup"] = markup


def _photo_sizes(largest: dict, width: int, height: int) -> list[dict]:
    """Telegram's ladder of PhotoSize objects; the last one is the original."""
    sizes = []
    for side in (90, 320, 800):
        if side >= max(width, height):
            break
        scale = side / max(width, height)
        sizes.append(
            {
                "file_id": largest["file_id"][:-8] + secrets.token_urlsafe(6)[:8],
                "file_unique_id": "AQAD" + secrets.token_urlsafe(9),
                "file_size": max(1, int(largest["file_size"] * scale * scale)),
                "width": max(1, round(width * scale)),
                "height": max(1, round(height * scale)),
            }
        )
    sizes.append({**largest, "width": width, "height": height})
    return sizes


def _coerce(key: str, value: str) -> Any:
    if key in _TEXT_PARAMS:
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


async def _read_params(request: web.Request) -> dict[str, Any]:
    """Parameters from the query string and a JSON, urlencoded or multipart body."""
    params: dict[str, Any] = {k: _coerce(k, v) for k, v in request.query.items()}
    if request.method not in ("POST", "PUT") or not request.can_read_body:
        return params
    if request.content_type == "application/json":
        body = await request.json()
        if not isinstance(body, dict):
            raise ValueError("JSON body must be an object")
        params.update(body)
        return params
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        for key, value in form.items():
            if isinstance(value, web.FileField):
                params[key] = UploadedFile(
                    field=key,
                    filename=value.filename,
                    content_type=value.content_type,
                    data=value.file.read(),
                )
            else:
                params[key] = _coerce(key, str(value))
        return params
    raw = await request.read()
    if raw:
        raise ValueError(f"unsupported content type {request.content_type}")
    return params
