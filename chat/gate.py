"""One chat at a time across instances, against the state the database holds.

Several instances share one PostgreSQL and a balancer sends a resident's consecutive
updates to any of them. Before an update's handlers run, the instance handling it takes the
chat's lock (a PostgreSQL session advisory lock, on a connection of its own that this
module keeps) and, in the same round trip (pipeline mode), reads what it needs to know about
the chat (``Turn``):

* the chat's version (``ChatHead``, raised by every write of the chat's state), and, only
  when it is not the version this process last saw, the chat's conversation state and
  chat data rows, to be loaded before PTB looks at them;
* the chat's updates accepted before this one and not handled yet (by whichever instance
  accepted them; parked ones excepted): they are handled first, so the chat's order holds
  across instances;
* whether this update is still in the inbox (another instance holding the chat may have
  handled it already: then it is not handled again);
* whether the chat is a staff chat (so linking a chat on one instance is seen by all at
  the chat's next update, not at the next reload of the directory).

The lock is released when the update's state is committed. A crashed instance's locks go
with its connection. If this connection breaks while a chat is held, the lock is gone
before the update's end is written; the handling goes on (its database writes wait for the
database like any other), and the chat may be taken elsewhere meanwhile: this is the one
window where two instances could handle one chat at once, and only while the database is
unreachable from here.

On SQLite (one instance owns the file) there is no gate: ``ChatGate.for_engine`` is None
and the chat's order and state are this process's own, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import Engine

log = logging.getLogger(__name__)

# The first key of PostgreSQL's two-key advisory locks: ours for chats ("chat"), so no
# other user of advisory locks (core.cases.flood's "grid") ever waits for a chat.
LOCK_NAMESPACE = 0x6368_6174
# Waiting for a chat held by another instance: the first pause, doubling up to the longest.
WAIT_FIRST_S = 0.005
WAIT_LONGEST_S = 0.2
NEVER_SEEN = -1  # a version no chat has: what this process saw of a chat it never held

_LOCK = "SELECT pg_try_advisory_lock(%(ns)s::int4, %(key)s::int4)"
_UNLOCK = "SELECT pg_advisory_unlock(%(ns)s::int4, %(key)s::int4)"
_LOOK = """
SELECT
  (SELECT version FROM chat_head WHERE chat_id = %(chat)s) AS version,
  (SELECT coalesce(json_agg(json_build_array(update_id, CASE WHEN update_id < %(upto)s THEN data END)
                            ORDER BY update_id), '[]'::json)
     FROM chat_inbox
    WHERE chat_id = %(chat)s AND update_id <= %(upto)s
      AND (update_id = %(upto)s OR retry_at IS NULL OR retry_at <= %(now)s)) AS inbox,
  CASE WHEN coalesce((SELECT version FROM chat_head WHERE chat_id = %(chat)s), 0) <> %(seen)s THEN
    (SELECT coalesce(json_agg(json_build_array(namespace, key, data)), '[]'::json)
       FROM channelstate
      WHERE (namespace = %(chat_ns)s AND key = %(chat_key)s)
         OR (namespace = %(conv_ns)s AND key = ANY(%(conv_keys)s::text[])))
  END AS state,
  (SELECT CASE WHEN worker_id IS NOT NULL THEN 'worker:' || worker_id ELSE 'department:' || department_id END
     FROM staffchat WHERE chat_id = %(chat_key)s) AS staff
