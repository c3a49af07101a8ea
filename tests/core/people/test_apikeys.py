"""Open311 API keys: a process trusts a key it verified for ``[open311] key_trusted_seconds``
without reading its row, and still refuses a disabled key: at once when this process
disabled it, after that trust runs out when another process did."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import event, update
from sqlmodel import select

from core.people import apikeys
from core.people.models import ApiKey
from core.platform import clock
from core.platform.db import session_scope
from core.platform.rules import load_rules

T0 = datetime(2026, 11, 17, 1, 0)


@pytest.fixture
def key(engine):
    apikeys.forget_verified()
    with session_scope(engine) as session:
        _, secret = apikeys.add_key(session, "city-12345", actor="test")
    yield secret
    apikeys.forget_verified()


@pytest.fixture
def apikey_reads(engine):
    """The statements that read or write the apikey table, as they are sent."""
    seen: list[str] = []

    def record(conn, cursor, statement, params, context, executemany):  # noqa: ANN001, ARG001
        if "apikey" in statement:
            seen.append(statement.split()[0])

    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def check(engine, secret):  # noqa: ANN001, ANN201
    with session_scope(engine) as session:
        return apikeys.check_key(session, secret)


def test_a_verified_key_is_not_read_again_while_trusted(engine, key, apikey_reads):
    clock.freeze(T0)
    first = check(engine, key)
    assert first is not None and first.name == "city-12345"
    assert apikey_reads == ["SELECT", "UPDATE"]  # read, and marked as used
    apikey_reads.clear()
    clock.freeze(T0 + timedelta(seconds=0.5))
    assert check(engine, key) == first
    assert apikey_reads == []
    clock.freeze(T0 + timedelta(seconds=61))  # trust ran out, and a minute since it was marked
    assert check(engine, key) == first
    assert apikey_reads == ["SELECT", "UPDATE"]
    with session_scope(engine) as session:
        row = session.exec(select(ApiKey)).one()
        assert row.last_used_at == T0 + timedelta(seconds=61)


def test_a_key_disabled_in_this_process_is_refused_at_once(engine, key):
    clock.freeze(T0)  # no time passes: only the disabling can end the trust
    assert check(engine, key) is not None
    with session_scope(engine) as session:
        apikeys.disable_key(session, "city-12345", actor="test")
    assert check(engine, key) is None


def test_a_disabling_rolled_back_leaves_the_key_working(engine, key):
    clock.freeze(T0)
    assert check(engine, key) is not None
    with pytest.raises(RuntimeError), session_scope(engine) as session:
        apikeys.disable_key(session, "city-12345", actor="test")
        raise RuntimeError("the operator's transaction fails")
    assert check(engine, key) is not None


def test_a_key_disabled_by_another_process_is_refused_once_its_trust_runs_out(engine, key):
    trusted = float(load_rules()["open311"]["key_trusted_seconds"])
    clock.freeze(T0)
    assert check(engine, key) is not None
    # Another instance (or the CLI) disables it: this process's sessions never see that commit.
    with engine.begin() as conn:
        conn.execute(update(ApiKey).values(disabled_at=T0))
    assert check(engine, key) is not None  # still trusted: the documented window
    clock.freeze(T0 + timedelta(seconds=trusted))
    assert check(engine, key) is None
    clock.freeze(T0 + timedelta(seconds=trusted + 5))
    assert check(engine, key) is None  # a refused key is not trusted either


def test_no_trust_reads_the_row_every_time(engine, key, override):
    override("[open311]\nkey_trusted_seconds = 0\n")
    clock.freeze(T0)
    assert check(engine, key) is not None
    with engine.begin() as conn:
        conn.execute(update(ApiKey).values(disabled_at=T0))
    assert check(engine, key) is None


def test_unknown_and_oversized_keys_are_refused(engine, key):
    assert check(engine, key + "x") is None
    assert check(engine, "") is None
    assert check(engine, "gl_" + "a" * 300) is None
