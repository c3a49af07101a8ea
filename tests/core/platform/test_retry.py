"""core.platform.retry: the one definition of a transient failure, on errors raised for real (a
PostgreSQL backend terminated under a connection, a constraint violated, SQLite's writer
lock held, a port nobody listens on, HTTP answers from a local server through the very
clients Gridline uses for Telegram, Twilio and S3), and the pauses between tries."""

from __future__ import annotations

import asyncio
import socket
import sqlite3

import aiohttp
import boto3
import pytest
import requests
from aiohttp import web
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError, OperationalError
from telegram import Bot
from telegram.error import BadRequest, NetworkError, RetryAfter
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from core.errors import DatabaseBusy
from core.platform.media import MediaUnavailable
from core.platform.retry import retry_after, transient, wait_backoff
from ivr import database
from ivr.twilio_http import BaseUrlHttpClient


def _caught(fn, *args, **kw):
    try:
        fn(*args, **kw)
    except Exception as exc:  # noqa: BLE001 (the error is what the test looks at)
        return exc
    raise AssertionError(f"{fn} raised nothing")


async def _caught_async(coro):
    try:
        await coro
    except Exception as exc:  # noqa: BLE001
        return exc
    raise AssertionError("raised nothing")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------ databases


def test_a_terminated_backend_is_transient(engine):
    if engine.dialect.name != "postgresql":
        pytest.skip("pg_terminate_backend is PostgreSQL's")
    with engine.connect() as victim, engine.connect() as admin:
        pid = victim.execute(text("SELECT pg_backend_pid()")).scalar_one()
        assert admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()
        error = _caught(victim.execute, text("SELECT 1"))
    assert isinstance(error, OperationalError)
    assert error.connection_invalidated  # SQLAlchemy threw the pool's copy of it away
    assert transient(error)
    # the work, tried again, gets a fresh connection and succeeds
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar_one() == 1


def test_a_constraint_violation_is_not_transient(engine):
    with engine.begin() as conn:
        conn.execute(text("CREATE TEMPORARY TABLE retry_probe (k INTEGER PRIMARY KEY)"))
        conn.execute(text("INSERT INTO retry_probe VALUES (1)"))
        error = _caught(conn.execute, text("INSERT INTO retry_probe VALUES (1)"))
        assert isinstance(error, IntegrityError)
        assert not transient(error)
        conn.rollback()