"""


class GateUnavailable(Exception):
    """The lock connection failed (the database restarting): worth trying again."""

    transient = True  # core.platform.retry.transient


class GateClosed(Exception):
    """The instance is stopping while waiting for a chat: the update stays in the inbox."""


@dataclass
class Turn:
    """What the holder of a chat learnt when it took it."""

    version: int  # the chat's version in the database (0: never written)
    earlier: list[tuple[int, dict]]  # the chat's updates accepted before this one, still to handle
    mine: bool  # this update is still in the inbox
    state: list[tuple[str, str, Any]] | None  # the chat's rows; None: unchanged since this process saw it
    staff: str | None  # the staff key the chat is linked to
    generation: int = 0  # which lock connection took it (a lost one took its locks along)


def lock_key(chat_id: int) -> int:
    """The chat's id folded into the advisory lock's signed 32-bit key (two chats that share
    a key only wait for each other)."""
    folded = chat_id & 0xFFFF_FFFF
    return folded - (1 << 32) if folded >= (1 << 31) else folded


class ChatGate:
    def __init__(self, conninfo: str, *, chat_ns: str, conv_ns: str):
        self._conninfo = conninfo
        self._chat_ns, self._conv_ns = chat_ns, conv_ns
        self._conn: Any = None  # psycopg.AsyncConnection, autocommit
        self._use = asyncio.Lock()  # one statement (or pipeline) at a time on the connection
        self._releases: set[asyncio.Task] = set()
        self._generation = 0  # raised with every new connection
        # For tests and the bench: round trips on the lock connection, chats found held
        # elsewhere, chats loaded because another instance had changed them.
        self.round_trips = 0
        self.waits = 0
        self.loads = 0

    @classmethod
    def for_engine(cls, engine: Engine, *, chat_ns: str, conv_ns: str) -> ChatGate | None:
        if engine.dialect.name != "postgresql":
            return None
        url = engine.url.set(drivername="postgresql")
        return cls(url.render_as_string(hide_password=False), chat_ns=chat_ns, conv_ns=conv_ns)

    async def _connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True,
                                                               application_name="gridline-chat-gate")
            self._generation += 1
        return self._conn

    async def _broken(self, exc: BaseException) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()
        log.warning("chat lock connection lost (%s); the chats it held are free", exc)

    async def enter(self, chat_id: int, update_id: int | None, *, seen: int, conv_keys: list[str],
                    now: datetime, stopping: asyncio.Event | None = None) -> Turn:
        """Take the chat (waiting while another instance holds it) and say how it stands.
        ``update_id`` None (a job): no inbox to look at."""
        lock = {"ns": LOCK_NAMESPACE, "key": lock_key(chat_id)}
        look = {"chat": chat_id, "upto": update_id if update_id is not None else -(1 << 62), "now": now,
                "seen": seen, "chat_ns": self._chat_ns, "chat_key": str(chat_id), "conv_ns": self._conv_ns,
                "conv_keys": conv_keys}
        pause = WAIT_FIRST_S
        while True:
            try:
                async with self._use:
                    conn = await self._connection()
                    self.round_trips += 1
                    async with conn.pipeline():
                        took = await conn.execute(_LOCK, lock)
                        looked = await conn.execute(_LOOK, look)
                    got = (await took.fetchone())[0]
                    row = await looked.fetchone()
                    generation = self._generation
            except psycopg.Error as exc:
                await self._broken(exc)
                raise GateUnavailable(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
            if got:
                break
            self.waits += 1
            if stopping is not None and stopping.is_set():
                raise GateClosed(f"chat {chat_id}")
            await asyncio.sleep(pause)
            pause = min(pause * 2, WAIT_LONGEST_S)
        version, pending, state, staff = row
        earlier = [(int(uid), data) for uid, data in pending if update_id is not None and uid < update_id]
        mine = update_id is not None and any(uid == update_id for uid, _ in pending)
        rows = None if state is None else [(ns, key, data) for ns, key, data in state]
        self.loads += rows is not None
        return Turn(int(version or 0), earlier, mine, rows, staff, generation)

    def leave(self, chat_id: int, generation: int) -> None:
        """Let the chat go (without waiting for the round trip: the next update of the chat
        here takes it again after this, on the same connection, and a lock taken twice by one
        connection is released once per taking)."""
        task = asyncio.get_running_loop().create_task(self._unlock(chat_id, generation),
                                                      name=f"chat-gate-leave-{chat_id}")
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _unlock(self, chat_id: int, generation: int) -> None:
        async with self._use:
            if self._conn is None or self._conn.closed or generation != self._generation:
                return  # the lock went with the connection that took it
            self.round_trips += 1
            try:
                await self._conn.execute(_UNLOCK, {"ns": LOCK_NAMESPACE, "key": lock_key(chat_id)})
            except psycopg.Error as exc:
                await self._broken(exc)

    async def close(self) -> None:
        if self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)
        async with self._use:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    await self._conn.close()
                self._conn = None
