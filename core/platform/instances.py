"""Instances sharing one database: each running process has a lease, renewed by a
heartbeat, so another process can tell a colleague that is busy from one that is gone.

An instance's id is new at every start (a restarted process is a new instance: what its
predecessor held is recovered once the predecessor's lease has run out). Work an instance
holds records its id (``CallSession.instance_id``, ``StreamSegment.instance_id``); the
hotline's recovery sweep takes a call only when its holder's lease is over (or the call
is stale for everyone). Rules: ``[instances]`` in rules.toml.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, delete, exists, or_, select
from sqlalchemy.sql.elements import ColumnElement

from core.platform.clock import utcnow
from core.platform.db import session_scope
from core.platform.models import Instance
from core.platform.rules import load_rules
from core.platform.tasks import cancel_and_wait

log = logging.getLogger(__name__)

FORGET_AFTER = timedelta(days=1)  # rows of instances gone this long are deleted

DbRunner = Callable[..., Awaitable[Any]]


def lease_length() -> timedelta:
    return timedelta(seconds=float(load_rules()["instances"]["lease_seconds"]))


def heartbeat_every() -> float:
    return float(load_rules()["instances"]["heartbeat_seconds"])


def beat(engine: Engine, instance_id: str, *, host: str = "", pid: int = 0) -> None:
    """Renew the lease (made at the first beat)."""
    now = utcnow()
    with session_scope(engine) as session:
        row = session.get(Instance, instance_id)
        if row is None:
            session.add(Instance(id=instance_id, host=host[:128], pid=pid, started_at=now, heartbeat_at=now))
        else:
            row.heartbeat_at = now
            session.add(row)


def release(engine: Engine, instance_id: str) -> None:
    """A clean stop: the lease ends now, so what is left is recovered at once."""
    with session_scope(engine) as session:
        session.execute(delete(Instance).where(Instance.id == instance_id))


def forget_gone(engine: Engine, now: datetime | None = None) -> int:
    with session_scope(engine) as session:
        result = session.execute(delete(Instance).where(Instance.heartbeat_at < (now or utcnow()) - FORGET_AFTER))
        return result.rowcount or 0


def held_by_live(holder: Any, now: datetime | None = None) -> ColumnElement[bool]:
    """SQL: the instance id in column ``holder`` has a lease that is still running."""
    cutoff = (now or utcnow()) - lease_length()
    return exists(select(Instance.id).where(Instance.id == holder, Instance.heartbeat_at >= cutoff))


def gone(holder: Any, now: datetime | None = None) -> ColumnElement[bool]:
    """SQL: ``holder`` names an instance whose lease has run out (or that left)."""
    return (holder.is_not(None)) & ~held_by_live(holder, now)


def held_or_unknown(holder: Any, now: datetime | None = None) -> ColumnElement[bool]:
    return or_(holder.is_(None), held_by_live(holder, now))


def alive(engine: Engine, instance_id: str, now: datetime | None = None) -> bool:
    cutoff = (now or utcnow()) - lease_length()
    with session_scope(engine) as session:
        row = session.get(Instance, instance_id)
        return row is not None and row.heartbeat_at >= cutoff


def others_alive(engine: Engine, instance_id: str, now: datetime | None = None) -> list[str]:
    """The ids of the other instances holding a running lease."""
    cutoff = (now or utcnow()) - lease_length()
    with session_scope(engine) as session:
        return list(session.execute(select(Instance.id).where(Instance.id != instance_id,
                                                              Instance.heartbeat_at >= cutoff)).scalars())


# Each instance that keeps files in a local folder leaves its id there while it runs: the
# processes of one `serve --processes N` (or instances on one machine sharing the folder) see
# each other's marks, and only instances without a mark keep their files somewhere else.
MARKS = ".gridline-instances"


def mark_folder(folder: Path, instance_id: str) -> None:
    try:
        (folder / MARKS).mkdir(parents=True, exist_ok=True)
        (folder / MARKS / instance_id).touch()
    except OSError as exc:  # a read-only folder: the others are taken to be elsewhere
        log.warning("cannot mark %s as used by instance %s: %s", folder, instance_id, exc)


def unmark_folder(folder: Path, instance_id: str) -> None:
    with contextlib.suppress(OSError):
        (folder / MARKS / instance_id).unlink()


def elsewhere(instance_ids: list[str], folder: Path) -> list[str]:
    """Those of ``instance_ids`` that do not keep their files in ``folder``."""
    return [i for i in instance_ids if not (folder / MARKS / i).exists()]


_local_media_warned = False


def warn_local_media(others: int, where: str, seen: str = "") -> bool:
    """Say once per process, clearly, that this instance shares the database with others
    while it keeps residents' files in a folder of its own. Returns whether it said it now."""
    global _local_media_warned
    if _local_media_warned:
        return False
    _local_media_warned = True
    log.warning(
        "this instance shares the database with %s other running instance(s) but keeps residents' files in "
        "a local folder of its own (%s; GRIDLINE_MEDIA_URL names no bucket)%s. A call's turns are copied "
        "through the database so every petition is filed with its recording, but each file is kept on one "
        "machine only: another instance cannot play it, and it is lost with that machine. Set "
        "GRIDLINE_MEDIA_URL=s3://bucket/prefix on every instance (README: Running on several machines).",
        others, where, f" ({seen})" if seen else "")
    return True