def test_sqlite_writer_lock_is_transient_but_a_missing_table_is_not(tmp_path):
    path = tmp_path / "locked.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN IMMEDIATE")  # the one writer
    holder.execute("INSERT INTO t VALUES (1)")
    waiter = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})  # no wait for the lock
    try:
        with waiter.connect() as conn:
            locked = _caught(conn.execute, text("INSERT INTO t VALUES (2)"))
            conn.rollback()
            missing = _caught(conn.execute, text("SELECT * FROM no_such_table"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        waiter.dispose()
    assert isinstance(locked, OperationalError) and "locked" in str(locked)
    assert transient(locked)
    assert isinstance(missing, OperationalError)  # SQLite's word for it too, but it stays missing
    assert not transient(missing)


def test_our_own_errors_that_say_so():
    assert transient(DatabaseBusy("every database thread is taken"))
    assert transient(MediaUnavailable("bucket unreachable"))
    assert not transient(ValueError("a bug"))
    wrapped = RuntimeError("while filing")
    wrapped.__cause__ = DatabaseBusy("busy")
    assert transient(wrapped)  # the chain counts


# ------------------------------------------------------------------------------ network


@pytest.fixture
async def http_answers():
    """A local HTTP server that answers each path's status (and Retry-After), as JSON."""
    answers: dict[str, tuple[int, dict, dict]] = {}

    async def handle(request: web.Request) -> web.Response:
        for path, (status, body, headers) in answers.items():
            if request.path.endswith(path):
                return web.json_response(body, status=status, headers=headers)
        return web.json_response({"ok": True, "result": {}}, status=200)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", answers
    await runner.cleanup()


async def test_refused_connections_are_transient():
    url = f"http://127.0.0.1:{_closed_port()}/"
    sync = _caught(requests.get, url)
    assert isinstance(sync, requests.ConnectionError) and transient(sync)
    async with aiohttp.ClientSession() as http:
        error = await _caught_async(http.get(url))
    assert isinstance(error, aiohttp.ClientConnectionError) and transient(error)
    s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="k",
                      aws_secret_access_key="s", config=Config(retries={"max_attempts": 1}))
    error = _caught(s3.head_bucket, Bucket="b")
    assert isinstance(error, EndpointConnectionError) and transient(error)


async def test_http_answers_5xx_and_429_are_transient_and_retry_after_is_read(http_answers):
    base, answers = http_answers
    answers["/busy"] = (503, {"error": "down"}, {"Retry-After": "7"})
    answers["/slow-down"] = (429, {"error": "slow"}, {})
    answers["/wrong"] = (400, {"error": "bad"}, {})
    async with aiohttp.ClientSession(raise_for_status=True) as http:
        busy = await _caught_async(http.get(base + "/busy"))
        slow = await _caught_async(http.get(base + "/slow-down"))
        wrong = await _caught_async(http.get(base + "/wrong"))
    assert transient(busy) and retry_after(busy) == 7.0
    assert transient(slow) and retry_after(slow) is None
    assert not transient(wrong)


async def test_twilio_5xx_and_429_are_transient_4xx_are_not(http_answers):
    base, answers = http_answers
    client = Client("AC" + "0" * 32, "token", http_client=BaseUrlHttpClient(base, timeout=5))
    errors = {}
    for status in (500, 503, 429, 400, 404):
        answers["/Calls.json"] = (status, {"code": 20000 + status, "message": "no", "status": status}, {})
        errors[status] = await asyncio.to_thread(
            _caught, client.calls.create, to="+8613800000001", from_="+8601012345", url="http://example.invalid/")
    assert all(isinstance(e, TwilioRestException) for e in errors.values())
    assert {status for status, e in errors.items() if transient(e)} == {500, 503, 429}


async def test_telegram_network_errors_and_flood_control_are_transient(http_answers):
    base, answers = http_answers
    bot = Bot("123:abc", base_url=base + "/bot")
    answers["/getMe"] = (200, {"ok": True, "result": {"id": 123, "is_bot": True, "first_name": "网格"}}, {})
    await bot.initialize()
    answers["/getMe"] = (429, {"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 3",
                               "parameters": {"retry_after": 3}}, {})
    answers["/getChat"] = (502, {"ok": False, "error_code": 502, "description": "Bad Gateway"}, {})
    answers["/sendMessage"] = (400, {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}, {})
    flood = await _caught_async(bot.get_me())
    gateway = await _caught_async(bot.get_chat(1))
    refused = await _caught_async(bot.send_message(1, "你好"))
    assert isinstance(flood, RetryAfter) and transient(flood) and retry_after(flood) == 3.0
    assert isinstance(gateway, NetworkError) and transient(gateway)
    assert isinstance(refused, BadRequest) and not transient(refused)  # a BadRequest is a NetworkError too
    await bot.shutdown()


async def test_an_s3_answer_5xx_is_transient_403_is_not(http_answers):
    base, answers = http_answers
    s3 = boto3.client("s3", endpoint_url=base, region_name="us-east-1", aws_access_key_id="k",
                      aws_secret_access_key="s", config=Config(retries={"max_attempts": 1}, read_timeout=10))
    answers["/busy-bucket"] = (503, {}, {"Retry-After": "2"})
    answers["/closed-bucket"] = (403, {}, {})
    busy = await asyncio.to_thread(_caught, s3.head_bucket, Bucket="busy-bucket")  # the server runs on this loop
    closed = await asyncio.to_thread(_caught, s3.head_bucket, Bucket="closed-bucket")
    assert isinstance(busy, ClientError) and transient(busy) and retry_after(busy) == 2.0
    assert isinstance(closed, ClientError) and not transient(closed)


# ------------------------------------------------------------------------------ the pauses


def test_pauses_double_up_to_the_longest_and_honour_retry_after():
    wait = wait_backoff(0.05, 1.0)
    assert [wait.pause(n) for n in range(1, 7)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0]
    asked = RetryAfter(30)
    assert wait.pause(1, asked) == 30.0  # the server's word is the least we wait
    assert wait_backoff(30.0, 3600.0).pause(200) == 3600.0  # no overflow on a job's 200th attempt


async def test_run_db_tries_a_transient_error_again_and_raises_another_at_once():
    calls = {"lost": 0, "bug": 0}

    def lost_twice():
        calls["lost"] += 1
        if calls["lost"] <= 2:
            raise OperationalError("SELECT 1", {}, _psycopg_lost())
        return "done"

    def bug():
        calls["bug"] += 1
        raise IntegrityError("INSERT", {}, ValueError("duplicate key"))

    assert await database.run_db(lost_twice) == "done" and calls["lost"] == 3
    with pytest.raises(IntegrityError):
        await database.run_db(bug)
    assert calls["bug"] == 1


def _psycopg_lost():
    import psycopg

    return psycopg.OperationalError("server closed the connection unexpectedly")
