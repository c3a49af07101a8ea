"""The console at scale: N cases on PostgreSQL (default 1,000,000) with their events,
surveys, phones, flags and transcripts (``bench/dataset.py``: a district's year), then the
pages people wait for, through the real aiohttp app and HTTP. Prints the server time (the
console's Server-Timing header) of: the triage queue, a text search, a phone search, a
worker's queue and the case page (target p99 < 150 ms each); the dashboard for a month, for
a manager and for a worker (target p99 < 300 ms); and a monthly report (the figures, and
each file format downloaded whole; target < 10 s).

    .venv/bin/python bench/console.py                    # 1,000,000 cases
    .venv/bin/python bench/console.py --cases 20000      # a quick check

PostgreSQL comes from GRIDLINE_BENCH_PG (default: the local test server); the benchmark
makes a database of its own there and drops it at the end, unless ``--database-url`` names
one to fill (when empty) and keep.
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.append(str(Path(__file__).resolve().parent))  # bench/dataset.py, after the packages (bench/core.py)

from sqlalchemy import text  # noqa: E402

from core.platform.db import make_engine, session_scope  # noqa: E402
from core.platform.migrations import upgrade  # noqa: E402
from core.platform.settings import Settings  # noqa: E402

PASSWORD = "bench password 1"
TARGET_MS = 150.0
DASHBOARD_TARGET_MS = 300.0
REPORT_TARGET_S = 10.0
MONTH = "2026-10"  # a whole month of the dataset's year (December 2025 to November 2026)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def load_dataset(engine, n: int) -> None:
    """The one way this benchmark gets its data: the shared generator (cases, 5–10 events
    each, surveys, a household registry), then what the console's pages read and the
    generator does not write: flags, transcripts."""
    import dataset  # bench/dataset.py

    print(dataset.load(engine, n))
    _top_up(engine)
    # What autovacuum does on a live server: the visibility map lets the figures' queries
    # answer from their indexes alone.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in ('"case"', "caseevent", "survey"):
            conn.execute(text(f"VACUUM ANALYZE {table}"))


_TRANSCRIPT = ('[{"text": "楼下路灯坏了好几天", "start": 0.4, "end": 3.1, "final": true, "confidence": 0.71, '
               '"words": [{"word": "楼下", "start": 0.4, "end": 0.9, "conf": 0.9}, '
               '{"word": "路灯", "start": 0.9, "end": 1.5, "conf": 0.8}, '
               '{"word": "坏了", "start": 1.5, "end": 2.0, "conf": 0.45}, '
               '{"word": "好几天", "start": 2.0, "end": 3.1, "conf": 0.7}]}]')


def _top_up(engine) -> None:
    """Phones, triage flags, transcripts and lifecycle events, in bulk SQL; each
    step only fills what is missing, so a richer generator makes it a no-op. (Surveys, and
    their answers counted on the cases, come from the generator.)"""
    steps = [
        # a caller's number on every case: 300,000 residents calling again and again
        """UPDATE "case" SET contact_phone = '+86138' || lpad((id % 300000)::text, 8, '0')
           WHERE contact_phone IS NULL""",
        # what waits for triage: flags on received cases, a third of them with no grid
        """UPDATE "case" SET flags = CASE WHEN channel = 'hotline' THEN '["low_confidence"]'::json
                                         ELSE '["needs_triage"]'::json END,
                             grid_id = CASE WHEN id % 3 = 0 THEN NULL ELSE grid_id END
           WHERE status = 'received' AND (flags IS NULL OR flags::text = 'null')""",
        f"""UPDATE "case" SET transcript = '{_TRANSCRIPT}'::json, transcript_confidence = 0.71
            WHERE channel = 'hotline' AND transcript IS NULL""",
        # the lifecycle events the dates on each case imply
        """INSERT INTO caseevent (case_id, at, actor, action, from_status, to_status)
           SELECT id, dispatched_at, 'system', 'dispatch', 'received', 'dispatched' FROM "case"
           WHERE dispatched_at IS NOT NULL AND NOT EXISTS (SELECT 1 FROM caseevent e WHERE e.action = 'dispatch')""",
        """INSERT INTO caseevent (case_id, at, actor, action, from_status, to_status, on_time)
           SELECT id, accepted_at, 'worker', 'accept', 'dispatched', 'accepted', responded_on_time FROM "case"
           WHERE accepted_at IS NOT NULL AND NOT EXISTS (SELECT 1 FROM caseevent e WHERE e.action = 'accept')""",
        """INSERT INTO caseevent (case_id, at, actor, action, from_status, to_status, reason, on_time)
           SELECT id, reported_done_at, 'worker', 'report_done', 'in_progress', 'reported_done', '已处理',
                  resolved_on_time FROM "case"
           WHERE reported_done_at IS NOT NULL AND NOT EXISTS (SELECT 1 FROM caseevent e WHERE e.action = 'report_done')""",
        """INSERT INTO caseevent (case_id, at, actor, action, from_status, to_status)
           SELECT id, verified_at, 'leader', 'verify', 'reported_done', 'verified' FROM "case"
           WHERE verified_at IS NOT NULL AND NOT EXISTS (SELECT 1 FROM caseevent e WHERE e.action = 'verify')""",
        """INSERT INTO caseevent (case_id, at, actor, action, from_status, to_status)
           SELECT id, closed_at, 'resident', 'close', 'verified', 'closed' FROM "case"
           WHERE closed_at IS NOT NULL AND NOT EXISTS (SELECT 1 FROM caseevent e WHERE e.action = 'close')""",
        'ANALYZE "case"', "ANALYZE caseevent", "ANALYZE survey",
    ]
    with engine.begin() as conn:
        for sql in steps:
            conn.execute(text(sql))


async def _measure(engine, data_dir: Path, repeat: int) -> dict[str, list[float]]:
    from aiohttp import ClientSession, CookieJar
    from aiohttp.test_utils import TestServer

    from console.auth import add_user
    from gridline.app import build_app

    with session_scope(engine) as session:
        busy_worker = session.exec(text(
            "SELECT w.code FROM \"case\" c JOIN worker w ON w.id = c.worker_id WHERE c.status IN "
            "('dispatched','accepted','in_progress','reported_done') GROUP BY w.code ORDER BY count(*) DESC LIMIT 1"
        )).one()[0]
        run_tag = uuid.uuid4().hex[:6]  # a kept database (--database-url) gets new accounts each run
        op_name, worker_name = f"bench-op-{run_tag}", f"bench-worker-{run_tag}"
        add_user(session, op_name, PASSWORD, "operator")
        add_user(session, worker_name, PASSWORD, "worker", worker_code=busy_worker)
        numbers = [r[0] for r in session.exec(text('SELECT number FROM "case" ORDER BY random() LIMIT 500'))]
        phones = [r[0] for r in session.exec(text(
            'SELECT contact_phone FROM "case" WHERE contact_phone IS NOT NULL ORDER BY random() LIMIT 200'))]
    # server_gc: as `gridline serve` runs it.
    app = build_app(Settings(data_dir=data_dir), engine=engine, channels=("console",), run_jobs=False,
                    server_gc=True)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")

    async def logged_in(name: str) -> ClientSession:
        client = ClientSession(cookie_jar=CookieJar(unsafe=True))  # our server is an IP address
        html = await (await client.get(f"{base}/console/login")).text()
        token = html.split('name="_csrf" value="', 1)[1].split('"', 1)[0]
        resp = await client.post(f"{base}/console/login", data={"_csrf": token, "name": name,
                                                                 "password": PASSWORD}, allow_redirects=False)
        assert resp.status == 303, await resp.text()
        return client

    async def timed(client: ClientSession, paths) -> list[float]:  # noqa: ANN001
        out = []
        for path in paths:
            resp = await client.get(f"{base}{path}", allow_redirects=False)
            body = await resp.read()
            assert resp.status == 200, (path, resp.status, body[:300])
            out.append(float(resp.headers["Server-Timing"].split("dur=")[1]))
        return out

    rng = random.Random(5)
    terms = ["路灯", "下水道堵了", "飞线", "噪音", "垃圾没人清运", "井盖松动", "楼道", "不亮"]
    op = await logged_in(op_name)
    worker = await logged_in(worker_name)
    try:
        await timed(op, ["/console/triage", "/console/search?text=路灯"] * 5)  # warm caches and pools
        results = {
            "triage queue": await timed(op, ["/console/triage"] * repeat),
            "text search": await timed(op, [f"/console/search?text={rng.choice(terms)}" for _ in range(repeat)]),
            "phone search": await timed(op, [f"/console/search?phone={rng.choice(phones)}" for _ in range(repeat)]),
            "worker's queue": await timed(worker, [f"/console/queues/worker/{busy_worker}"] * repeat),
            "case page": await timed(op, [f"/console/cases/{rng.choice(numbers)}" for _ in range(repeat)]),
        }
        levels = ["community", "micro", "area", "street"]
        dash = [f"/console/dashboard?period={MONTH}&level={rng.choice(levels)}" for _ in range(repeat)]
        await timed(op, dash[:3])  # warm
        results["dashboard (manager)"] = await timed(op, dash)
        results["dashboard (worker)"] = await timed(worker, [f"/console/dashboard?period={MONTH}"] * repeat)
        report_times = {}
        for fmt in ("csv", "xlsx", "html", "pdf"):
            started = time.perf_counter()
            resp = await op.get(f"{base}/console/reports/download?kind=monthly&period={MONTH}&format={fmt}")
            body = await resp.read()
            assert resp.status == 200, (fmt, resp.status, body[:300])
            report_times[fmt] = (time.perf_counter() - started, len(body))
        results["monthly report"] = report_times
    finally:
        await op.close()
        await worker.close()
        await server.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=200, help="requests per page kind")
    parser.add_argument("--database-url", help="measure on this PostgreSQL database and keep it: loaded with "
                                               "--cases when empty, used as it is otherwise (a second run skips "
                                               "the load)")
    args = parser.parse_args()
    from dataset import scratch_database  # bench/dataset.py

    if args.database_url:
        run(args, args.database_url)
    else:
        with scratch_database("console") as url:
            run(args, url)


def run(args: argparse.Namespace, url: str) -> None:
    engine = make_engine(url)
    upgrade(engine)
    with engine.connect() as conn:
        existing = conn.execute(text('SELECT count(*) FROM "case"')).scalar()
    if existing:
        print(f"using the {existing:,} cases already in the database (--cases not applied)")
    else:
        t0 = time.perf_counter()
        load_dataset(engine, args.cases)
        print(f"loaded {args.cases:,} cases with events and surveys in {time.perf_counter() - t0:.0f} s")
    with engine.connect() as conn:
        base = []
        for _ in range(200):
            s = time.perf_counter()
            conn.execute(text("SELECT 1"))
            base.append((time.perf_counter() - s) * 1000)
        counts = conn.execute(text('SELECT (SELECT count(*) FROM "case"), (SELECT count(*) FROM caseevent), '
                                   '(SELECT count(*) FROM survey)')).one()
    print(f"rows: {counts[0]:,} cases, {counts[1]:,} events, {counts[2]:,} surveys; "
          f"baseline SELECT 1 median {statistics.median(base):.3f} ms")
    with tempfile.TemporaryDirectory() as tmp:
        # One account makes --repeat phone searches, more than [console.search] personal_per_hour
        # lets an account make in an hour (a 429 after 60): the limit is lifted for this process.
        override = Path(tmp) / "rules.toml"
        override.write_text("[console.search]\npersonal_per_hour = 1000000\n", "utf-8")
        os.environ["GRIDLINE_RULES"] = str(override)
        results = asyncio.run(_measure(engine, Path(tmp), args.repeat))
    report_times = results.pop("monthly report")
    print(f"\n{'page (server time)':24} {'p50 ms':>8} {'p99 ms':>8}  target")
    for label, values in results.items():
        p50, p99 = percentile(values, 50), percentile(values, 99)
        target = DASHBOARD_TARGET_MS if label.startswith("dashboard") else TARGET_MS
        verdict = "ok" if p99 < target else "MISSED"
        print(f"{label:24} {p50:8.2f} {p99:8.2f}  p99 < {target:.0f} ms {verdict}")
    print(f"\nmonthly report {MONTH}, downloaded whole (figures + file):")
    for fmt, (seconds, size) in report_times.items():
        verdict = "ok" if seconds < REPORT_TARGET_S else "MISSED"
        print(f"  {fmt:5} {seconds:7.2f} s  {size:>10,} bytes  < {REPORT_TARGET_S:.0f} s {verdict}")
    engine.dispose()


if __name__ == "__main__":
    main()
