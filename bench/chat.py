"""Burst of Telegram webhook updates from many simulated residents through the real bot.

The real Gridline aiohttp app with the real python-telegram-bot application (webhook
mode, our persistence, dedupe, per-chat ordering) on a fresh database with the demo
district, talking HTTP to the fake Bot API server from the tests. Each resident sends
``/start`` and then a problem in words, each of which gets exactly one reply; we time
from the moment the webhook POST is sent to the moment the fake server receives the
bot's ``sendMessage`` for it.

    .venv/bin/python bench/chat.py --users 200
    .venv/bin/python bench/chat.py --users 200 --no-rate-limit   # without Telegram's 30/s cap
    .venv/bin/python bench/chat.py --pg postgresql://postgres@127.0.0.1:5432/test
    GRIDLINE_DATABASE_URL=postgresql://... .venv/bin/python bench/chat.py

``--pg <server url>`` makes a database of its own on that server and drops it at the end
(so runs never see each other's update ids); ``--database-url`` uses the database as is.

Everything runs in one process on one event loop (the fake server and the webhook
client included), so the figures are a floor, not a ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402
from sqlalchemy import event  # noqa: E402

from chat.web import CHATBOT  # noqa: E402
from chat.web import setup as setup_chat  # noqa: E402
from core.db import make_engine, session_scope, upgrade  # noqa: E402
from core.demo import load_demo  # noqa: E402
from core.settings import Settings, normalise_database_url  # noqa: E402
from gridline.app import SERVICES, build_app  # noqa: E402
from tests.support.fake_bot_api import FakeBotApi  # noqa: E402

SECRET = "bench-secret"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


async def run(users: int, rate_limit: bool, database_url: str, concurrency: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="gridline-bench-chat-"))
    url = normalise_database_url(database_url) if database_url else f"sqlite:///{tmp / 'bench.sqlite3'}"
    engine = make_engine(url)
    upgrade(engine)
    commits = [0]
    with session_scope(engine) as session:
        from sqlmodel import select

        from core.models import Grid

        if session.exec(select(Grid.id).limit(1)).first() is None:
            load_demo(session)

    async with FakeBotApi() as fake:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        settings = Settings(data_dir=tmp, public_url=f"http://127.0.0.1:{port}", telegram_token=fake.token,
                            telegram_secret=SECRET, telegram_api_url=fake.root_url, telegram_mode="webhook")
        app = build_app(settings, engine=engine, channels=(), run_jobs=False)
        setup_chat(app, app[SERVICES], rate_limit=rate_limit, concurrency=concurrency)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        await app[CHATBOT].ready.wait()

        base_user = 6_000_000_000
        updates: list[tuple[int, dict]] = []
        for i in range(users):
            uid = base_user + i
            fake.add_user(uid, f"R{i}", language_code="zh-hans")
            updates.append((uid, fake.make_command(uid, "start")))
            updates.append((uid, fake.make_text_update(uid, f"{i}号楼下的路灯坏了")))
        sent_at: dict[int, list[float]] = {}
        connector = aiohttp.TCPConnector(limit=100)
        headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
        target = f"http://127.0.0.1:{port}/telegram/webhook"
        before = len(fake.requests)

        async with aiohttp.ClientSession(connector=connector) as client:

            async def resident(uid: int, mine: list[dict]) -> None:
                for update in mine:
                    sent_at.setdefault(uid, []).append(time.time())
                    async with client.post(target, json=update, headers=headers) as resp:
                        assert resp.status == 200, resp.status

            by_user: dict[int, list[dict]] = {}
            for uid, update in updates:
                by_user.setdefault(uid, []).append(update)
            event.listen(engine, "commit", lambda conn: commits.__setitem__(0, commits[0] + 1))
            t0 = time.time()
            await asyncio.gather(*(resident(uid, mine) for uid, mine in by_user.items()))
            expected = len(updates)
            deadline = time.time() + 120
            while time.time() < deadline:
                replies = [r for r in fake.requests[before:] if r.method == "sendMessage" and r.status]
                if len(replies) >= expected:
                    break
                await asyncio.sleep(0.05)

        replies = [r for r in fake.requests[before:] if r.method == "sendMessage" and r.status == 200]
        per_chat: dict[int, list[float]] = {}
        for r in replies:
            per_chat.setdefault(int(r.params["chat_id"]), []).append(r.at)
        latencies = []
        for uid, sends in sent_at.items():
            for sent, got in zip(sends, per_chat.get(uid, []), strict=False):
                latencies.append(got - sent)
        t_end = max(r.at for r in replies) if replies else time.time()
        transactions = commits[0]
        await runner.cleanup()
        sock.close()
    engine.dispose()
    return {
        "updates": len(updates),
        "replies": len(replies),
        "seconds": t_end - t0,
        "per_second": len(replies) / (t_end - t0) if replies else 0.0,
        "p50_ms": statistics.median(latencies) * 1000 if latencies else float("nan"),
        "p99_ms": _percentile(latencies, 99) * 1000 if latencies else float("nan"),
        "backend": engine.dialect.name,
        "transactions": transactions,
    }


@contextlib.contextmanager
def _scratch_pg(server: str):
    if not server:
        yield ""
        return
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    server = normalise_database_url(server)
    admin = make_engine(server, isolation_level="AUTOCOMMIT", pool_size=1)
    name = f"gridline_bench_chat_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200, help="simulated residents (2 updates each)")
    parser.add_argument("--no-rate-limit", action="store_true",
                        help="without PTB's AIORateLimiter (Telegram allows ~30 messages/s per bot)")
    parser.add_argument("--concurrency", type=int, default=64, help="updates handled at once (across chats)")
    parser.add_argument("--database-url", default=os.environ.get("GRIDLINE_DATABASE_URL", ""))
    parser.add_argument("--pg", default="", help="PostgreSQL server URL: a scratch database is made there")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with _scratch_pg(args.pg) as url:
        result = asyncio.run(run(args.users, not args.no_rate_limit, url or args.database_url, args.concurrency))
    limiter = "off" if args.no_rate_limit else "on (Telegram limits)"
    print(f"chat webhook burst: {args.users} residents, {result['updates']} updates, {result['backend']}, "
          f"rate limiter {limiter}")
    print(f"  replies {result['replies']}/{result['updates']} in {result['seconds']:.2f}s "
          f"-> {result['per_second']:.1f} updates/s")
    print(f"  webhook -> reply request: p50 {result['p50_ms']:.0f} ms, p99 {result['p99_ms']:.0f} ms")
    print(f"  database transactions during the burst: {result['transactions']} "
          f"({result['transactions'] / max(result['updates'], 1):.2f} per update)")


if __name__ == "__main__":
    main()
