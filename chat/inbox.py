"""Durable intake of Telegram updates, and the bot's bookkeeping in as few transactions
as possible.

An update is *accepted* before Telegram hears 200 (webhook) or before the next
``getUpdates`` confirms it (polling): one transaction records its id (``SeenMessage``,
so a redelivery is dropped) and keeps the raw update JSON in the inbox (``ChatInbox``,
with the update's chat). When its handlers have run, the inbox row is deleted in the same
transaction that writes the conversation state and draft the update produced
(``chat.persistence``) and raises the chat's version (``ChatHead``, when several instances
share the database: ``chat.gate``), so after a crash the database holds either the state
before the update and the update still in the inbox, or the state after it and no inbox
row. On start the inbox is replayed in update id order through the same path; the replay
skips the ``SeenMessage`` check (those updates were accepted already). Whichever instance
holds a chat handles the chat's earlier updates first, whoever accepted them.

A crash between handling and the final write replays the update: the resident may get a
reply twice, never none. Filing is idempotent per dialog, so no case is made twice.

Every database call runs off the event loop, through the bot's ``Deps.db``. Calls that arrive while a transaction is
being committed wait and are committed together in the next one (group commit), so a
burst of updates costs a handful of transactions rather than several per update.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from chat.models import ChatHead, ChatInbox, SeenMessage
from core.platform import jobs
from core.platform.clock import utcnow
from core.platform.db import session_scope
from core.platform.models import ChannelState

log = logging.getLogger(__name__)

T = TypeVar("T")
Op = Callable[[Connection], Any]

CHANNEL = "telegram"
SEEN_KEEP = timedelta(days=7)  # Telegram gives up redelivering an update after 24 hours
CLEANUP_JOB = jobs.declare("chat_seen_cleanup", "chat/web.py: forgets old Telegram update ids")

_STATE = ChannelState.__table__
_SEEN = SeenMessage.__table__
_INBOX = ChatInbox.__table__
_HEAD = ChatHead.__table__


class _Statements:
    """The bookkeeping statements of one dialect, built once and run with parameters.

    Built per call they cost more CPU than running them under a burst: an upsert's
    ``excluded`` alone builds a proxy of every column of the table each time, and a new
    statement object must have its cache key generated again before the compiled form is
    found. Built once, each execution only binds its values."""

    def __init__(self, dialect: str):
        dml = postgresql if dialect == "postgresql" else sqlite
        self.seen = (dml.insert(_SEEN).on_conflict_do_nothing(index_elements=["channel", "external_id"])
                     .returning(_SEEN.c.at))
        self.keep = dml.insert(_INBOX).on_conflict_do_nothing(index_elements=["update_id"])
        state = dml.insert(_STATE)
        self.state = state.on_conflict_do_update(
            index_elements=["namespace", "key"],
            set_={"data": state.excluded.data, "updated_at": state.excluded.updated_at})
        self.state_gone = delete(_STATE).where(_STATE.c.namespace == bindparam("namespace"),
                                               _STATE.c.key.in_(bindparam("keys", expanding=True)))
        head = dml.insert(_HEAD)
        self.head = head.on_conflict_do_update(
            index_elements=["chat_id"], set_={"version": head.excluded.version, "updated_at": head.excluded.updated_at})
        self.unkeep = delete(_INBOX).where(_INBOX.c.update_id == bindparam("gone_update_id"))


_BY_DIALECT: dict[str, _Statements] = {}


def _statements(conn: Connection) -> _Statements:
    name = conn.dialect.name
    built = _BY_DIALECT.get(name)
    if built is None:
        built = _BY_DIALECT[name] = _Statements(name)
    return built


# ---------------------------------------------------------------- operations (sync)


def accept_op(update_id: int, data: dict, chat_id: int | None = None) -> Op:
    """Record the id and keep the update (of ``chat_id``); the op returns False for a
    redelivery."""

    def op(conn: Connection) -> bool:
        now = utcnow()
        stmts = _statements(conn)
        seen = conn.execute(stmts.seen, {"channel": CHANNEL, "external_id": str(update_id), "at": now})
        if seen.first() is None:  # rowcount is not reliable here (psycopg: -1)
            return False
        conn.execute(stmts.keep, {"update_id": update_id, "chat_id": chat_id, "data": data, "accepted_at": now})
        return True

    return op


def write_state(conn: Connection, writes: dict[tuple[str, str], Any]) -> None:
    """Upsert (or, for None, delete) ``ChannelState`` rows without reading them first."""
    if not writes:
        return
    now = utcnow()
    stmts = _statements(conn)
    rows = [{"namespace": ns, "key": key, "data": data, "updated_at": now}
            for (ns, key), data in writes.items() if data is not None]
    if rows:
        conn.execute(stmts.state, rows)
    gone: dict[str, list[str]] = {}
    for (ns, key), data in writes.items():
        if data is None:
            gone.setdefault(ns, []).append(key)
    for ns, keys in gone.items():
        conn.execute(stmts.state_gone, {"namespace": ns, "keys": keys})


def write_heads(conn: Connection, heads: dict[int, int]) -> None:
    """Set chats' versions (``chat.gate``: the holder of a chat writes the next one)."""
    if not heads:
        return
    now = utcnow()
    conn.execute(_statements(conn).head,
                 [{"chat_id": chat, "version": version, "updated_at": now} for chat, version in heads.items()])


