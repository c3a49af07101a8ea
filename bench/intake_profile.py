"""Where an Open311 petition's time goes, in one process without HTTP: SQL statements per
petition (by kind), the time of each part (cProfile, cumulative), and the per-request costs
the issue suspected, each measured on its own beside the petition it is part of.

    .venv/bin/python bench/intake_profile.py                 # PostgreSQL, 50,000 cases
    .venv/bin/python bench/intake_profile.py --cases 20000 --sqlite

Printed: petitions filed one after another (statements, ORM flushes and CPU milliseconds of
this process each — figures that hold on a loaded machine, unlike wall time — and the
statements by kind); cProfile's top functions by cumulative time; a session opened and closed; a no-op
through the database thread pool with 1 and 8 callers; one log line written; one answer's
JSON; a routing decision alone (warm indexes).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import io
import json
import logging
import os
import pstats
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import dataset  # noqa: E402  (bench/dataset.py)
from sqlalchemy import event  # noqa: E402
from sqlalchemy.orm import Session as OrmSession  # noqa: E402
from sqlmodel import select  # noqa: E402

from console import open311  # noqa: E402
from core.cases.models import Category  # noqa: E402
from core.people import apikeys  # noqa: E402
from core.places import indexes, routing  # noqa: E402
from core.platform.db import make_engine, session_scope  # noqa: E402
from core.platform.dbpool import DatabasePool  # noqa: E402
from core.platform.migrations import upgrade  # noqa: E402
from gridline.wiring import wire  # noqa: E402


def per_call_us(fn, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def measure(url: str, cases: int, petitions: int, pstats_file: str | None = None) -> None:
    wire()
    engine = make_engine(url)
    upgrade(engine)
    data = dataset.load(engine, cases)
    print(f"{data}; load average {os.getloadavg()[0]:.2f}")
    with session_scope(engine) as s:
        _, key = apikeys.add_key(s, "profile", actor="bench")
        codes = list(s.exec(select(Category.code).where(Category.active == True)).all())  # noqa: E712
    rng = random.Random(1)

    def form() -> dict[str, str]:
        f = {"service_code": rng.choice(codes), "description": "路灯不亮了，晚上很黑"}
        if rng.random() < 0.6:
            f["phone"], f["address_string"] = rng.choice(data.known_phones), "我家"
        else:
            f["phone"], f["address_string"] = f"199{rng.randrange(10**8):08d}", rng.choice(data.spoken_addresses)
        return f

    statements: collections.Counter[str] = collections.Counter()
    flushes = [0]

    @event.listens_for(engine, "before_cursor_execute")
    def count(conn, cursor, statement, params, context, executemany):  # noqa: ANN001, ARG001
        statements[" ".join(statement.split())[:100]] += 1

    @event.listens_for(OrmSession, "after_flush")
    def count_flush(session, context):  # noqa: ANN001, ARG001
        flushes[0] += 1

    def one() -> None:
        with session_scope(engine) as s:
            open311._file(s, form(), key, f"p-{uuid.uuid4().hex[:10]}")

    for _ in range(20):
        one()
    statements.clear()
    flushes[0] = 0
    lat = []
    cpu0 = time.process_time()
    for _ in range(petitions):
        t0 = time.perf_counter()
        one()
        lat.append((time.perf_counter() - t0) * 1000)
    cpu_ms = (time.process_time() - cpu0) * 1000 / petitions
    lat.sort()
    total = sum(statements.values())
    # CPU time of this process (not wall time: on a loaded machine only the CPU each petition
    # costs, the statements and the flushes are figures one can compare between runs).
    print(f"\n{petitions} petitions one after another: {total / petitions:.1f} SQL statements each, "
          f"{flushes[0] / petitions:.1f} ORM flushes each, {cpu_ms:.2f} ms of this process's CPU each "
          f"(wall p50 {lat[len(lat) // 2]:.1f} ms)")
    for text_, n in statements.most_common():
        print(f"  {n / petitions:5.2f}  {text_}")

    profile = cProfile.Profile()
    profile.enable()
    for _ in range(petitions // 2):
        one()
    profile.disable()
    if pstats_file:
        profile.dump_stats(pstats_file)
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    # Function calls are counted exactly: a figure of the Python work per petition that the
    # machine's load does not change.
    print(f"\nPython function calls per petition (cProfile): {stats.total_calls / (petitions // 2):,.0f}")
    stats.sort_stats("cumulative").print_stats(r"gridline|core|console", 25)
    print("\ncProfile, cumulative, our code:\n" + "\n".join(out.getvalue().splitlines()[6:40]))

    from concurrent.futures import ThreadPoolExecutor

    def rate(callers: int, each: int) -> float:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(callers) as threads:
            list(threads.map(lambda _: [one() for _ in range(each)], range(callers)))
        return callers * each / (time.perf_counter() - t0)

    print(f"\npetitions filed by threads at once (the GIL and the database's locks, no HTTP), "
          f"load average {os.getloadavg()[0]:.2f}:")
    for callers in (1, 8):
        print(f"  {callers} thread(s)  {rate(callers, max(5, petitions // (2 * callers))):7.1f} petitions/s")

    print("\nper-request costs, each alone:")

    def session_only() -> None:
        with session_scope(engine):
            pass

    print(f"  a session opened and closed (no statement)      {per_call_us(session_only, 2000):8.1f} µs")
    with session_scope(engine) as s:
        snap = indexes.routing_indexes(s)
        address = data.spoken_addresses[0]
        print(f"  routing one spoken address (warm indexes)       "
              f"{per_call_us(lambda: routing.route_case(s, locator=snap.locator, gazetteer=snap.gazetteer, phone=None, address_text=address), 200):8.1f} µs")  # noqa: E501
    pool = DatabasePool(8)

    async def through_pool(callers: int, n: int) -> float:
        async def caller() -> None:
            for _ in range(n):
                await pool.run(lambda: None)

        t0 = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        return (time.perf_counter() - t0) / (callers * n) * 1e6

    print(f"  a no-op through the database pool, 1 caller     {asyncio.run(through_pool(1, 2000)):8.1f} µs")
    print(f"  a no-op through the database pool, 8 callers    {asyncio.run(through_pool(8, 500)):8.1f} µs")
    pool.shutdown()
    with tempfile.TemporaryDirectory() as tmp:
        logger = logging.getLogger("bench.profile")
        handler = logging.FileHandler(f"{tmp}/log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        print(f"  one log line to a file                          "
              f"{per_call_us(lambda: logger.info('open311: filed request %s (client id %s)', '26112000001', 'abc'), 5000):8.1f} µs")  # noqa: E501
        handler.close()
    row = [{"service_request_id": "26112000001", "service_notice": None, "account_id": None}]
    print(f"  one answer's JSON                               "
          f"{per_call_us(lambda: json.dumps(row, ensure_ascii=False), 20000):8.1f} µs")
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=50_000)
    parser.add_argument("--petitions", type=int, default=200)
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL")
    parser.add_argument("--pstats", metavar="FILE", help="also write the cProfile of the petitions to FILE "
                        "(for pstats or snakeviz)")
    args = parser.parse_args()
    if args.sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            measure(f"sqlite:///{tmp}/p.sqlite3", args.cases, args.petitions, args.pstats)
    else:
        with dataset.scratch_database("profile") as url:
            measure(url, args.cases, args.petitions, args.pstats)


if __name__ == "__main__":
    main()
