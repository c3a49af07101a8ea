"""PostgreSQL trouble on purpose: every other backend of a database terminated
(``pg_terminate_backend``) from a connection of our own, again and again, while a test
runs its load. What a server sees when PostgreSQL restarts or a proxy drops connections.

    async with BackendTerminator(database_url(engine), every=0.4) as chaos:
        await asyncio.gather(*dialogs, *calls)
    assert chaos.terminated > 0

The rounds go on until the block ends (at least ``min_rounds`` of them).
"""

from __future__ import annotations

import asyncio
import contextlib

from sqlalchemy import create_engine, text

from core.settings import normalise_database_url

_TERMINATE = text(
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
)


class BackendTerminator:
    def __init__(self, database_url: str, *, every: float = 0.5, min_rounds: int = 3):
        self.engine = create_engine(normalise_database_url(database_url), isolation_level="AUTOCOMMIT",
                                    pool_size=1, max_overflow=0)
        if self.engine.dialect.name != "postgresql":
            raise ValueError("pg_terminate_backend needs PostgreSQL")
        self.every = every
        self.min_rounds = min_rounds
        self.per_round: list[int] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None

    @property
    def rounds(self) -> int:
        return len(self.per_round)

    @property
    def terminated(self) -> int:
        return sum(self.per_round)

    def _round(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(_TERMINATE).scalar_one())

    async def _run(self) -> None:
        while not self._stop.is_set() or self.rounds < self.min_rounds:
            self.per_round.append(await asyncio.to_thread(self._round))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.every)

    async def __aenter__(self) -> BackendTerminator:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="pg-backend-terminator")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        try:
            await self._task
        finally:
            self.engine.dispose()
