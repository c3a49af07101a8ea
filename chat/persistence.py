"""python-telegram-bot persistence in our database (``ChannelState`` rows).

Stored: conversation states (namespace ``tg:conv``, key ``<handler name>:<chat>:<user>``)
and per-chat data (namespace ``tg:chat``, key ``<chat id>``), which holds the resident's
unfinished petition. User data, bot data and callback data are not kept: the dialog
does not need them and they would be one more write per update.

Every database call runs in a worker thread (``asyncio.to_thread``): the event loop
never waits on SQLite or PostgreSQL. Values are JSON (dicts, lists, strings, numbers).
The application writes changed entries after every update (see ``chat.web``), so a
restart in the middle of a dialog continues where the resident was.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from typing import Any

from sqlalchemy import Engine
from sqlmodel import select
from telegram.ext import BasePersistence, PersistenceInput

from core.clock import utcnow
from core.db import session_scope
from core.models import ChannelState

CONV = "tg:conv"
CHAT = "tg:chat"


def _conv_key(name: str, key: tuple) -> str:
    return f"{name}:" + ":".join(str(k) for k in key)


class DbPersistence(BasePersistence[dict, dict, dict]):
    def __init__(self, engine: Engine, *, update_interval: float = 60):
        super().__init__(
            store_data=PersistenceInput(bot_data=False, chat_data=True, user_data=False, callback_data=False),
            update_interval=update_interval,
        )
        self.engine = engine

    # -- low level ----------------------------------------------------------------------

    def _load(self, namespace: str, prefix: str | None = None) -> list[ChannelState]:
        with session_scope(self.engine) as session:
            stmt = select(ChannelState).where(ChannelState.namespace == namespace)
            if prefix is not None:
                stmt = stmt.where(ChannelState.key.startswith(prefix, autoescape=True))
            return list(session.exec(stmt).all())

    def _put(self, namespace: str, key: str, data: Any) -> None:
        with session_scope(self.engine) as session:
            row = session.get(ChannelState, (namespace, key))
            if data is None:
                if row is not None:
                    session.delete(row)
                return
            if row is None:
                row = ChannelState(namespace=namespace, key=key)
            # JSON round trip: the column must never hold something json cannot read back.
            row.data = json.loads(json.dumps(data, ensure_ascii=False))
            row.updated_at = utcnow()
            session.add(row)

    # -- conversations ------------------------------------------------------------------

    async def get_conversations(self, name: str) -> dict:
        rows = await asyncio.to_thread(self._load, CONV, f"{name}:")
        out: dict[tuple, object] = {}
        for row in rows:
            data = row.data or {}
            key, state = data.get("key"), data.get("state")
            if isinstance(key, list) and state is not None:
                out[tuple(key)] = state
        return out

    async def update_conversation(self, name: str, key: tuple, new_state: object | None) -> None:
        data = None if new_state is None else {"key": list(key), "state": new_state}
        await asyncio.to_thread(self._put, CONV, _conv_key(name, key), data)

    # -- chat data ----------------------------------------------------------------------

    async def get_chat_data(self) -> dict[int, dict]:
        rows = await asyncio.to_thread(self._load, CHAT)
        out: dict[int, dict] = defaultdict(dict)
        for row in rows:
            try:
                out[int(row.key)] = dict(row.data or {})
            except ValueError:
                continue
        return out

    async def update_chat_data(self, chat_id: int, data: dict) -> None:
        await asyncio.to_thread(self._put, CHAT, str(chat_id), data or None)

    async def refresh_chat_data(self, chat_id: int, chat_data: dict) -> None:
        return None  # this process holds the latest copy; nothing to pull

    async def drop_chat_data(self, chat_id: int) -> None:
        await asyncio.to_thread(self._put, CHAT, str(chat_id), None)

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
        return None  # every write is committed when it is made