def finish_op(update_id: int | None, writes: dict[tuple[str, str], Any], heads: dict[int, int] | None = None) -> Op:
    """The state an update produced, its chat's new version and its inbox row gone, in one
    transaction."""

    def op(conn: Connection) -> None:
        write_state(conn, writes)
        write_heads(conn, heads or {})
        if update_id is not None:
            conn.execute(_statements(conn).unkeep, {"gone_update_id": update_id})

    return op


def park_op(update_id: int, until: Any) -> Op:
    """An update that keeps failing waits until ``until``: the chat's later updates are
    handled meanwhile, by any instance, without it."""

    def op(conn: Connection) -> None:
        conn.execute(update(_INBOX).where(_INBOX.c.update_id == update_id).values(retry_at=until))

    return op


def pending(engine: Engine) -> list[tuple[int, dict]]:
    """Accepted updates whose handling never finished, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(select(_INBOX.c.update_id, _INBOX.c.data).order_by(_INBOX.c.update_id)).all()
    return [(update_id, data) for update_id, data in rows]


def left_behind(engine: Engine, accepted_before: Any, now: Any) -> list[tuple[int, dict]]:
    """Updates accepted before ``accepted_before`` and still not handled (nor parked for
    later): the instance that accepted them is gone, or far behind. Oldest first."""
    due = (_INBOX.c.retry_at.is_(None)) | (_INBOX.c.retry_at <= now)
    with engine.connect() as conn:
        rows = conn.execute(select(_INBOX.c.update_id, _INBOX.c.data)
                            .where(_INBOX.c.accepted_at < accepted_before, due)
                            .order_by(_INBOX.c.update_id)).all()
    return [(update_id, data) for update_id, data in rows]


def pending_ids(engine: Engine) -> list[int]:
    """The ids of the updates in the inbox, oldest first (tests, the command line)."""
    with engine.connect() as conn:
        return list(conn.execute(select(_INBOX.c.update_id).order_by(_INBOX.c.update_id)).scalars())


# ---------------------------------------------------------------- housekeeping


def forget_seen(engine: Engine, keep: timedelta = SEEN_KEEP) -> int:
    """Drop the update ids recorded more than ``keep`` ago; returns how many."""
    with engine.begin() as conn:
        result = conn.execute(delete(_SEEN).where(_SEEN.c.channel == CHANNEL, _SEEN.c.at < utcnow() - keep))
        return result.rowcount or 0


def schedule_cleanup(engine: Engine) -> None:
    """Queue today's cleanup (a no-op when this or another instance already did)."""

    try:
        with session_scope(engine) as session:
            jobs.enqueue(session, CLEANUP_JOB, {}, dedupe_key=f"{CLEANUP_JOB}:{utcnow():%Y-%m-%d}")
    except IntegrityError:
        pass  # queued at the same moment elsewhere


# ---------------------------------------------------------------- group commit


class GroupCommit:
    """Runs small operations off the event loop, committing all those that queue up while
    a transaction is in flight together in the next one. If a shared transaction fails,
    its operations are retried one by one so one bad operation cannot fail the others."""

    def __init__(self, engine: Engine, *, run: Callable[..., Any] | None = None, max_batch: int = 500):
        self.engine = engine
        # How a database function ``f(engine, *args)`` runs off the event loop (the bot's
        # ``Deps.db``); a plain thread by default.
        self._run = run or (lambda func, *args: asyncio.to_thread(func, engine, *args))
        self.max_batch = max_batch
        self._waiting: list[tuple[Op, asyncio.Future]] = []
        self._task: asyncio.Task | None = None
        self.transactions = 0  # for tests and the bench

    async def run(self, op: Op) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiting.append((op, future))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._drain(), name="chat-group-commit")
        return await future

    def _commit(self, engine: Engine, ops: list[Op]) -> list[Any]:
        self.transactions += 1
        with engine.begin() as conn:
            return [op(conn) for op in ops]

    async def _drain(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch:]
            ops = [op for op, _ in batch]
            try:
                results = await self._run(self._commit, ops)
            except (SQLAlchemyError, ValueError, TypeError) as exc:
                if len(batch) == 1:
                    _settle(batch[0][1], exc=exc)
                    continue
                log.warning("a shared chat transaction failed (%s); retrying its %d parts alone", exc, len(batch))
                for op, future in batch:
                    try:
                        _settle(future, (await self._run(self._commit, [op]))[0])
                    except Exception as one:  # noqa: BLE001 (its caller decides)
                        _settle(future, exc=one)
                continue
            except Exception as exc:
                # Nothing ran (the database pool refused the batch: DatabaseBusy): each caller
                # hears it and decides, as for a failed transaction. Escaping here, it ended
                # this task with the batch's callers waiting for ever (their chats stuck until
                # a restart: seen under a burst at load 17).
                for _, future in batch:
                    _settle(future, exc=exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                _settle(future, result)

    async def wait_idle(self) -> None:
        """Until everything submitted so far is committed (at shutdown)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)


def _settle(future: asyncio.Future, result: Any = None, exc: BaseException | None = None) -> None:
    if future.done():  # the caller was cancelled; the work was still done
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
