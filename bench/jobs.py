"""Durable jobs at scale: N due jobs taken by P job processes on PostgreSQL.

    .venv/bin/python bench/jobs.py                              # 10,000 no-op jobs, 2 processes, 600 calls at 5/s
    .venv/bin/python bench/jobs.py --jobs 500 --calls 40        # a quick check

1. **No-op jobs.** N jobs of a kind whose handler does nothing but write down its job id
   are queued; P processes (a ``core.platform.runner.JobRunner`` each, as ``gridline serve`` and
   ``gridline jobs`` run it, claiming with ``FOR UPDATE SKIP LOCKED``) take them. Prints
   jobs per second (from the moment the jobs are due to the last one done) and the number
   of jobs run more than once (must be 0). Target: ≥ 500 jobs/s.
2. **Follow-up calls.** M verified hotline cases with a phone follow-up due now; P
   ``gridline jobs --surveys`` processes place the calls with the real twilio client at
   the fake Twilio REST server (``tests/support/fake_twilio.py``, in this process) under a
   calls-per-second cap (rules ``[survey.phone] calls_per_second``, ``--cps``). Prints the
   calls per second Twilio saw against the cap, and the residents called more than once
   (must be 0). Target: the cap, not less (the processes share it through the database).

PostgreSQL comes from GRIDLINE_BENCH_PG (default: the local test server); the benchmark
makes a database of its own there and drops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dataset import scratch_database  # noqa: E402  (bench/dataset.py)
from sqlalchemy import func, update  # noqa: E402
from sqlmodel import select  # noqa: E402

from core.platform import jobs  # noqa: E402
from core.platform.clock import utcnow  # noqa: E402
from core.platform.db import make_engine, session_scope  # noqa: E402
from core.platform.migrations import upgrade  # noqa: E402
from core.platform.models import Job, JobStatus  # noqa: E402

NOOP_JOB = jobs.declare("bench_noop", "bench/jobs.py: does nothing, writes down its id")


# ---------------------------------------------------------------- the no-op job process


def noop_process(url: str, out: Path, ready: Path, batch: int) -> None:
    """A job process: a JobRunner taking only bench_noop jobs until SIGTERM."""
    from core.platform.runner import JobRunner

    engine = make_engine(url)
    log = open(out, "a", buffering=1)  # noqa: SIM115 - one line per job, flushed as it runs

    async def noop(job: Job) -> None:
        log.write(f"{job.id}\n")

    async def main() -> None:
        runner = JobRunner(engine, poll_seconds=0.05, batch=batch)
        runner.register(NOOP_JOB, noop)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        runner.start()
        ready.write_text(runner.name)
        await stop.wait()
        await runner.stop()

    asyncio.run(main())
    log.close()


# ---------------------------------------------------------------- phases


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def done_count(engine, kind: str) -> int:
    with session_scope(engine) as s:
        return s.exec(select(func.count()).select_from(Job).where(Job.kind == kind, Job.status == JobStatus.done)).one()


def noop_phase(engine, url: str, n: int, processes: int, batch: int, tmp: Path) -> None:
    later = utcnow() + timedelta(hours=1)
    with session_scope(engine) as s:
        for start in range(0, n, 5000):
            s.add_all([Job(kind=NOOP_JOB, payload={"i": i}, run_at=later) for i in range(start, min(n, start + 5000))])
    procs, outs = [], []
    for i in range(processes):
        out, ready = tmp / f"noop-{i}.ids", tmp / f"noop-{i}.ready"
        outs.append(out)
        procs.append(subprocess.Popen([sys.executable, __file__, "_noop-process", url, str(out), str(ready), str(batch)],
                                      cwd=ROOT))
        wait_until(ready.exists, 60, f"process {i} to start")
    with session_scope(engine) as s:  # every job due at once
        s.execute(update(Job).where(Job.kind == NOOP_JOB).values(run_at=utcnow()))
    started = time.perf_counter()
    wait_until(lambda: done_count(engine, NOOP_JOB) == n, 3600, f"{n} jobs done")
    elapsed = time.perf_counter() - started
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(60)
    runs = Counter(int(line) for out in outs for line in out.read_text().split())
    per_process = [len(out.read_text().split()) for out in outs]
    duplicates = sum(c - 1 for c in runs.values() if c > 1)
    print(f"no-op jobs: {n} by {processes} job processes (batch {batch}) in {elapsed:.2f} s: "
          f"{n / elapsed:.0f} jobs/s; duplicates: {duplicates}; per process {per_process}")


def due_surveys(engine, count: int) -> None:
    from core.cases.models import Case, CaseStatus, Channel
    from core.followup.models import Survey
    from core.people.models import Resident

    now = utcnow()
    with session_scope(engine) as s:
        residents = [Resident(phone=f"1391234{i:04d}") for i in range(count)]
        s.add_all(residents)
        s.flush()
        cases = [Case(number=f"B{i:08d}", channel=Channel.hotline, status=CaseStatus.verified, contact_phone=r.phone,
                      resident_id=r.id, created_at=now, updated_at=now, verified_at=now) for i, r in enumerate(residents)]
        s.add_all(cases)
        s.flush()
        surveys = [Survey(case_id=c.id, channel="phone") for c in cases]
        s.add_all(surveys)
        s.flush()
        s.add_all([Job(kind="survey_phone", payload={"survey_id": sv.id, "attempt": 1}, dedupe_key=f"survey:{sv.id}:1",
                       run_at=now + timedelta(hours=1)) for sv in surveys])


def calls_phase(engine, url: str, m: int, processes: int, cps: float, tmp: Path) -> None:
    from tests.support.fake_twilio import FakeTwilio

    due_surveys(engine, m)
    rules = tmp / "rules.toml"
    rules.write_text(f'[survey.phone]\ncalling_hours = ["00:00", "23:59"]\non_holidays = true\n'
                     f"calls_per_second = {cps}\n")
    with FakeTwilio() as fake:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDLINE_")}
        env.update({"GRIDLINE_DATABASE_URL": url, "GRIDLINE_TWILIO_ACCOUNT_SID": fake.account_sid,
                    "GRIDLINE_TWILIO_AUTH_TOKEN": fake.auth_token, "GRIDLINE_TWILIO_API_URL": fake.base_url,
                    "GRIDLINE_HOTLINE_NUMBER": fake.phone_number, "GRIDLINE_PUBLIC_URL": "http://127.0.0.1:9",
                    "GRIDLINE_RULES": str(rules), "GRIDLINE_DATA_DIR": str(tmp), "GRIDLINE_TELEGRAM_TOKEN": ""})
        procs = [subprocess.Popen([sys.executable, "-m", "gridline.cli", "jobs", "--surveys"], cwd=ROOT, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(processes)]
        time.sleep(3)  # let them start (they find nothing due)
        with session_scope(engine) as s:
            s.execute(update(Job).where(Job.kind == "survey_phone").values(run_at=utcnow()))
        started = time.perf_counter()
        wait_until(lambda: done_count(engine, "survey_phone") == m, 3600, f"{m} calls placed")
        elapsed = time.perf_counter() - started
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(60)
        created = [fake.calls[sid] for sid in fake.calls]
    numbers = Counter(c["to"] for c in created)
    twice = sum(n - 1 for n in numbers.values() if n > 1)
    moments = sorted(parsedate_to_datetime(c["date_created"]).timestamp() for c in created)
    # Twilio's dates are to the second: the rate over the whole run, first to last call.
    span = max(moments[-1] - moments[0], 1.0) if moments else 1.0
    print(f"follow-up calls: {len(created)} placed for {m} due surveys by {processes} `gridline jobs --surveys` "
          f"in {elapsed:.1f} s; {(len(created) - 1) / span:.2f} calls/s at Twilio with a cap of {cps:g}/s; "
          f"residents called twice: {twice}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_noop-process":
        noop_process(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000, help="no-op jobs (0: skip)")
    parser.add_argument("--processes", "--workers", dest="processes", type=int, default=2,
                        help="job processes (--workers: the old name)")
    parser.add_argument("--batch", type=int, default=10, help="jobs a process claims at once (the runner's default)")
    parser.add_argument("--calls", type=int, default=600, help="due follow-up calls (0: skip)")
    parser.add_argument("--cps", type=float, default=5.0, help="the calls-per-second cap")
    args = parser.parse_args()

    with scratch_database("jobs") as url:
        engine = make_engine(url)
        upgrade(engine)
        with tempfile.TemporaryDirectory() as tmp:
            if args.jobs:
                noop_phase(engine, url, args.jobs, args.processes, args.batch, Path(tmp))
            if args.calls:
                calls_phase(engine, url, args.calls, args.processes, args.cps, Path(tmp))
        engine.dispose()


if __name__ == "__main__":
    main()
