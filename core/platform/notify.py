"""Wake-ups between instances: PostgreSQL ``NOTIFY`` sent in the transaction that wrote
the row (delivered when it commits), and a ``LISTEN`` connection per process that calls
back on the event loop. The rows are the truth; a notification only says "look now".
SQLite has no such thing (and no second machine): there, and whenever the listening
connection is down, waiters look at the rows every ``poll_seconds``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg
from sqlalchemy import Engine, text
from sqlmodel import Session

from core.platform.retry import wait_backoff
from core.platform.tasks import cancel_and_wait

log = logging.getLogger(__name__)

Callback = Callable[[str], None]

# A waiter's look at the rows while notifications flow (in case one was missed) and while
# they cannot (SQLite, or the listening connection is down).
SAFETY_POLL_S = 1.0
POLL_S = 0.1


def notify(session: Session, channel: str, payload: str) -> None:
    """Sent when ``session`` commits (PostgreSQL); nothing on SQLite, whose waiters poll."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": channel, "payload": payload})


def libpq_url(engine: Engine) -> str:
    """The engine's URL as psycopg's own ``connect`` takes it (no SQLAlchemy driver name)."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


class Listener:
    """``LISTEN`` on the channels subscribed before ``start``; each notification's payload
    goes to the channel's callbacks, on the event loop. Reconnects when the connection
    drops (``connected`` is false meanwhile, and waiters poll)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.callbacks: dict[str, list[Callback]] = {}
        self.connected = False
        self._task: asyncio.Task | None = None
        self._users = 0

    @property
    def enabled(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @property
    def poll_seconds(self) -> float:
        return SAFETY_POLL_S if self.connected else POLL_S

    def subscribe(self, channel: str, callback: Callback) -> None:
        self.callbacks.setdefault(channel, []).append(callback)

    async def start(self) -> None:
        self._users += 1
        if self._task is None and self.enabled and self.callbacks:
            self._task = asyncio.get_running_loop().create_task(self._listen(), name="gridline-listen")

    async def stop(self) -> None:
        self._users -= 1
        if self._users > 0 or self._task is None:
            return
        task, self._task = self._task, None
        await cancel_and_wait(task)
        self.connected = False

    async def _listen(self) -> None:
        backoff, failures = wait_backoff(first=0.2, longest=5.0), 0
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(libpq_url(self.engine), autocommit=True) as conn:
                    for channel in self.callbacks:
                        await conn.execute(f'LISTEN "{channel}"')  # our own constant names, never input
                    self.connected = True
                    failures = 0
                    async for note in conn.notifies():
                        for callback in self.callbacks.get(note.channel, ()):
                            try:
                                callback(note.payload)
                            except Exception:
                                log.exception("notification on %s not handled", note.channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database restarting: poll meanwhile, listen again soon
                if self.connected:
                    log.warning("listening for notifications stopped (%s); polling until it is back", exc)
                self.connected = False
                failures += 1
                await asyncio.sleep(backoff.pause(failures, exc))
