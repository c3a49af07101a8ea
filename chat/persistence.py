"""python-telegram-bot persistence in our database (``ChannelState`` rows).

Stored: conversation states (namespace ``tg:conv``, key ``<handler name>:<chat>:<user>``)
and per-chat data (namespace ``tg:chat``, key ``<chat id>``), which holds the resident's
unfinished petition. User data, bot data and callback data are not kept: the dialog
does not need them and they would be one more write per update.

Everything is loaded at start. With several instances on one database another instance may
have changed a chat since: before a chat's update is handled, ``chat.gate`` says whether the
chat's version is still the one this process last saw, and when it is not, hands over the
chat's rows, which ``load_chat`` puts in place of what this process held (chat data, and the
conversation states the update's handlers will consult). PTB's ``refresh_chat_data`` is not
used for this: it runs after the first handler matched, and the conversation handler has
chosen its state by then.

PTB hands us changed entries (``update_conversation``, ``update_chat_data``) after every
update; they are only *buffered* here, and only when they differ from what the database
holds (as this process last loaded or wrote it). ``chat.web`` then takes the buffer
(``take``) and writes it in the same transaction that removes the update from the durable
inbox (``chat.inbox``) and raises the chat's version: one transaction per update, shared
with other chats' updates that finish at the same time, and none for an update that
changed nothing. ``flush`` (at shutdown) writes whatever is left.

Every database call runs off the event loop through the bot's ``Deps.db``. Values are JSON
(dicts, lists, strings, numbers); an empty chat data dict is no row.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine
from sqlmodel import select
from telegram.ext import Application, BasePersistence, ConversationHandler, PersistenceInput

from chat.inbox import write_state
from core.platform.db import session_scope
from core.platform.models import ChannelState

log = logging.getLogger(__name__)

CONV = "tg:conv"
CHAT = "tg:chat"

Key = tuple[str, str]
_UNKNOWN = object()


def _conv_key(name: str, key: tuple) -> str:
    return f"{name}:" + ":".join(str(k) for k in key)


def _chat_of(k: Key) -> str:
    namespace, key = k
    if namespace == CHAT:
        return key
    parts = key.split(":")  # <handler name>:<chat>:<user>
    return parts[1] if len(parts) > 1 else ""


def conversation_states(handler: ConversationHandler) -> Any:
    """The live mapping ``conversation key -> state`` that ``handler.check_update`` consults
    and ``Application.update_persistence`` writes from (PTB's ``TrackingDict``).

    PTB has no public way to change a persistent conversation's state after start; this is
    the one place that reaches in (``tests/chat/test_instances.py`` fails loudly when a PTB
    release moves it)."""
    states = getattr(handler, "_conversations", None)
    if states is None or not callable(getattr(states, "update_no_track", None)):
        raise RuntimeError("python-telegram-bot's ConversationHandler no longer keeps its states in "
                           "_conversations (a TrackingDict): chat.persistence.conversation_states needs updating")
    return states


def persistent_conversations(app: Application) -> list[ConversationHandler]:
    return [h for group in app.handlers.values() for h in group
            if isinstance(h, ConversationHandler) and h.persistent and h.name]


def conversation_key(handler: ConversationHandler, chat_id: int, user_id: int | None) -> tuple | None:
    """The key ``handler`` files an update of ``chat_id`` from ``user_id`` under (as
    ``ConversationHandler._get_key`` builds it from the public flags)."""
    if handler.per_message:
        return None  # keyed by message: not used by Gridline
    key: list[int] = []
    if handler.per_chat:
        key.append(chat_id)
    if handler.per_user:
        if user_id is None:
            return None
        key.append(user_id)
    return tuple(key)


def _json(data: Any) -> Any:
    # JSON round trip: the column must never hold something json cannot read back, and
    # the normal form (lists for tuples) makes "unchanged" a plain comparison.
    return json.loads(json.dumps(data, ensure_ascii=False))


class DbPersistence(BasePersistence[dict, dict, dict]):
    def __init__(self, engine: Engine, *, run: Callable[..., Any] | None = None, update_interval: float = 60):
        super().__init__(
            store_data=PersistenceInput(bot_data=False, chat_data=True, user_data=False, callback_data=False),
            update_interval=update_interval,
        )
        self.engine = engine
        # How a database function ``f(engine, *args)`` runs off the event loop (``Deps.db``).
        self._run = run or (lambda func, *args: asyncio.to_thread(func, engine, *args))
        self._known: dict[Key, Any] = {}  # what the database holds (None: no row)
        self._dirty: dict[Key, Any] = {}  # changes not written yet
        # (chat, user) -> the chat's version when this process last loaded or wrote what
        # that user's updates consult (chat.gate)
        self.seen: dict[tuple[int, int | None], int] = {}
        self.shared = False  # several instances may share the database (chat.gate is in use)

    # -- the buffer -----------------------------------------------------------------------

    def _set(self, namespace: str, key: str, data: Any) -> None:
        k = (namespace, key)
        value = None if data is None else _json(data)
        if self._known.get(k) == value and k not in self._dirty:
            return
        self._dirty[k] = value

    def take(self, chat_id: int | None = None) -> dict[Key, Any]:
        """The changes to write now (only those of ``chat_id`` when given: an update's
        transaction carries its own chat's state, never another chat's half-way one); the
        caller writes them, or gives them ``back``."""
        if chat_id is None:
            writes, self._dirty = self._dirty, {}
        else:
            mine = str(chat_id)
            writes = {k: v for k, v in self._dirty.items() if _chat_of(k) == mine}
            for k in writes:
                del self._dirty[k]
        for k, value in writes.items():
            self._known[k] = value
        return writes

    def back(self, writes: dict[Key, Any]) -> None:
        """A write failed: keep what was not changed again since, for the next write."""
        for k, value in writes.items():
            self._known[k] = _UNKNOWN
            self._dirty.setdefault(k, value)

    # -- another instance changed a chat ----------------------------------------------

    def chat_keys(self, app: Application, chat_id: int, user_id: int | None) -> dict[str, tuple[ConversationHandler, tuple]]:
        """The conversation rows (by key) an update of ``chat_id`` from ``user_id`` consults,
        and those of the chat this process holds in memory."""
        out: dict[str, tuple[ConversationHandler, tuple]] = {}
        for handler in persistent_conversations(app):
            key = conversation_key(handler, chat_id, user_id)
            if key is not None:
                out[_conv_key(handler.name, key)] = (handler, key)
            if handler.per_chat:
                for held in list(conversation_states(handler)):
                    if isinstance(held, tuple) and held and held[0] == chat_id:
                        out[_conv_key(handler.name, held)] = (handler, held)
        return out

    def load_chat(self, app: Application, chat_id: int, keys: dict[str, tuple[ConversationHandler, tuple]],
                  rows: list[tuple[str, str, Any]]) -> None:
        """Put the database's rows of a chat (``chat.gate``) in place of what this process
        held: its chat data, and the conversation states under ``keys`` (absent: ended)."""
        found = {(ns, key): data for ns, key, data in rows}
        mine = str(chat_id)
        for k in [k for k in self._dirty if _chat_of(k) == mine]:
            del self._dirty[k]  # a write that failed: the update is still in the inbox
        data = found.get((CHAT, mine))
        self._known[(CHAT, mine)] = data
        chat_data = app.chat_data[chat_id]  # PTB's own dict for the chat (made if missing)
        chat_data.clear()
        chat_data.update(_json(data) if isinstance(data, dict) else {})
        for stored, (handler, key) in keys.items():
            row = found.get((CONV, stored))
            self._known[(CONV, stored)] = row
            states = conversation_states(handler)
            state = row.get("state") if isinstance(row, dict) else None
            if state is None:
                if key in states:
                    states.pop(key)  # marked as written; the buffer sees nothing changed
            else:
                states.update_no_track({key: state})

    def forget(self, chat_id: int) -> None:
        """What this process holds of the chat may differ from the database (a write failed):
        load it again before its next update."""
        for k in [k for k in self.seen if k[0] == chat_id]:
            del self.seen[k]

    @staticmethod
    def _load(engine: Engine, namespace: str, prefix: str | None = None) -> list[ChannelState]:
        with session_scope(engine) as session:
            stmt = select(ChannelState).where(ChannelState.namespace == namespace)
            if prefix is not None:
                stmt = stmt.where(ChannelState.key.startswith(prefix, autoescape=True))
            return list(session.exec(stmt).all())

    @staticmethod
    def _write(engine: Engine, writes: dict[Key, Any]) -> None:
        with engine.begin() as conn:
            write_state(conn, writes)

    # -- conversations ------------------------------------------------------------------

    async def get_conversations(self, name: str) -> dict:
        rows = await self._run(self._load, CONV, f"{name}:")
        out: dict[tuple, object] = {}
        for row in rows:
            data = row.data or {}
            self._known[(CONV, row.key)] = data
            key, state = data.get("key"), data.get("state")
            if isinstance(key, list) and state is not None:
                out[tuple(key)] = state
        return out

    async def update_conversation(self, name: str, key: tuple, new_state: object | None) -> None:
        data = None if new_state is None else {"key": list(key), "state": new_state}
        self._set(CONV, _conv_key(name, key), data)

    # -- chat data ----------------------------------------------------------------------

    async def get_chat_data(self) -> dict[int, dict]:
        rows = await self._run(self._load, CHAT)
        out: dict[int, dict] = defaultdict(dict)
        for row in rows:
            self._known[(CHAT, row.key)] = row.data
            try:
                out[int(row.key)] = dict(row.data or {})
            except ValueError:
                continue
        return out

    async def update_chat_data(self, chat_id: int, data: dict) -> None:
        self._set(CHAT, str(chat_id), data or None)

    async def refresh_chat_data(self, chat_id: int, chat_data: dict) -> None:
        return None  # this process holds the latest copy; nothing to pull

    async def drop_chat_data(self, chat_id: int) -> None:
        self._set(CHAT, str(chat_id), None)

    # -- not stored ---------------------------------------------------------------------

    async def get_user_data(self) -> dict[int, dict]:
        return defaultdict(dict)

    async def update_user_data(self, user_id: int, data: dict) -> None:
        return None

    async def refresh_user_data(self, user_id: int, user_data: dict) -> None:
        return None

    async def drop_user_data(self, user_id: int) -> None:
        return None

    async def get_bot_data(self) -> dict:
        return {}

    async def update_bot_data(self, data: dict) -> None:
        return None

    async def refresh_bot_data(self, bot_data: dict) -> None:
        return None

    async def get_callback_data(self) -> None:
        return None

    async def update_callback_data(self, data: object) -> None:
        return None

    async def flush(self) -> None:
        writes = self.take()
        if writes and self.shared:
            # Several instances: a chat is written only by the instance holding it (chat.gate).
            # What is left belongs to updates still in the inbox, handled again from the
            # database's state wherever they are taken next.
            log.warning("not writing the state of %d chat(s) at shutdown: their updates are still in the inbox",
                        len({_chat_of(k) for k in writes}))
            return
        if writes:
            try:
                await self._run(self._write, writes)
            except Exception:
                self.back(writes)
                raise
