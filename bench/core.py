"""Case core at scale: a year of a district (``bench/dataset.py``: cases with 5–10 events
each, surveys, a household registry) on PostgreSQL and SQLite, then what people wait for.

    .venv/bin/python bench/core.py                                     # 1,000,000 / 200,000 cases
    .venv/bin/python bench/core.py --pg-cases 20000 --sqlite-cases 5000 # a quick check

Measured, each beside a baseline from the same run (a bare ``SELECT 1`` round trip, and
for the cache figures the way it was done before):

- intake with warm routing indexes: ``submit_petition``; ``file_petition`` for registered
  callers (household by phone) and for unknown callers (no household: gazetteer on what
  they said, or triage);
- intake with cold indexes (the first request of a process), and while the indexes expire:
  another process changes the grids and this one notices. Before: the request rebuilt them
  (what a cold request costs). Now: they are rebuilt in the background;
- 8 clients filing at once through the server's database thread pool;
- loading the demo district into an empty SQLite database (the first ``make run``);
- a month's rates by community (with the satisfaction rate over the surveys), a worker's
  open queue, a case lookup, a case's history.

PostgreSQL comes from GRIDLINE_BENCH_PG (default: the local test server); the benchmark
makes a database of its own there and drops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dataset  # noqa: E402  (bench/dataset.py)
from sqlalchemy import text  # noqa: E402
from sqlmodel import select  # noqa: E402

from core import actions  # noqa: E402  # noqa: E402
from core.cases import intake, queries  # noqa: E402  # noqa: E402
from core.cases.models import CaseEvent, Channel  # noqa: E402  # noqa: E402
from core.places import indexes  # noqa: E402  # noqa: E402
from core.platform import clock, rules  # noqa: E402  # noqa: E402
from core.platform.db import make_engine, session_scope  # noqa: E402  # noqa: E402
from core.platform.dbpool import DatabasePool  # noqa: E402  # noqa: E402
from core.platform.migrations import upgrade  # noqa: E402  # noqa: E402
from core.reporting import figures  # noqa: E402  # noqa: E402
from gridline.wiring import wire  # noqa: E402

NOW = datetime(2026, 11, 20, 2, 0)  # 10:00 in the district, a working Friday


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


class Petitions:
    """Petitions as residents file them: registered callers (routed by household) and
    unknown ones (no household: routed by what they said, or left for triage)."""

    def __init__(self, data: dataset.Dataset, seed: int = 3):
        self.data = data
        self.rng = random.Random(seed)
        self.i = 0

    def known(self) -> actions.Petition:
        self.i += 1
        return actions.Petition(channel=Channel.hotline, description="楼道里有人飞线给电动车充电",
                                idempotency_key=f"bench-{uuid.uuid4()}",
                                contact_phone=self.data.known_phones[self.i % len(self.data.known_phones)])

    def unknown(self) -> actions.Petition:
        self.i += 1
        return actions.Petition(channel=Channel.hotline, description="路灯不亮了，晚上很黑",
                                idempotency_key=f"bench-{uuid.uuid4()}",
                                contact_phone=f"199{self.rng.randrange(10**8):08d}",
                                address_text=self.rng.choice(self.data.spoken_addresses))

    def mixed(self) -> actions.Petition:
        return self.known() if self.rng.random() < 0.6 else self.unknown()


def file_ms(engine, petition: actions.Petition) -> float:
    t0 = time.perf_counter()
    result = intake.file_petition(engine, petition)
    elapsed = (time.perf_counter() - t0) * 1000
    assert result.created
    return elapsed


def concurrent_intakes(engine, petitions: Petitions, clients: int, per_client: int) -> tuple[list[float], float]:
    """``clients`` resident requests at once, each filing ``per_client`` petitions one after
    another, through a database pool as the server has; returns latencies and petitions/s."""
    pool = DatabasePool.for_engine(engine, wait_seconds=60)
    latencies: list[float] = []

    async def client() -> None:
        for _ in range(per_client):
            petition = petitions.mixed()
            t0 = time.perf_counter()
            await pool.run(intake.file_petition, engine, petition)
            latencies.append((time.perf_counter() - t0) * 1000)

    async def run() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        return time.perf_counter() - t0

    try:
        seconds = asyncio.run(run())
    finally:
        pool.shutdown()
    return latencies, clients * per_client / seconds


def expiring(engine, petitions: Petitions, rounds: int, per_round: int) -> tuple[list[float], list[float], list[float]]:
    """Another process changes the grids ``rounds`` times (a raw UPDATE of the version row,
    as its commit would). Returns (intakes right after the change with a synchronous
    rebuild, as before; intakes while the background rebuild runs, now; rebuild times)."""
    before, now, rebuilds = [], [], []
    for _ in range(rounds):
        with engine.begin() as conn:
            conn.execute(text("UPDATE indexversion SET version = version + 1"))
        indexes.invalidate()  # before: the expired cache was rebuilt inside the request
        before.append(file_ms(engine, petitions.mixed()))
        with engine.begin() as conn:
            conn.execute(text("UPDATE indexversion SET version = version + 1"))
        for _ in range(per_round):  # now: the first request notices, all go on with the old indexes
            now.append(file_ms(engine, petitions.mixed()))
        snapshot = indexes.CACHE.wait_idle(engine)
        rebuilds.append(snapshot.built_ms)
    return before, now, rebuilds


def measure(engine, label: str, n: int) -> dict:
    print(f"\n== {label}: {n:,} cases ==", flush=True)
    data = dataset.load(engine, n)
    print(f"data: {data}")
    print(f"rows: {dataset.describe(engine)}")

    def select1():
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    base = statistics.median(timed(select1, 200))
    print(f"baseline SELECT 1 round trip: median {base:.3f} ms")
    petitions = Petitions(data)
    clock.freeze(NOW)
    results: dict[str, list[float]] = {}
    try:
        # Cold first: the first petition of a process builds the routing indexes on its path.
        cold = []
        for _ in range(10):
            indexes.invalidate()
            cold.append(file_ms(engine, petitions.mixed()))
        results["file_petition, cold indexes (first request)"] = cold

        submit_ms, known_ms, unknown_ms = [], [], []
        for i in range(300):
            if i % 3 == 0:
                t0 = time.perf_counter()
                with session_scope(engine) as session:
                    actions.submit_petition(session, petitions.known())
                submit_ms.append((time.perf_counter() - t0) * 1000)
            elif i % 3 == 1:
                known_ms.append(file_ms(engine, petitions.known()))
            else:
                unknown_ms.append(file_ms(engine, petitions.unknown()))
        results["submit_petition (the durable write)"] = submit_ms
        results["file_petition, registered caller"] = known_ms
        results["file_petition, unknown caller (gazetteer/triage)"] = unknown_ms

        before, now, rebuilds = expiring(engine, petitions, rounds=8, per_round=12)
        results["expiring: rebuilt on the request (before)"] = before
        results["expiring: rebuilt in the background (now)"] = now
        print(f"routing index rebuild: median {statistics.median(rebuilds):.1f} ms (off the request path now)")

        sequential = timed(lambda: intake.file_petition(engine, petitions.mixed()), 40)
        latencies, rate = concurrent_intakes(engine, petitions, clients=8, per_client=25)
        results["file_petition, 1 client (baseline for 8)"] = sequential
        results["file_petition, 8 clients at once"] = latencies
        print(f"8 clients: {rate:.0f} petitions/s (1 client: {1000 / statistics.mean(sequential):.0f}/s)")
    finally:
        clock.freeze(None)

    def month_rates():
        with session_scope(engine) as session:
            rows = figures.rates(session, datetime(2026, 10, 1), datetime(2026, 11, 1), "community")
            assert rows and sum(r.surveyed for r in rows) > 0  # the satisfaction rate has surveys to count

    def queue():
        with session_scope(engine) as session:
            queries.worker_queue(session, data.busy_worker)

    numbers = iter(data.case_numbers * 3)

    def lookup():
        with session_scope(engine) as session:
            actions.get_case(session, next(numbers))

    def history():
        with session_scope(engine) as session:
            case = actions.get_case(session, next(numbers))
            events = session.exec(select(CaseEvent).where(CaseEvent.case_id == case.id).order_by(CaseEvent.id)).all()
            assert len(events) >= 5

    results["month's rates by community (with surveys)"] = timed(month_rates, 15)
    results["worker's open queue"] = timed(queue, 100)
    results["case lookup by number"] = timed(lookup, 300)
    results["case history (its events)"] = timed(history, 300)

    targets = {"submit_petition (the durable write)": 20, "file_petition, registered caller": 20,
               "file_petition, unknown caller (gazetteer/triage)": 20,
               "expiring: rebuilt in the background (now)": 20, "file_petition, 8 clients at once": 100,
               "month's rates by community (with surveys)": 200, "worker's open queue": 200,
               "case lookup by number": 200, "case history (its events)": 200}
    print(f"{'operation':50} {'n':>4} {'p50 ms':>8} {'p99 ms':>8} {'p99/base':>9}  target")
    for name, values in results.items():
        p50, p99 = percentile(values, 50), percentile(values, 99)
        target = targets.get(name)
        verdict = f"p99 < {target} ms {'ok' if p99 < target else 'MISSED'}" if target else ""
        print(f"{name:50} {len(values):4} {p50:8.2f} {p99:8.2f} {p99 / base:9.1f}  {verdict}")
    return results


def demo_load(tmp: Path) -> None:
    """The demo district into an empty SQLite database (what ``make run`` does at first start),
    beside the same database's ``SELECT 1``."""
    from core.reference.demo import load_demo

    times = []
    for i in range(3):
        engine = make_engine(f"sqlite:///{tmp}/demo-{i}.sqlite3")
        upgrade(engine)
        t0 = time.perf_counter()
        with session_scope(engine) as session:
            load_demo(session)
        times.append((time.perf_counter() - t0) * 1000)
        engine.dispose()
    print(f"demo district load (SQLite, empty database, 3 runs): median {statistics.median(times):.0f} ms, "
          f"max {max(times):.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pg-cases", type=int, default=1_000_000)
    parser.add_argument("--sqlite-cases", type=int, default=200_000)
    parser.add_argument("--skip-pg", action="store_true")
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()
    wire()  # filed petitions queue what a deployment queues (chat notices, SMS, staff messages)

    with tempfile.TemporaryDirectory() as tmp:
        # Check the index version at every request, so "now" shows the background rebuild
        # on the first request after a change (a deployment checks every second).
        override = Path(tmp) / "bench-rules.toml"
        override.write_text("[indexes]\ncheck_seconds = 0\n", "utf-8")
        os.environ[rules.RULES_ENV] = str(override)
        rules.reload_rules()

        demo_load(Path(tmp))
        if not args.skip_sqlite:
            engine = make_engine(f"sqlite:///{tmp}/bench.sqlite3")
            upgrade(engine)
            measure(engine, "SQLite", args.sqlite_cases)
            engine.dispose()
        if not args.skip_pg:
            with dataset.scratch_database("core") as url:
                engine = make_engine(url)
                upgrade(engine)
                indexes.invalidate()
                measure(engine, "PostgreSQL", args.pg_cases)
                engine.dispose()

if __name__ == "__main__":
    main()
