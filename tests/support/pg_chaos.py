"""PostgreSQL under duress: terminate every other backend of a database, over and over,
while a test runs its traffic (``pg_terminate_backend``, what a failover or an
administrator does). Work must survive on fresh connections.

    with BackendTerminator(url, every_s=0.3) as chaos:
        ...  # calls, chat updates
    assert chaos.terminated > 0
"""

from __future__ import annotations

import threading

from sqlalchemy import text

from core.db import make_engine
from core.settings import normalise_database_url


class BackendTerminator:
    def __init__(self, url: str, *, every_s: float = 0.3):
        self.engine = make_engine(normalise_database_url(url), isolation_level="AUTOCOMMIT", pool_size=1,
                                  max_overflow=0)
        self.every_s = every_s
        self.rounds = 0
        self.terminated = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _terminate_all(self) -> int:
        with self.engine.connect() as conn:
            return len(conn.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            )).all())

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.terminated += self._terminate_all()
            self.rounds += 1

    def start(self) -> BackendTerminator:
        self._thread = threading.Thread(target=self._run, name="pg-terminator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        self.engine.dispose()

    def __enter__(self) -> BackendTerminator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
