"""Case core at scale: 1,000,000 cases on PostgreSQL and 200,000 on SQLite over the demo
district and twelve months, then the operations people wait for.

    .venv/bin/python bench/core.py                 # both databases
    .venv/bin/python bench/core.py --pg-cases 100000 --sqlite-cases 20000   # quicker

PostgreSQL comes from GRIDLINE_BENCH_PG (default: the local test server); the benchmark
makes a database of its own there and drops it at the end. Every figure is printed beside
a baseline measured in the same run (a bare ``SELECT 1`` round trip) so runs on different
machines can be compared by ratio.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlmodel import select  # noqa: E402

from core import actions, clock, figures, intake, queries  # noqa: E402
from core.db import make_engine, session_scope, upgrade  # noqa: E402
from core.demo import load_demo  # noqa: E402
from core.models import Category, CategorySla, Channel, Grid, GridLevel, Urgency, WorkerGrid  # noqa: E402
from core.settings import normalise_database_url  # noqa: E402
from core.sla import calendar_for, compute_deadlines  # noqa: E402

START = datetime(2025, 12, 1)
DAYS = 365
CASE_COLUMNS = [
    "number", "channel", "status", "description", "category_id", "urgency", "grid_id", "owner_level",
    "worker_id", "department_id", "reopen_count", "escalation_count", "created_at", "updated_at",
    "dispatched_at", "response_due", "resolution_due", "accepted_at", "reported_done_at", "verified_at",
    "closed_at", "close_reason", "responded_on_time", "resolved_on_time", "latitude", "longitude",
]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def synthetic_cases(session, n: int, seed: int = 7):
    """Rows shaped like a year of a district: most old cases closed, recent ones open."""
    rng = random.Random(seed)
    micro = session.exec(select(Grid).where(Grid.level == GridLevel.micro)).all()
    owners = {wg.grid_id: wg.worker_id for wg in session.exec(select(WorkerGrid)).all()}
    categories = session.exec(select(Category)).all()
    sla = {(s.category_id, s.urgency): s for s in session.exec(select(CategorySla)).all()}
    cal = calendar_for(session)
    per_day: dict[str, int] = {}
    descriptions = ["路灯不亮", "下水道堵了", "楼道飞线充电", "邻居噪音扰民", "垃圾没人清运", "井盖松动"]
    # Sorted, as a live system writes them: a month's cases sit together on disk.
    offsets = sorted(rng.randrange(DAYS * 86400) for _ in range(n))
    for i, offset in enumerate(offsets):
        created = START + timedelta(seconds=offset)
        day = (created + timedelta(hours=8)).strftime("%y%m%d")
        per_day[day] = per_day.get(day, 0) + 1
        grid = micro[i % len(micro)]
        category = categories[rng.randrange(len(categories))]
        urgency = Urgency.normal if rng.random() < 0.85 else Urgency.urgent
        age_days = (START + timedelta(days=DAYS) - created).days
        roll = rng.random()
        row = dict.fromkeys(CASE_COLUMNS)
        row.update(number=f"{day}{per_day[day]:05d}", channel=rng.choice(list(Channel)).name,
                   description=rng.choice(descriptions), category_id=category.id, urgency=urgency.name,
                   grid_id=grid.id, reopen_count=0, escalation_count=0, created_at=created, updated_at=created,
                   latitude=None, longitude=None)
        if roll < 0.03:
            row["status"] = "received"
        else:
            dispatched = created + timedelta(minutes=rng.randrange(5, 120))
            rule = sla.get((category.id, urgency))
            due = compute_deadlines(rule, dispatched, cal) if rule else (dispatched + timedelta(hours=4),
                                                                         dispatched + timedelta(days=5))
            accepted = dispatched + timedelta(minutes=rng.randrange(10, 600))
            done = accepted + timedelta(hours=rng.randrange(1, 120))
            row.update(owner_level="micro", worker_id=owners.get(grid.id), department_id=category.department_id,
                       dispatched_at=dispatched, response_due=due[0], resolution_due=due[1])
            finished = age_days > 10 or roll > 0.5
            if not finished:
                row["status"] = rng.choice(["dispatched", "accepted", "in_progress", "reported_done"])
                if row["status"] != "dispatched":
                    row.update(accepted_at=accepted, responded_on_time=accepted <= due[0])
                if row["status"] == "reported_done":
                    row.update(reported_done_at=done, resolved_on_time=done <= due[1])
            else:
                row.update(status="closed", accepted_at=accepted, responded_on_time=accepted <= due[0],
                           reported_done_at=done, resolved_on_time=done <= due[1],
                           verified_at=done + timedelta(hours=4), closed_at=done + timedelta(days=1),
                           close_reason=rng.choice(["survey:satisfied"] * 8 + ["survey:basically", "survey:not"]))
        yield row
    yield ("sequences", per_day)


def bulk_load(engine, n: int) -> float:
    t0 = time.perf_counter()
    with session_scope(engine) as session:
        rows = synthetic_cases(session, n)
        if engine.dialect.name == "postgresql":
            per_day = _copy_pg(engine, rows)
        else:
            per_day = _insert_sqlite(engine, rows)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM casesequence"))
        conn.execute(text("INSERT INTO casesequence (day, last) VALUES (:d, :n)"),
                     [{"d": d, "n": c} for d, c in per_day.items()])
        # one submit event per case, so the audit table is not empty either
        conn.execute(text("INSERT INTO caseevent (case_id, at, actor, action, to_status) "
                          "SELECT id, created_at, 'bench', 'submit', 'received' FROM \"case\""))
        if engine.dialect.name == "postgresql":
            conn.execute(text('ANALYZE "case"'))
            conn.execute(text("ANALYZE caseevent"))
        else:
            conn.execute(text("ANALYZE"))
    return time.perf_counter() - t0


def _copy_pg(engine, rows) -> dict:
    raw = engine.raw_connection()
    per_day = {}
    try:
        cur = raw.cursor()
        cols = ", ".join(f'"{c}"' for c in CASE_COLUMNS)
        with cur.copy(f'COPY "case" ({cols}) FROM STDIN') as copy:
            for row in rows:
                if isinstance(row, tuple):
                    per_day = row[1]
                    continue
                copy.write_row([row[c] for c in CASE_COLUMNS])
        raw.commit()
    finally:
        raw.close()
    return per_day


def _insert_sqlite(engine, rows) -> dict:
    raw = engine.raw_connection()
    per_day = {}
    sql = f'INSERT INTO "case" ({", ".join(CASE_COLUMNS)}) VALUES ({", ".join("?" * len(CASE_COLUMNS))})'
    batch = []
    try:
        cur = raw.cursor()
        for row in rows:
            if isinstance(row, tuple):
                per_day = row[1]
                continue
            batch.append([row[c].isoformat(sep=" ") if isinstance(row[c], datetime) else row[c]
                          for c in CASE_COLUMNS])
            if len(batch) >= 20000:
                cur.executemany(sql, batch)
                batch.clear()
        if batch:
            cur.executemany(sql, batch)
        raw.commit()
    finally:
        raw.close()
    return per_day


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def measure(engine, label: str, n: int) -> dict:
    print(f"\n== {label}: {n:,} cases ==", flush=True)
    with session_scope(engine) as session:
        summary = load_demo(session)
    print(f"demo district: {summary}")
    seconds = bulk_load(engine, n)
    print(f"bulk load: {seconds:.1f} s ({n / seconds:,.0f} cases/s)")
    intake.invalidate_routing()

    def select1():
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    base = statistics.median(timed(select1, 200))
    print(f"baseline SELECT 1 round trip: median {base:.3f} ms")

    with session_scope(engine) as session:
        phones = [p for (p,) in session.exec(text("SELECT phone FROM resident WHERE phone IS NOT NULL LIMIT 200"))]
        busy_worker = session.exec(text(
            "SELECT worker_id FROM \"case\" WHERE worker_id IS NOT NULL AND status <> 'closed' "
            "GROUP BY worker_id ORDER BY count(*) DESC LIMIT 1")).one()[0]
        numbers = [x for (x,) in session.exec(text('SELECT number FROM "case" ORDER BY random() LIMIT 300'))]

    clock.freeze(datetime(2026, 11, 20, 2, 0))
    # One intake first, not timed: it builds the process's routing indexes and calendar.
    intake.file_petition(engine, actions.Petition(channel=Channel.hotline, description="路灯不亮",
                                                  idempotency_key="bench-warmup", contact_phone=phones[0]))
    rng = random.Random(3)
    submit_ms, intake_ms = [], []
    for i in range(200):
        p = actions.Petition(channel=Channel.hotline, description="楼道里有人飞线给电动车充电",
                             idempotency_key=f"bench-{uuid.uuid4()}", contact_phone=phones[i % len(phones)])
        if i % 2:
            t0 = time.perf_counter()
            with session_scope(engine) as session:
                actions.submit_petition(session, p)
            submit_ms.append((time.perf_counter() - t0) * 1000)
        else:
            t0 = time.perf_counter()
            result = intake.file_petition(engine, p)
            intake_ms.append((time.perf_counter() - t0) * 1000)
            assert result.created
        rng.random()
    clock.freeze(None)

    def month_rates():
        with session_scope(engine) as session:
            rows = figures.rates(session, datetime(2026, 10, 1), datetime(2026, 11, 1), "community")
            assert rows

    def queue():
        with session_scope(engine) as session:
            queries.worker_queue(session, busy_worker)

    it = iter(numbers * 2)

    def lookup():
        with session_scope(engine) as session:
            actions.get_case(session, next(it))

    results = {
        "intake: submit_petition": submit_ms,
        "intake: file_petition (submit+route+dispatch)": intake_ms,
        "month's rates by community": timed(month_rates, 15),
        "worker's open queue": timed(queue, 100),
        "case lookup by number": timed(lookup, 300),
    }
    targets = {"intake: submit_petition": 20, "intake: file_petition (submit+route+dispatch)": 20,
               "month's rates by community": 200, "worker's open queue": 200, "case lookup by number": 200}
    print(f"{'operation':48} {'p50 ms':>8} {'p99 ms':>8} {'p99/base':>9}  target")
    for name, values in results.items():
        p50, p99 = percentile(values, 50), percentile(values, 99)
        ok = "ok" if p99 < targets[name] else "MISSED"
        print(f"{name:48} {p50:8.2f} {p99:8.2f} {p99 / base:9.1f}  p99 < {targets[name]} ms {ok}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pg-cases", type=int, default=1_000_000)
    parser.add_argument("--sqlite-cases", type=int, default=200_000)
    parser.add_argument("--skip-pg", action="store_true")
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()

    if not args.skip_sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            engine = make_engine(f"sqlite:///{tmp}/bench.sqlite3")
            upgrade(engine)
            measure(engine, "SQLite", args.sqlite_cases)
            engine.dispose()
    if not args.skip_pg:
        server = normalise_database_url(os.environ.get("GRIDLINE_BENCH_PG",
                                                       "postgresql://postgres@127.0.0.1:5432/test"))
        admin = make_engine(server, isolation_level="AUTOCOMMIT", pool_size=1)
        name = f"gridline_bench_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            engine = make_engine(make_url(server).set(database=name).render_as_string(hide_password=False))
            upgrade(engine)
            measure(engine, "PostgreSQL", args.pg_cases)
            engine.dispose()
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
