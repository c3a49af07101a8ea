"""Web residents at once through the whole web chat dialog, beside the Telegram bot's burst
(bench/chat.py) measured in the same run, on the same kind of database.

Each web resident is its own browser session (its own device cookie) against the real
Gridline app over HTTP (the page, then the JSON API, one step after the previous answer):

    GET /chat/ → state → 我要反映 → the problem in words → a location (a micro grid)
    → the first category → ✅ 确认提交 → case number

Figures: petitions/s (cases filed / wall time of the burst) and the answer time of every
step, p50/p99, for the web chat and for the bot (a web step's time includes waiting out a
"busy" answer, as the page does). The per-address limit is raised for the
run (every resident here comes from 127.0.0.1); the per-device limit stays as packaged.

    .venv/bin/python bench/webchat.py --users 200
    .venv/bin/python bench/webchat.py --users 200 --pg postgresql://postgres@127.0.0.1:5432/test

Everything runs in one process on one event loop (the clients included): the figures are
a floor, not a ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402
from sqlalchemy import func  # noqa: E402
from sqlmodel import select  # noqa: E402

from chat.resident_web import setup as setup_web_chat  # noqa: E402
from chat.resident_web import web_rules  # noqa: E402
from core.cases.models import Case  # noqa: E402
from core.platform.db import make_engine, session_scope  # noqa: E402
from core.platform.migrations import upgrade  # noqa: E402
from core.platform.settings import Settings, normalise_database_url  # noqa: E402
from gridline.app import SERVICES, build_app  # noqa: E402


def _bench_module(name: str):  # noqa: ANN202
    """bench/<name>.py (its name clashes with the package it measures)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_{name}", Path(__file__).resolve().parent / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


bot_bench = _bench_module("chat")  # the Telegram burst


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


async def run_web(users: int, database_url: str, timeout: float) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="gridline-bench-webchat-"))
    url = normalise_database_url(database_url) if database_url else f"sqlite:///{tmp / 'bench.sqlite3'}"
    engine = make_engine(url)
    upgrade(engine)
    places = bot_bench._prepare(engine)  # the demo district, points inside its micro grids
    with session_scope(engine) as session:
        before = session.exec(select(func.count()).select_from(Case)).one()
    rng = random.Random(11)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    app = build_app(Settings(data_dir=tmp, public_url=base), engine=engine, channels=(), run_jobs=True)
    rules = {**web_rules(), "address_per_minute": 1_000_000}
    setup_web_chat(app, app[SERVICES], rules=rules)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()

    latencies: list[float] = []
    filed: list[str] = []
    failures: list[str] = []
    posts = [0]
    busy = [0]  # answers "busy, try again" (503) or "too fast" (429), waited out

    async def resident(i: int, connector: aiohttp.BaseConnector) -> None:
        lat, lon = rng.choice(places)
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(connector=connector, connector_owner=False, cookie_jar=jar,
                                         timeout=aiohttp.ClientTimeout(total=timeout)) as http:
            try:
                async def fetch(method: str, path: str, **kw) -> tuple[int, dict | str]:  # noqa: ANN003
                    """As the page does: a busy answer (503, 429) is waited out and asked again."""
                    while True:
                        async with http.request(method, f"{base}{path}", **kw) as r:
                            body = await (r.json() if r.content_type == "application/json" else r.text())
                            if r.status not in (503, 429):
                                return r.status, body
                            busy[0] += 1
                            await asyncio.sleep(float(r.headers.get("Retry-After", "2")))

                await fetch("GET", "/chat/")
                csrf = (await fetch("GET", "/chat/api/state"))[1]["csrf"]
                dialog = None

                async def step(body: dict) -> dict:
                    nonlocal dialog
                    body = {**body, "key": secrets.token_hex(8)}
                    if body["kind"] == "button":
                        body["dialog"] = dialog
                    sent = time.perf_counter()
                    posts[0] += 1
                    status, answer = await fetch("POST", "/chat/api/step", json=body, headers={"X-CSRF-Token": csrf})
                    if status != 200:
                        raise RuntimeError(f"{status}: {answer.get('text')}")
                    latencies.append(time.perf_counter() - sent)
                    dialog = answer.get("dialog")
                    return answer

                await step({"kind": "start"})
                await step({"kind": "text", "text": f"{i}号楼下的路灯坏了，晚上很黑"})
                await step({"kind": "location", "lat": lat, "lon": lon})
                await step({"kind": "button", "action": "c:0"})
                answer = await step({"kind": "button", "action": "ok"})
                filed.append(answer["case"])
            except Exception as exc:  # counted and reported, the others go on
                failures.append(f"resident {i}: {type(exc).__name__}: {exc}")

    connector = aiohttp.TCPConnector(limit=100)
    t0 = time.perf_counter()
    await asyncio.gather(*(resident(i, connector) for i in range(users)))
    seconds = time.perf_counter() - t0
    await connector.close()
    with session_scope(engine) as session:
        cases = session.exec(select(func.count()).select_from(Case)).one() - before
    await runner.cleanup()
    sock.close()
    engine.dispose()
    return {
        "users": users, "posts": posts[0], "filed": len(filed), "cases": cases, "seconds": seconds,
        "petitions_per_s": len(filed) / seconds if seconds else 0.0,
        "p50_ms": statistics.median(latencies) * 1000 if latencies else float("nan"),
        "p99_ms": _percentile(latencies, 99) * 1000 if latencies else float("nan"),
        "failures": failures, "backend": engine.dialect.name, "busy": busy[0],
    }


@contextlib.contextmanager
def _scratch_pg(server: str, name: str):
    if not server:
        yield ""
        return
    scratch_database = _bench_module("dataset").scratch_database

    with scratch_database(name, server) as url:
        yield url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200, help="residents on each channel (one case each)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for one answer")
    parser.add_argument("--database-url", default=os.environ.get("GRIDLINE_DATABASE_URL", ""))
    parser.add_argument("--pg", default="", help="PostgreSQL server URL: a scratch database per channel")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with _scratch_pg(args.pg, "webchat") as url:
        web_result = asyncio.run(run_web(args.users, url or args.database_url, args.timeout))
    with _scratch_pg(args.pg, "chat") as url:
        bot = asyncio.run(bot_bench.run(args.users, True, url or args.database_url, 64, args.timeout))
    bot_per_s = bot["filed"] / bot["seconds"] if bot["seconds"] else 0.0
    print(f"web chat vs Telegram bot: {args.users} residents each filing a case, {web_result['backend']}")
    print(f"  web chat: {web_result['filed']}/{args.users} filed (database: {web_result['cases']} new) in "
          f"{web_result['seconds']:.2f}s -> {web_result['petitions_per_s']:.1f} petitions/s; "
          f"answer p50 {web_result['p50_ms']:.0f} ms, p99 {web_result['p99_ms']:.0f} ms ({web_result['posts']} posts, "
          f"{web_result['busy']} busy answers waited out)")
    print(f"  Telegram bot (same run): {bot['filed']}/{args.users} filed in {bot['seconds']:.2f}s -> "
          f"{bot_per_s:.1f} petitions/s; answer p50 {bot['p50_ms']:.0f} ms, p99 {bot['p99_ms']:.0f} ms "
          f"({bot['updates']} updates, rate limiter on)")
    for failure in (web_result["failures"] + bot["failures"])[:10]:
        print(f"  failure: {failure}")
    if web_result["failures"] or bot["failures"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
