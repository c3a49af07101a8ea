"""Intake over HTTP under load: the real server (``gridline serve`` in a subprocess) on a
district's year of data, driven by 1, 8 and 32 clients filing Open311 petitions.

    .venv/bin/python bench/load.py                        # PostgreSQL and SQLite, ~2-3 min
    .venv/bin/python bench/load.py --processes 2          # serve with two processes
    .venv/bin/python bench/load.py --size district-year   # 1,000,000 / 200,000 cases (slow to load)
    .venv/bin/python bench/load.py --backends postgresql --clients 8 --seconds 20
    .venv/bin/python bench/load.py --backends postgresql --baseline /work/main   # beside another checkout

Each client keeps one connection and files petitions one after another for ``--seconds``:
``POST /open311/v2/requests.json`` with its own client request id, routed by address. 60 %
come from registered residents' phones (household routing), the rest from unknown numbers
naming a place the way callers do (gazetteer routing, or triage). Printed per backend and
client count: petitions/s, p50 and p99 of the answers that filed a case, and how many were
refused (503, with whether each carried Retry-After) or failed. Beside them, from the same run:

- ``pgbench -N`` (the database's own write rate, 1 and 8 clients) on the same server;
- ``GET /healthz`` with 1 and 8 clients (the HTTP stack without the database).

Each line also gives the server's own CPU time per answer (user + system of ``gridline serve``
and its processes, from /proc): a figure that holds on a loaded machine, where rates do not.
Beside it, PostgreSQL's (the benchmark database's backends and the server's own processes)
and the clients' (this process), how busy the machine's cores were, and the rate those three
together allow on this machine's cores: where the clients, the server and the database share
two cores, that is the ceiling no tuning of one of them lifts alone.
With ``--baseline DIR`` a second server runs the code of the checkout DIR (main, say) on the
same database; each client count is driven against one server and then the other, so both
figures come from the same minutes of the same machine.

After each run it checks, in the database, that every petition answered 200 filed exactly one
case and that no case was filed twice. PostgreSQL comes from GRIDLINE_BENCH_PG (default: the
local test server); the benchmark makes a database of its own there and drops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp  # noqa: E402
import dataset  # noqa: E402  (bench/dataset.py)
from sqlalchemy import text  # noqa: E402
from sqlmodel import select  # noqa: E402

from core.platform.db import make_engine, session_scope  # noqa: E402
from core.platform.migrations import upgrade  # noqa: E402

SIZES = {"quick": (50_000, 20_000), "district-year": (1_000_000, 200_000)}


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)  # ms, answers that filed a case
    refused: int = 0  # 503
    refused_without_retry_after: int = 0
    refused_ms: list[float] = field(default_factory=list)
    failed: int = 0  # anything else
    failures: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    filed_ids: list[str] = field(default_factory=list)
    server_cpu_s: float | None = None  # the server's CPU time while driven
    database_cpu_s: float | None = None  # PostgreSQL's: the bench database's backends and the server's own
    clients_cpu_s: float | None = None  # this process's: the clients making the requests
    machine_busy: float | None = None  # share of all cores' time not idle
    connections_opened: int | None = None  # PostgreSQL sessions begun on the bench database

    def line(self, label: str) -> str:
        rate = len(self.latencies) / self.seconds if self.seconds else 0.0
        out = (f"  {label:<28} {rate:8.1f}/s  p50 {percentile(self.latencies, 50):7.1f} ms  "
               f"p99 {percentile(self.latencies, 99):7.1f} ms  ok {len(self.latencies):6d}")
        answered = len(self.latencies) + self.refused
        if self.server_cpu_s is not None and answered:
            out += f"  server CPU {self.server_cpu_s * 1000 / answered:6.2f} ms/answer"
        if self.database_cpu_s is not None and answered:
            out += f", database {self.database_cpu_s * 1000 / answered:.2f}"
        if self.clients_cpu_s is not None and answered:
            out += f", clients {self.clients_cpu_s * 1000 / answered:.2f}"
        if self.machine_busy is not None:
            out += f"; machine {self.machine_busy:.0%} busy"
        if self.connections_opened:
            out += f"; {self.connections_opened} database connections opened"
        spent = [x for x in (self.server_cpu_s, self.database_cpu_s, self.clients_cpu_s) if x is not None]
        if len(spent) == 3 and answered and sum(spent):
            # what the cores could answer if this were all they did: the rate's ceiling
            out += f", at most {os.cpu_count() * answered / sum(spent):.0f}/s on {os.cpu_count()} cores"
        if self.refused:
            out += (f"  503 {self.refused} (p99 {percentile(self.refused_ms, 99):.1f} ms, "
                    f"{self.refused_without_retry_after} without Retry-After)")
        if self.failed:
            out += f"  FAILED {self.failed} {self.failures}"
        return out


class Petitions:
    def __init__(self, data: dataset.Dataset, codes: list[str], seed: int = 5):
        self.data, self.codes = data, codes
        self.rng = random.Random(seed)

    def form(self, api_key: str) -> dict[str, str]:
        form = {"api_key": api_key, "service_code": self.rng.choice(self.codes), "description": "路灯不亮了，晚上很黑"}
        if self.rng.random() < 0.6:  # a registered resident: routed by the household
            form["phone"] = self.rng.choice(self.data.known_phones)
            form["address_string"] = "我家"
        else:  # an unknown caller naming a place
            form["phone"] = f"199{self.rng.randrange(10**8):08d}"
            form["address_string"] = self.rng.choice(self.data.spoken_addresses)
        return form


async def drive(url: str, clients: int, seconds: float, make_request, tally: Tally) -> None:
    """``clients`` loops, each on its own connection, sending for ``seconds``."""
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:
            while time.perf_counter() < deadline:
                method, path, form, headers, ident = make_request()
                t0 = time.perf_counter()
                try:
                    async with http.request(method, url + path, data=form, headers=headers) as resp:
                        await resp.read()
                        status, retry_after = resp.status, resp.headers.get("Retry-After")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    tally.failed += 1
                    tally.failures[type(exc).__name__] = tally.failures.get(type(exc).__name__, 0) + 1
                    continue
                ms = (time.perf_counter() - t0) * 1000
                if status == 200:
                    tally.latencies.append(ms)
                    if ident:
                        tally.filed_ids.append(ident)
                elif status == 503:
                    tally.refused += 1
                    tally.refused_ms.append(ms)
                    if not retry_after:
                        tally.refused_without_retry_after += 1
                    await asyncio.sleep(min(0.05, float(retry_after or 0)))  # a polite client backs off
                else:
                    tally.failed += 1
                    tally.failures[str(status)] = tally.failures.get(str(status), 0) + 1

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    tally.seconds = time.perf_counter() - t0


async def drive_health(port: int, clients: int, seconds: float, tally: Tally) -> None:
    """``GET /healthz`` over raw keep-alive connections: a client far lighter than aiohttp's,
    so that on a small machine the figure is the server's, not the client's."""
    request = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
                await reader.readexactly(length)
                if head.startswith(b"HTTP/1.1 200"):
                    tally.latencies.append((time.perf_counter() - t0) * 1000)
                else:
                    tally.failed += 1
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    tally.seconds = time.perf_counter() - t0


def processes_cpu() -> tuple[dict[int, int], dict[int, float]]:
    """Every live process's parent and its user + system CPU seconds, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    parent_of: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (name) ": state, ppid, ...
        parent_of[int(entry.name)] = int(fields[1])
        cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / ticks
    return parent_of, cpu


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its live descendants (``serve --processes N``)."""
    parent_of, cpu = processes_cpu()
    tree, grew = {pid}, True
    while grew:
        more = {child for child, parent in parent_of.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    return sum(cpu.get(p, 0.0) for p in tree)


def machine_times() -> tuple[int, int]:
    """(busy, all) clock ticks of every core since boot, from /proc/stat."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return sum(ticks) - idle, sum(ticks)


