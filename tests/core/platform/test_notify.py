"""LISTEN/NOTIFY between instances: a notification reaches the subscriber, and a listening
connection that the server drops is made again (waiters poll meanwhile)."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from core.platform.db import session_scope
from core.platform.notify import Listener, notify
from tests.support.waiting import until


def send(engine, payload: str) -> None:
    with session_scope(engine) as session:
        notify(session, "gridline_test", payload)


async def test_a_dropped_listening_connection_is_made_again(engine):
    if engine.dialect.name != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; SQLite's waiters poll")
    heard: list[str] = []
    listener = Listener(engine)
    listener.subscribe("gridline_test", heard.append)
    await listener.start()
    try:
        await until(lambda: listener.connected, message="listening")
        send(engine, "before")
        await until(lambda: "before" in heard, message="the first notification")

        with session_scope(engine) as session:  # the server ends the listening backend
            dropped = session.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE query LIKE 'LISTEN%' AND datname = current_database()")).scalar()
        assert dropped >= 1
        await until(lambda: not listener.connected, message="the drop noticed")
        assert listener.poll_seconds < 1  # waiters poll often while nobody listens

        await until(lambda: listener.connected, message="listening again")
        send(engine, "after")
        await until(lambda: "after" in heard, message="a notification after the reconnect")
    finally:
        await listener.stop()
    assert listener._task is None and not listener.connected
