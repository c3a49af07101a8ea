"""PostgreSQL trouble on purpose: every other backend of a database terminated
(``pg_terminate_backend``) from a connection of our own, again and again, while a test
runs its load. What a server sees when PostgreSQL restarts, fails over or a proxy drops
connections; work must survive on fresh connections::

    with BackendTerminator(database_url(engine), every=0.3) as chaos:          # sync tests
        run_calls()
    async with BackendTerminator(database_url(engine), every=0.4) as chaos:    # async tests
        await asyncio.gather(*dialogs, *calls)
    assert chaos.terminated > 0

The rounds run in a thread of their own until the block ends (at least ``min_rounds``).
"""

from __future__ import annotations

import asyncio
import threading

from sqlalchemy import text

from core.platform.db import make_engine
from core.platform.settings import normalise_database_url

_TERMINATE = text(
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
)


class BackendTerminator:
    def __init__(self, database_url: str, *, every: float = 0.3, min_rounds: int = 1):
        self.engine = make_engine(normalise_database_url(database_url), isolation_level="AUTOCOMMIT",
                                  pool_size=1, max_overflow=0)
        if self.engine.dialect.name != "postgresql":
            raise ValueError("pg_terminate_backend needs PostgreSQL")
        self.every = every
        self.min_rounds = min_rounds
        self.per_round: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def rounds(self) -> int:
        return len(self.per_round)

    @property
    def terminated(self) -> int:
        return sum(self.per_round)

    def _round(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(_TERMINATE).scalar_one())

    def _run(self) -> None:
        while not self._stop.wait(self.every) or self.rounds < self.min_rounds:
            self.per_round.append(self._round())

    def start(self) -> BackendTerminator:
        self._thread = threading.Thread(target=self._run, name="pg-backend-terminator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)
        self.engine.dispose()

    def __enter__(self) -> BackendTerminator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    async def __aenter__(self) -> BackendTerminator:
        return self.start()

    async def __aexit__(self, *exc) -> None:
        await asyncio.to_thread(self.stop)