class DatabaseCpu:
    """PostgreSQL's CPU time on a tally: the backends of the benchmark's database and the
    server's own processes (WAL writer, checkpointer, ...), found in pg_stat_activity; not
    other databases' backends, which a busy machine may be running meanwhile."""

    def __init__(self, url: str):
        self.url = url if url.startswith("postgresql") else None

    def pids(self) -> set[int]:
        if self.url is None:
            return set()
        engine = make_engine(self.url)
        try:
            with engine.connect() as conn:
                return set(conn.execute(text(
                    "SELECT pid FROM pg_stat_activity WHERE (datname = current_database() "
                    "AND pid <> pg_backend_pid()) OR datname IS NULL")).scalars())
        finally:
            engine.dispose()

    def sessions(self) -> int:
        """Sessions begun on the benchmark's database so far (each a backend forked)."""
        if self.url is None:
            return 0
        engine = make_engine(self.url)
        try:
            with engine.connect() as conn:
                return int(conn.execute(text(
                    "SELECT sessions FROM pg_stat_database WHERE datname = current_database()")).scalar() or 0)
        finally:
            engine.dispose()


def measured(server: Server, run, database: DatabaseCpu) -> Tally:  # noqa: ANN001
    """Run ``run()`` (a drive) and put on its tally the CPU time meanwhile of the server, the
    database and the clients, and how busy the machine was: where the cores went."""
    sessions_before = database.sessions()
    _, cpu_before = processes_cpu()
    server_before = tree_cpu_seconds(server.proc.pid)
    clients_before = time.process_time()
    busy_before, all_before = machine_times()
    tally = run()
    busy, all_ticks = machine_times()
    tally.clients_cpu_s = time.process_time() - clients_before
    tally.server_cpu_s = tree_cpu_seconds(server.proc.pid) - server_before
    if database.url is not None:
        _, cpu_after = processes_cpu()
        # a backend started during the drive (the pool grew) counts from zero
        tally.database_cpu_s = sum(cpu_after.get(p, 0.0) - cpu_before.get(p, 0.0) for p in database.pids())
        tally.connections_opened = database.sessions() - sessions_before - 2  # less pids()' and sessions()' own
    tally.machine_busy = (busy - busy_before) / max(1, all_ticks - all_before)
    return tally


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, database_url: str, data_dir: Path, processes: int, env: dict[str, str], code: Path = ROOT):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log = open(data_dir / "serve.log", "wb")  # noqa: SIM115
        child_env = {**os.environ, "GRIDLINE_DATABASE_URL": database_url, "GRIDLINE_DATA_DIR": str(data_dir),
                     "GRIDLINE_PORT": str(self.port), "GRIDLINE_LOAD_DEMO_ON_EMPTY": "false", **env}
        for name in ("GRIDLINE_TELEGRAM_TOKEN", "GRIDLINE_SPEECH_MODEL", "GRIDLINE_RULES"):
            child_env.pop(name, None)
        self.proc = subprocess.Popen([sys.executable, "-m", "gridline.cli", "serve", "--processes", str(processes)],
                                     cwd=code, env=child_env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"gridline serve exited with {self.proc.returncode}; see {data_dir / 'serve.log'}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise SystemExit("gridline serve did not become ready in 120 s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def pgbench(server_url: str, clients: int, seconds: int) -> str:
    """``pgbench -N`` on a scratch database of the same server: transactions/s."""
    exe = shutil.which("pgbench")
    if exe is None:
        return "pgbench not installed (apt: postgresql-client)"
    from sqlalchemy.engine import make_url

    with dataset.scratch_database("pgbench", server_url) as url:
        u = make_url(url)
        env = {**os.environ, "PGPASSWORD": u.password or ""}
        args = ["-h", u.host or "127.0.0.1", "-p", str(u.port or 5432), "-U", u.username or "postgres"]
        subprocess.run([exe, "-i", "-q", "-s", "1", *args, u.database], env=env, check=True,
                       capture_output=True)
        out = subprocess.run([exe, "-N", "-c", str(clients), "-j", str(min(clients, 2)), "-T", str(seconds),
                              *args, u.database], env=env, check=True, capture_output=True, text=True).stdout
    found = re.search(r"tps = ([0-9.]+)", out)
    lat = re.search(r"latency average = ([0-9.]+) ms", out)
    return f"{float(found.group(1)):8.1f} tx/s  (latency average {lat.group(1) if lat else '?'} ms)" if found else out


def check_no_duplicates(engine, filed_ids: list[str]) -> str:
    """Each petition answered 200 filed one case; no client request id filed two."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT idempotency_key, count(*) FROM \"case\" WHERE idempotency_key LIKE "
                                 "'open311|load-%' GROUP BY idempotency_key")).all()
    doubled = [k for k, n in rows if n > 1]
    keys = {k.split("|")[1] for k, _ in rows}
    missing = [i for i in filed_ids if i not in keys]
    if doubled or missing:
        return f"WRONG: {len(doubled)} client ids filed twice, {len(missing)} answered 200 without a case"
    return f"ok: {len(rows):,} cases for {len(filed_ids):,} answers, none twice"


def run_backend(name: str, url: str, cases: int, args: argparse.Namespace, data_dir: Path) -> None:
    engine = make_engine(url)
    upgrade(engine)
    print(f"\n== {name}: loading a district's year ({cases:,} cases) ...", flush=True)
    data = dataset.load(engine, cases)
    print(f"   {data}", flush=True)
    from core.cases.models import Category
    from core.people import apikeys

    with session_scope(engine) as session:
        _, api_key = apikeys.add_key(session, "load-bench", actor="bench")
        codes = list(session.exec(select(Category.code).where(Category.active == True)).all())  # noqa: E712
    engine.dispose()
    env = {"GRIDLINE_DB_THREADS": str(args.db_threads)} if args.db_threads else {}
    # (label, server): this checkout's, and the baseline's on the same database if asked for
    servers = [("", Server(url, data_dir, args.processes, env))]
    try:
        if args.baseline:
            servers.append((" [baseline]", Server(url, data_dir / "baseline", args.processes, env,
                                                  code=Path(args.baseline).resolve())))
        petitions = Petitions(data, codes)
        database = DatabaseCpu(url)
        counter = 0

        def petition():
            nonlocal counter
            counter += 1
            ident = f"load-{uuid.uuid4().hex[:12]}"
            return "POST", "/open311/v2/requests.json", petitions.form(api_key), {"Idempotency-Key": ident}, ident

        filed: list[str] = []
        for _, server in servers:  # warm-up: routing indexes, connections, the first of each code path
            warm = Tally()
            asyncio.run(drive(server.url, 2, 2.0, petition, warm))
            filed += warm.filed_ids
        print(f"   gridline serve --processes {args.processes}; load average {os.getloadavg()[0]:.2f}", flush=True)

        def intake(server: Server, clients: int) -> Tally:
            tally = Tally()
            asyncio.run(drive(server.url, clients, args.seconds, petition, tally))
            return tally

        def health(server: Server, clients: int) -> Tally:
            tally = Tally()
            asyncio.run(drive_health(server.port, clients, min(args.seconds, 5), tally))
            return tally

        for clients in args.clients:
            for label, server in servers:  # one after the other, for each client count
                tally = measured(server, lambda server=server, clients=clients: intake(server, clients), database)
                filed += tally.filed_ids
                print(tally.line(f"intake, {clients:2d} client(s){label}"), flush=True)
            print(f"     load average {os.getloadavg()[0]:.2f}", flush=True)
        for clients in (1, 8):
            for label, server in servers:
                print(measured(server, lambda server=server, clients=clients: health(server, clients), database)
                      .line(f"/healthz, {clients:2d} client(s){label}"), flush=True)
    finally:
        for _, server in servers:
            server.stop()
    engine = make_engine(url)
    print(f"   {check_no_duplicates(engine, filed)}", flush=True)
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", default=["postgresql", "sqlite"], choices=["postgresql", "sqlite"])
    parser.add_argument("--size", choices=sorted(SIZES), default="quick",
                        help="quick: 50,000 cases on PostgreSQL, 20,000 on SQLite; district-year: 1,000,000 / 200,000")
    parser.add_argument("--clients", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=8.0, help="per client count")
    parser.add_argument("--processes", type=int, default=1, help="gridline serve --processes")
    parser.add_argument("--db-threads", type=int, default=0, help="GRIDLINE_DB_THREADS of the server (0: its default)")
    parser.add_argument("--baseline", metavar="DIR", help="also serve the code of this checkout (e.g. a worktree of "
                        "main) on the same database, driven in turn with this one")
    args = parser.parse_args()
    pg_cases, sqlite_cases = SIZES[args.size]
    print(f"bench/load.py: {os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    server = os.environ.get("GRIDLINE_BENCH_PG", dataset.DEFAULT_BENCH_PG)
    with tempfile.TemporaryDirectory(prefix="gridline-load-") as tmp:
        for backend in args.backends:
            data_dir = Path(tmp) / backend
            data_dir.mkdir()
            if backend == "postgresql":
                print("\n== pgbench -N (baseline: the database alone)")
                for clients in (1, 8):
                    print(f"  pgbench -N, {clients} client(s)      {pgbench(server, clients, 5)}", flush=True)
                with dataset.scratch_database("load", server) as url:
                    run_backend("PostgreSQL", url, pg_cases, args, data_dir)
            else:
                run_backend("SQLite", f"sqlite:///{data_dir}/gridline.sqlite3", sqlite_cases, args, data_dir)
    print(f"\nload average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