class InstanceLease:
    """This process's lease: ``start`` beats at once and then every ``heartbeat_seconds``;
    ``stop`` releases it. Starting twice (the app and the hotline both ask) is one lease."""

    def __init__(self, engine: Engine, *, db: DbRunner | None = None, instance_id: str | None = None,
                 local_folder: Path | None = None):
        self.engine = engine
        # Where this instance keeps files when that is a local folder (no bucket), on a database
        # other instances may share: warned about once an instance keeping its files elsewhere is seen.
        self.local_folder = Path(local_folder) if local_folder is not None else None
        self.db: DbRunner = db or asyncio.to_thread
        self.id = instance_id or secrets.token_hex(8)
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self._task: asyncio.Task | None = None
        self._users = 0

    def __repr__(self) -> str:
        return f"instance {self.id} ({self.host}:{self.pid})"

    async def start(self) -> None:
        self._users += 1
        if self._task is not None:
            return
        try:
            await self.db(beat, self.engine, self.id, host=self.host, pid=self.pid)
        except Exception:  # the database is away: the loop tries again
            log.warning("%s: first heartbeat failed; retrying", self, exc_info=True)
        if self.local_folder is not None:
            await asyncio.to_thread(mark_folder, self.local_folder, self.id)
        self._task = asyncio.get_running_loop().create_task(self._beat_forever(), name="gridline-heartbeat")
        log.info("%s: lease held (heartbeat every %.0f s, lease %.0f s)", self, heartbeat_every(),
                 lease_length().total_seconds())
        await self._look_for_colleagues()

    async def _look_for_colleagues(self) -> None:
        """With files in a local folder: warn once another instance shares the database
        (at start, and at each beat until then: instances started together see each other
        a beat later)."""
        if self.local_folder is None or _local_media_warned:
            return
        try:
            others = elsewhere(await self.db(others_alive, self.engine, self.id), self.local_folder)
        except Exception as exc:
            log.debug("%s: could not count the other instances: %s", self, exc)
            return
        if others:
            warn_local_media(len(others), str(self.local_folder))

    async def _beat_forever(self) -> None:
        beats = 0
        while True:
            await asyncio.sleep(heartbeat_every())
            try:
                await self.db(beat, self.engine, self.id, host=self.host, pid=self.pid)
                await self._look_for_colleagues()
                beats += 1
                if beats % 720 == 1:  # now and then, not at every beat
                    await self.db(forget_gone, self.engine)
            except Exception as exc:  # a missed beat; the lease is long enough for a few
                log.warning("%s: heartbeat failed: %s", self, exc)

    async def stop(self) -> None:
        self._users -= 1
        if self._users > 0 or self._task is None:
            return
        task, self._task = self._task, None
        await cancel_and_wait(task)
        if self.local_folder is not None:
            unmark_folder(self.local_folder, self.id)
        try:
            await self.db(release, self.engine, self.id)
        except Exception as exc:
            log.warning("%s: lease not released (%s); it runs out by itself", self, exc)
