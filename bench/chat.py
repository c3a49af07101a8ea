"""Burst of residents filing real cases through the real bot, and the grid workers'
dispatch messages that follow.

The real Gridline aiohttp app with the real python-telegram-bot application (webhook
mode, our persistence, dedupe, per-chat ordering) and the real job runner, on a fresh
database with the demo district, talking HTTP to the fake Bot API server from the tests.
Every worker of the district has a linked chat. Each resident goes through the whole
intake dialog, one step after the bot's answer to the previous one:

    /start → the problem in words → a shared location (a micro grid of the district)
    → [路灯故障] → [✅ 确认提交] → case number; the case is routed and dispatched

and the job runner sends the dispatch message (新派单) to the worker who owns the grid.

Figures: updates/s; webhook → the bot's answer, p50/p99 (every step); from the
resident's 确认提交 (the webhook POST) to the worker's dispatch message (the fake server
receiving its ``sendMessage``), p50/p99; database transactions and statements per update.

    .venv/bin/python bench/chat.py --users 200
    .venv/bin/python bench/chat.py --users 200 --no-rate-limit   # without Telegram's 30/s cap
    .venv/bin/python bench/chat.py --no-rate-limit --rate 100 --seconds 15   # + 100 updates/s offered

``--rate N``: after the closed burst (its baseline in the same run), an open loop: N updates a
second arrive on a fixed schedule for ``--seconds``, whether or not the bot has answered. An
arrival is the next step of a resident whose last answer came, or a new resident's /start when
none is waiting (so an overloaded bot sees mostly /start). Printed: updates/s sent, answered
within the window, webhook → answer p50/p99 of every update sent (all are waited for), and how
far the sender itself fell behind its schedule (it shares the event loop: a floor).
    .venv/bin/python bench/chat.py --pg postgresql://postgres@127.0.0.1:5432/test
    GRIDLINE_DATABASE_URL=postgresql://... .venv/bin/python bench/chat.py
    .venv/bin/python bench/chat.py --no-rate-limit --pg ... --processes 2   # serve --processes 2

``--pg <server url>`` makes a database of its own on that server and drops it at the end
(so runs never see each other's update ids); ``--database-url`` uses the database as is.

``--server process`` (the default): the server is a real `gridline serve` subprocess
(bench/chat_serve.py: the bot's rate limiter and concurrency as given here) on the database
prepared here, as in production where Telegram is remote; the fake Bot API and the residents
stay in this process. ``--server inprocess``: the old way, everything in one process on one
event loop (the fake and the webhook client included), a floor, not a ceiling; only it counts
the database's transactions and statements and the job handler's time. ``--compare`` runs
both on identical scenarios, each on a fresh database, and prints them side by side.

    .venv/bin/python bench/chat.py --users 200 --no-rate-limit --compare

CPU ms per update, by whom (the serve process and its children, this process, PostgreSQL's
backends of the bench database), how busy the cores were, and the ceiling they set: the
updates/s the cores allow if that were all they did (cores x 1000 / the ms per update
together), as bench/load.py prints its own. On a shared machine these hold; rates do not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import random
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402
from load import DatabaseCpu, machine_times, processes_cpu, tree_cpu_seconds  # noqa: E402  (bench/load.py)
from sqlalchemy import event, func  # noqa: E402
from sqlmodel import select  # noqa: E402

from chat.texts import BOT, t  # noqa: E402
from chat.web import CHATBOT  # noqa: E402
from chat.web import setup as setup_chat  # noqa: E402
from core.cases.models import Case  # noqa: E402
from core.people import staff  # noqa: E402
from core.people.models import Worker  # noqa: E402
from core.places.models import Grid, GridLevel  # noqa: E402
from core.platform.db import make_engine, session_scope  # noqa: E402
from core.platform.migrations import upgrade  # noqa: E402
from core.platform.models import Job  # noqa: E402
from core.platform.runner import observers as runner_observers  # noqa: E402
from core.platform.settings import Settings, normalise_database_url  # noqa: E402
from core.reference.demo import grid_centre, load_demo  # noqa: E402
from gridline.app import SERVICES, build_app  # noqa: E402
from tests.support.fake_bot_api import FakeBotApi, TelegramLimits, counted_message  # noqa: E402

SECRET = "bench-secret"
SERVERS = {"process": "a gridline serve process", "inprocess": "in the bench process"}
RESIDENT_BASE = 6_000_000_000
WORKER_BASE = 7_000_000_000
DISPATCHED = re.compile(r"新派单 (\d+)")
FILED = re.compile(r"诉求已受理，编号 (\d+)")


def _process_cpu() -> float:
    """CPU seconds of this whole process so far (user + system, every thread, not its
    children): the fake Bot API and the webhook client, and with the server in this process
    the bot and the job runner too. A figure that holds under load, unlike updates/s on a
    shared machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def _prepare(engine) -> list[tuple[float, float]]:  # noqa: ANN001
    """Demo district, every worker's chat linked; the centres of the micro grids."""
    with session_scope(engine) as session:
        if session.exec(select(Grid.id).limit(1)).first() is None:
            load_demo(session)
    with session_scope(engine) as session:
        for worker in session.exec(select(Worker).where(Worker.active == True)).all():  # noqa: E712
            if staff.chat_of(session, staff.of_worker(worker)) is None:
                staff.link_chat(session, WORKER_BASE + worker.id, staff.of_worker(worker), via="bench",
                                actor="bench")
        codes = session.exec(select(Grid.code).where(Grid.level == GridLevel.micro).order_by(Grid.code)).all()
        return [grid_centre(session, code) for code in codes]


class Replies:
    """Follows what the bot sends (the fake's request log) and hands each chat its
    messages in order; notes when each case's dispatch message reached a worker."""

    def __init__(self, fake: FakeBotApi):
        self.fake = fake
        self.seen = 0
        self.queues: dict[int, asyncio.Queue] = {}
        self.dispatched: dict[str, float] = {}
        self._task: asyncio.Task | None = None

    def queue(self, chat_id: int) -> asyncio.Queue:
        return self.queues.setdefault(chat_id, asyncio.Queue())

    async def _follow(self) -> None:
        while True:
            requests = self.fake.requests
            while self.seen < len(requests) and requests[self.seen].status is not None:
                req = requests[self.seen]
                self.seen += 1
                if req.method != "sendMessage" or req.status != 200:
                    continue
                chat_id = int(req.params["chat_id"])
                if chat_id >= WORKER_BASE:
                    found = DISPATCHED.search(req.params.get("text", ""))
                    if found:
                        self.dispatched.setdefault(found.group(1), req.at)
                else:
                    self.queue(chat_id).put_nowait(req)
            await asyncio.sleep(0.002)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _button(req, label: str) -> str:  # noqa: ANN001
    for row in (req.params.get("reply_markup") or {}).get("inline_keyboard", []):
        for button in row:
            if button["text"] == label:
                return button["callback_data"]
    raise RuntimeError(f"no button {label!r} in {req.params.get('text')!r}")


@dataclasses.dataclass
class Served:
    """The server under test: where its webhook is, and what the bench can read of it."""

    url: str
    pid: int | None = None  # the `gridline serve` process; None: the server runs in this one
    app: web.Application | None = None  # the in-process app (its bot's chat gate)


@contextlib.asynccontextmanager
async def _serve_inprocess(fake: FakeBotApi, engine, tmp: Path, rate_limit: bool, concurrency: int):  # noqa: ANN001
    """The Gridline app with only the bot mounted, on this process's event loop: the baseline
    (the fake Bot API and the residents take their CPU from the same process)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings = Settings(data_dir=tmp, public_url=f"http://127.0.0.1:{port}", telegram_token=fake.token,
                        telegram_secret=SECRET, telegram_api_url=fake.root_url, telegram_mode="webhook")
    app = build_app(settings, engine=engine, channels=(), run_jobs=True)
    setup_chat(app, app[SERVICES], rate_limit=rate_limit, concurrency=concurrency)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    await app[CHATBOT].ready.wait()
    try:
        yield Served(f"http://127.0.0.1:{port}", app=app)
    finally:
        await runner.cleanup()
        sock.close()


@contextlib.asynccontextmanager
async def _serve_process(fake: FakeBotApi, database_url: str, tmp: Path, rate_limit: bool, concurrency: int,
                         processes: int = 1):
    """A real `gridline serve` subprocess (bench/chat_serve.py sets the bot's options) on the
    prepared database, as in production where Telegram is remote: the fake Bot API and the
    residents stay here. It listens on a socket this process opened (``--listen-fd``), as
    tests/support/serve.py does, so no port is guessed. ``processes``: serve's --processes
    (several processes on the one port; PostgreSQL only)."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDLINE_")}  # no speech model, no stray settings
    env.update({"GRIDLINE_DATA_DIR": str(tmp), "GRIDLINE_DATABASE_URL": database_url, "GRIDLINE_PUBLIC_URL": url,
                "GRIDLINE_TELEGRAM_TOKEN": fake.token, "GRIDLINE_TELEGRAM_API_URL": fake.root_url,
                "GRIDLINE_TELEGRAM_SECRET": SECRET, "GRIDLINE_TELEGRAM_MODE": "webhook"})
    options = json.dumps({"rate_limit": rate_limit, "concurrency": concurrency})
    fd = listener.fileno()
    with open(tmp / "serve.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("chat_serve.py")), options, "serve", "--no-demo",
             "--listen-fd", str(fd), "--processes", str(processes)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, pass_fds=(fd,))
        try:
            await _bot_started(fake, proc, tmp / "serve.log")
            yield Served(url, pid=proc.pid)
        finally:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
            listener.close()


async def _bot_started(fake: FakeBotApi, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    """Wait (answering the child's Bot API calls meanwhile) until its bot has set the webhook
    and its commands: the last thing it does before it takes updates (a 503 until then)."""
    deadline = time.monotonic() + timeout
    while not (any(r.ok for r in fake.calls("setWebhook"))
               and sum(r.status is not None for r in fake.calls("setMyCommands")) >= len(BOT.languages)):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"gridline serve's bot never started (exit {proc.poll()}):\n"
                             f"{log.read_text(errors='replace')[-3000:]}")
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # the answer to its last setMyCommands on its way back


class _Cpu:
    """CPU time while driven, from /proc and os.times (see bench/load.py): the serve process
    and its children, this process (the fake Bot API and the residents; with the server in
    this process, everything), PostgreSQL's backends of the bench database and its own
    processes; and how busy all the cores were."""

    def __init__(self, served: Served, database_url: str):
        self.served = served
        self.database = DatabaseCpu(database_url)
        _, self.all_before = processes_cpu()
        self.server_before = tree_cpu_seconds(served.pid) if served.pid else 0.0
        self.bench_before = _process_cpu()
        self.busy_before, self.ticks_before = machine_times()

    def spent(self) -> dict[str, float | None]:
        """CPU seconds since made, by whom; ``machine_busy`` a share of all cores' time."""
        busy, ticks = machine_times()
        out: dict[str, float | None] = {
            "bench": _process_cpu() - self.bench_before,
            "server": tree_cpu_seconds(self.served.pid) - self.server_before if self.served.pid else None,
            "database": None,
            "machine_busy": (busy - self.busy_before) / max(1, ticks - self.ticks_before),
        }
        if self.database.url is not None:
            _, all_after = processes_cpu()
            # a backend started meanwhile (the pool grew) counts from zero
            out["database"] = sum(all_after.get(p, 0.0) - self.all_before.get(p, 0.0) for p in self.database.pids())
        return out


async def run(users: int, rate_limit: bool, database_url: str, concurrency: int, timeout: float,
              offered: tuple[float, float] | None = None, server: str = "process", processes: int = 1) -> dict:
    """The closed burst (``users`` residents, each step after the bot's answer), or with
    ``offered=(rate, seconds)`` an open-loop arrival of ``rate`` updates a second for
    ``seconds`` (``_offer``); the server a `gridline serve` subprocess (``server="process"``)
    or in this process (``"inprocess"``)."""
    tmp = Path(tempfile.mkdtemp(prefix="gridline-bench-chat-"))
    url = normalise_database_url(database_url) if database_url else f"sqlite:///{tmp / 'bench.sqlite3'}"
    engine = make_engine(url)
    upgrade(engine)
    places = _prepare(engine)  # before the serve process starts: it finds the district there
    with session_scope(engine) as session:
        cases_before = session.exec(select(func.count()).select_from(Case)).one()
    commits = [0]
    statements = [0]
    job_seconds: dict[str, list[float]] = {}  # handler time of each job, by kind
    rng = random.Random(7)

    # With the limits on, the fake answers 429 past Telegram's (30 messages/s per bot, about
    # 1/s per chat), as Telegram would.
    async with FakeBotApi(limits=TelegramLimits() if rate_limit else None) as fake:
        serving = (_serve_process(fake, engine.url.render_as_string(hide_password=False), tmp, rate_limit, concurrency,
                                  processes)
                   if server == "process" else _serve_inprocess(fake, engine, tmp, rate_limit, concurrency))
        async with serving as served:
            replies = Replies(fake)
            replies.start()

            step_latencies: list[float] = []
            submitted: dict[str, float] = {}
            failures: list[str] = []
            updates_sent = [0]
            answered = [0]  # updates whose answer came
            headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
            target = f"{served.url}/telegram/webhook"
            submit_label, category_label = t("zh", "dialog.submit"), "路灯故障"

            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as client:
                async def post(update: dict) -> float:
                    sent = time.time()
                    updates_sent[0] += 1
                    async with client.post(target, json=update, headers=headers) as resp:
                        if resp.status != 200:
                            raise RuntimeError(f"webhook answered {resp.status}")
                    return sent

                async def answer(uid: int, sent: float, contains: str):  # noqa: ANN202
                    """The bot's message to ``uid`` containing ``contains`` (earlier ones skipped)."""
                    queue = replies.queue(uid)
                    while True:
                        req = await asyncio.wait_for(queue.get(), timeout)
                        step_latencies.append(req.at - sent)
                        if contains in req.params.get("text", ""):
                            return req

                async def resident(i: int, turn=None) -> None:  # noqa: ANN001
                    """One resident's whole dialog; each step waits for ``turn()`` (open loop: the
                    schedule's next arrival) or, closed, goes as soon as the answer is there."""
                    uid = RESIDENT_BASE + i
                    fake.add_user(uid, f"R{i}", language_code="zh-hans")
                    lat, lon = rng.choice(places)

                    async def step(update_of, contains: str):  # noqa: ANN001, ANN202
                        if turn is not None:
                            await turn()
                        sent = await post(update_of())
                        got = await answer(uid, sent, contains)
                        answered[0] += 1
                        return sent, got

                    try:
                        await step(lambda: fake.make_command(uid, "start"), "您好")
                        await step(lambda: fake.make_text_update(uid, f"{i}号楼下的路灯坏了，晚上很黑"), "问题发生在哪里")
                        _, ask = await step(lambda: fake.make_location_update(lat, lon, user_id=uid), "哪一类问题")
                        _, confirm = await step(
                            lambda: fake.make_callback_query(uid, _button(ask, category_label), ask.result), "请确认您的诉求")
                        sent, filed = await step(
                            lambda: fake.make_callback_query(uid, _button(confirm, submit_label), confirm.result), "诉求已受理")
                        submitted[FILED.search(filed.params["text"]).group(1)] = sent
                    except _WindowClosed:
                        return
                    except Exception as exc:  # counted and reported, the others go on
                        failures.append(f"resident {i}: {type(exc).__name__}: {exc}")

                observer = None
                if served.app is not None:  # the server's own engine and job runner are only reachable here
                    event.listen(engine, "commit", lambda conn: commits.__setitem__(0, commits[0] + 1))
                    event.listen(engine, "before_cursor_execute",
                                 lambda *args: statements.__setitem__(0, statements[0] + 1))
                    observer = lambda kind, outcome, seconds: job_seconds.setdefault(kind, []).append(seconds)  # noqa: E731
                    runner_observers.append(observer)
                t0, cpu = time.time(), _Cpu(served, url)
                if offered is None:
                    await asyncio.gather(*(resident(i) for i in range(users)))
                    in_window, window = answered[0], time.time() - t0
                else:
                    users, in_window, window = await _offer(*offered, timeout, resident, answered)
                t_filed = time.time()
                deadline = time.time() + timeout
                while time.time() < deadline and not set(submitted) <= set(replies.dispatched):
                    await asyncio.sleep(0.05)
                spent = cpu.spent()  # the dispatch messages' jobs included
                if observer is not None:
                    runner_observers.remove(observer)

            gate = served.app[CHATBOT].gate if served.app is not None else None
            gate_figures = (gate.round_trips, gate.waits, gate.loads) if gate is not None else None
            await replies.stop()
            checks = _delivery_checks(fake, submitted, complete=offered is None)
            checks["dispatch_parts"] = _dispatch_parts(engine, submitted, replies.dispatched, job_seconds)
            with session_scope(engine) as session:
                cases = session.exec(select(func.count()).select_from(Case)).one() - cases_before
    engine.dispose()
    to_worker = [replies.dispatched[n] - at for n, at in submitted.items() if n in replies.dispatched]
    per_update = 1000 / max(updates_sent[0], 1)
    inprocess = served.app is not None  # no count of the statements of a server in another process
    return {
        "server": server,
        "users": users,
        "updates": updates_sent[0],
        "cases": cases,
        "filed": len(submitted),
        "dispatch_messages": len(to_worker),
        "failures": failures,
        "seconds": t_filed - t0,
        "per_second": updates_sent[0] / window if window > 0 else 0.0,
        "offered": offered[0] if offered else None,
        "answered_per_second": in_window / window if window > 0 else 0.0,
        "statements": statements[0] if inprocess else None,
        "statements_per_update": statements[0] / max(updates_sent[0], 1) if inprocess else None,
        "cpu_ms_per_update": spent["bench"] * per_update,  # this process (with the server in it: everything)
        "server_cpu_ms_per_update": spent["server"] * per_update if spent["server"] is not None else None,
        "database_cpu_ms_per_update": spent["database"] * per_update if spent["database"] is not None else None,
        "machine_busy": spent["machine_busy"],
        "p50_ms": statistics.median(step_latencies) * 1000 if step_latencies else float("nan"),
        "p99_ms": _percentile(step_latencies, 99) * 1000 if step_latencies else float("nan"),
        "dispatch_p50_ms": statistics.median(to_worker) * 1000 if to_worker else float("nan"),
        "dispatch_p99_ms": _percentile(to_worker, 99) * 1000 if to_worker else float("nan"),
        "backend": engine.dialect.name,
        "transactions": commits[0] if inprocess else None,
        "gate": gate_figures,
        **checks,
    }


def _ceiling(result: dict) -> float | None:
    """The updates/s the machine's cores allow if the server, the bench and PostgreSQL were all
    they did (as bench/load.py's ceiling): cores x 1000 / their CPU ms per update together."""
    spent = sum(result.get(key) or 0.0 for key in
                ("server_cpu_ms_per_update", "cpu_ms_per_update", "database_cpu_ms_per_update"))
    return (os.cpu_count() or 1) * 1000 / spent if spent > 0 else None


class _WindowClosed(Exception):
    """The offered-rate window is over: a resident waiting for its next turn stops there."""


class _Turns:
    """A resident's turns in the open loop: the arrival that started it is its first; each
    later one waits until the schedule hands it an arrival."""

    def __init__(self, ready: list, closed: list):
        self.first, self.ready, self.closed = True, ready, closed

    async def __call__(self) -> None:
        if self.first:
            self.first = False
            return
        if self.closed[0]:
            raise _WindowClosed
        go = asyncio.get_running_loop().create_future()
        self.ready.append(go)
        await go


async def _offer(rate: float, seconds: float, timeout: float, resident, answered: list) -> tuple[int, int, float]:  # noqa: ANN001
    """Open loop: ``rate`` updates a second for ``seconds``, sent on a fixed schedule whether
    or not the bot has answered the earlier ones. Each arrival goes to the resident whose last
    update was answered first (the next step of their dialog) or, when none is waiting, to a
    new resident's /start, so an arrival never waits for an answer. Every update sent is
    answered before this returns (its latency counts); residents then waiting for a turn stop.
    Returns the residents started, the updates answered within the window, its seconds."""
    loop = asyncio.get_running_loop()
    start, total = loop.time(), round(rate * seconds)
    ready: list[asyncio.Future] = []  # residents whose answer came, first come first
    closed = [False]
    residents: list[asyncio.Task] = []
    late: list[float] = []  # how late each arrival left (the driver itself falling behind)
    for k in range(total):
        due = start + k / rate
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        late.append(loop.time() - due)
        if ready:
            ready.pop(0).set_result(None)
        else:
            residents.append(loop.create_task(resident(len(residents), _Turns(ready, closed))))
    in_window = answered[0]
    window = loop.time() - start
    closed[0] = True
    for go in ready:
        go.set_exception(_WindowClosed())
    ready.clear()
    await asyncio.wait(residents, timeout=timeout)
    print(f"  offered {rate:g} updates/s for {seconds:g}s: {total} sent in {window:.1f}s by {len(residents)} residents; "
          f"the sender behind its schedule p99 {_percentile(late, 99) * 1000:.0f} ms")
    return len(residents), in_window, window


def _dispatch_parts(engine, submitted: dict[str, float], dispatched: dict[str, float],  # noqa: ANN001
                    job_seconds: dict[str, list[float]]) -> dict:
    """Where the time from 确认提交 to the dispatch message goes (p50, p99 in ms): until the
    job is queued (the case filed and dispatched), queued until a runner starts it, and the
    handler itself (its database look-ups, the wait for a token, the Bot API call)."""
    with session_scope(engine) as session:
        rows = session.exec(select(Job.payload, Job.created_at).where(Job.kind == staff.MESSAGE_JOB)).all()
    queued = {p["case"]: created.replace(tzinfo=UTC).timestamp() for p, created in rows
              if p.get("send") == "dispatch"}
    handler = job_seconds.get(staff.MESSAGE_JOB, [])
    filed, waiting = [], []
    for number, at in submitted.items():
        if number in queued and number in dispatched:
            filed.append(queued[number] - at)
            waiting.append(dispatched[number] - queued[number])
    def both(values: list[float]) -> tuple[float, float]:
        return ((statistics.median(values) * 1000, _percentile(values, 99) * 1000) if values
                else (float("nan"), float("nan")))
    return {"to_queued": both(filed), "queued_to_sent": both(waiting), "handler": both(handler)}


def _delivery_checks(fake: FakeBotApi, submitted: dict[str, float], complete: bool = True) -> dict:
    """What the fake received: each resident's answers in the order of the dialog, no
    message twice, each dispatch message once; 429s; the most messages in any second."""
    steps = ("您好", "问题发生在哪里", "哪一类问题", "请确认您的诉求", "诉求已受理")
    texts: dict[int, list[str]] = {}
    dispatches: dict[str, int] = {}
    sent_at: list[float] = []
    refused = 0
    for req in fake.requests:
        if not counted_message(req.method):
            continue
        if req.status == 429:
            refused += 1
        if req.status != 200:
            continue
        sent_at.append(req.at)
        if req.method != "sendMessage":
            continue
        chat_id, text = int(req.params["chat_id"]), req.params.get("text", "")
        if chat_id >= WORKER_BASE:
            found = DISPATCHED.search(text)
            if found:
                dispatches[found.group(1)] = dispatches.get(found.group(1), 0) + 1
        else:
            texts.setdefault(chat_id, []).append(text)
    out_of_order = doubled = 0
    twice: list[str] = []  # which texts a chat got twice (a reply sent again, or a notice said for two updates)
    for received in texts.values():
        if len(set(received)) != len(received):
            doubled += 1
            twice.extend(sorted({text[:40] for text in received if received.count(text) > 1}))
        firsts = [next((i for i, text in enumerate(received) if step in text), -1) for step in steps]
        if not complete and -1 in firsts:  # the open loop's window closed half-way through the dialog:
            gone = firsts.index(-1)  # the answers it got are the dialog's first ones
            firsts = firsts[:gone] if set(firsts[gone:]) == {-1} else firsts
        if -1 in firsts or firsts != sorted(firsts) or len(set(firsts)) < len(firsts):
            out_of_order += 1
    sent_at.sort()
    busiest, start = 0, 0
    for end, at in enumerate(sent_at):
        while sent_at[start] <= at - 1.0:
            start += 1
        busiest = max(busiest, end - start + 1)
    return {
        "out_of_order": out_of_order,
        "doubled_chats": doubled,
        "twice": twice[:5],
        "dispatch_doubled": sum(1 for n in dispatches.values() if n > 1),
        "dispatch_missing": sum(1 for number in submitted if number not in dispatches),
        "refused_429": refused,
        "busiest_second": busiest,
    }


def _beside(before: dict, after: dict, headings: tuple[str, str] = ("baseline", "this run")) -> None:
    """The figures of the issue's table, the baseline's beside this run's."""
    rows = [("updates/s", "per_second", "{:.1f}"), ("answered/s", "answered_per_second", "{:.1f}"),
            ("statements per update", "statements_per_update", "{:.1f}"),
            ("CPU ms per update: server process", "server_cpu_ms_per_update", "{:.2f}"),
            ("CPU ms per update: bench process", "cpu_ms_per_update", "{:.2f}"),
            ("CPU ms per update: PostgreSQL", "database_cpu_ms_per_update", "{:.2f}"),
            ("machine busy %", "machine_busy", "{:.0%}"), ("ceiling updates/s", "ceiling", "{:.0f}"),
            ("webhook -> answer p50 ms", "p50_ms", "{:.0f}"),
            ("webhook -> answer p99 ms", "p99_ms", "{:.0f}"),
            ("确认提交 -> dispatch message p50 ms", "dispatch_p50_ms", "{:.0f}"),
            ("确认提交 -> dispatch message p99 ms", "dispatch_p99_ms", "{:.0f}"),
            ("answers out of order", "out_of_order", "{}"), ("dispatch messages doubled", "dispatch_doubled", "{}"),
            ("429 answers", "refused_429", "{}"), ("most messages in one second", "busiest_second", "{}")]
    print(f"  {'figure':<36} {headings[0]:>13} {headings[1]:>13}")
    for label, key, fmt in rows:
        cells = [fmt.format(value) if (value := _figure(side, key)) is not None else "—" for side in (before, after)]
        print(f"  {label:<36} {cells[0]:>13} {cells[1]:>13}")
    if "inprocess" in (before.get("server"), after.get("server")):
        print("  (in-process: the server's CPU is in the bench process's figure, the two cannot be told apart)")


def _figure(result: dict, key: str):  # noqa: ANN202
    """One figure of a run; the ceiling worked out (runs saved before it was printed have none)."""
    return _ceiling(result) if key == "ceiling" else result.get(key)


@contextlib.contextmanager
def _scratch_pg(server: str):
    if not server:
        yield ""
        return
    from dataset import scratch_database  # bench/dataset.py

    with scratch_database("chat", server) as url:
        yield url


def _cpu_line(result: dict) -> str:
    """CPU ms per update by whom, from the first update to the last dispatch message; how busy
    the cores were; the ceiling they set (bench/load.py prints its own the same way)."""
    if result["server_cpu_ms_per_update"] is None:
        out = (f"  CPU ms per update: {result['cpu_ms_per_update']:.2f} this process (the server in it: the bot, its "
               f"jobs, and the fake Bot API and the webhook client too)")
    else:
        out = (f"  CPU ms per update: server {result['server_cpu_ms_per_update']:.2f} (gridline serve and its "
               f"children), bench {result['cpu_ms_per_update']:.2f} (the fake Bot API and the residents)")
    if result["database_cpu_ms_per_update"] is not None:
        out += f", PostgreSQL {result['database_cpu_ms_per_update']:.2f}"
    out += f"; machine {result['machine_busy']:.0%} busy"
    ceiling = _ceiling(result)
    if ceiling is not None:
        out += f"; at most {ceiling:.0f} updates/s on {os.cpu_count()} cores"
    return out


def _report(result: dict, limiter: str) -> None:
    if result["offered"] is None:
        print(f"chat burst (closed: each step after the bot's answer): {result['users']} residents filing a case "
              f"each, {result['updates']} updates, {result['backend']}, rate limiter {limiter}, "
              f"server {SERVERS[result['server']]}")
        print(f"  dialogs done in {result['seconds']:.2f}s -> {result['per_second']:.1f} updates/s; "
              f"cases filed {result['filed']}/{result['users']} (database: {result['cases']} new)")
    else:
        print(f"chat offered (open loop): {result['offered']:g} updates/s arriving on a schedule, "
              f"{result['updates']} updates from {result['users']} residents, {result['backend']}, rate limiter {limiter}, "
              f"server {SERVERS[result['server']]}")
        print(f"  achieved: {result['per_second']:.1f} updates/s sent, {result['answered_per_second']:.1f}/s answered "
              f"within the window; cases filed {result['filed']} (database: {result['cases']} new)")
    print(_cpu_line(result))
    print(f"  webhook -> the bot's answer: p50 {result['p50_ms']:.0f} ms, p99 {result['p99_ms']:.0f} ms")
    print(f"  确认提交 -> the worker's dispatch message: p50 {result['dispatch_p50_ms']:.0f} ms, "
          f"p99 {result['dispatch_p99_ms']:.0f} ms ({result['dispatch_messages']}/{result['filed']} delivered)")
    parts = result["dispatch_parts"]
    # the handler's own time is seen only through the job runner of this process
    handler = (f", of which the handler {parts['handler'][0]:.0f}/{parts['handler'][1]:.0f}"
               if result["server"] == "inprocess" else "")
    print("  where the dispatch message's time goes (p50/p99 ms): 确认提交 -> job queued "
          f"{parts['to_queued'][0]:.0f}/{parts['to_queued'][1]:.0f}; queued -> sent {parts['queued_to_sent'][0]:.0f}/"
          f"{parts['queued_to_sent'][1]:.0f}{handler}")
    updates = max(result["updates"], 1)
    if result["transactions"] is None:
        print("  database: transactions and statements are counted only with --server inprocess")
    else:
        print(f"  database: {result['transactions']} transactions ({result['transactions'] / updates:.2f} per update), "
              f"{result['statements']} statements ({result['statements'] / updates:.1f} per update, the job runner's "
              f"included)")
    if result["gate"] is not None:
        trips, waits, loads = result["gate"]
        print(f"  chat gate (PostgreSQL, one chat at a time across instances): {trips} round trips on the lock "
              f"connection ({trips / updates:.2f} per update), {waits} waits, {loads} chats loaded from the database")
    print(f"  delivery: {result['out_of_order']} residents' answers out of order, {result['doubled_chats']} chats "
          f"with a message twice, dispatch messages doubled {result['dispatch_doubled']}, missing "
          f"{result['dispatch_missing']}; 429 answers {result['refused_429']}; most messages in one second "
          f"{result['busiest_second']}")
    for text in result.get("twice", []):
        print(f"  a chat got this twice: {text!r}")
    for failure in result["failures"][:10]:
        print(f"  failed: {failure}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200, help="simulated residents (5 updates each, one case)")
    parser.add_argument("--no-rate-limit", action="store_true",
                        help="without Telegram's limits (30 messages/s per bot, about 1/s per chat)")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="also offer this many updates/s on a schedule (open loop), after the closed burst")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long --rate offers updates")
    parser.add_argument("--concurrency", type=int, default=64, help="updates handled at once (across chats)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for one answer")
    parser.add_argument("--database-url", default=os.environ.get("GRIDLINE_DATABASE_URL", ""))
    parser.add_argument("--pg", default="", help="PostgreSQL server URL: a scratch database is made there")
    parser.add_argument("--server", choices=tuple(SERVERS), default="process",
                        help="process: a real `gridline serve` subprocess (as in production, Telegram remote); "
                        "inprocess: the app on the bench's own event loop (the old way, a floor)")
    parser.add_argument("--processes", type=int, default=1,
                        help="with --server process: serve's --processes (PostgreSQL; a chat's updates then land "
                        "on any of them, as behind a balancer)")
    parser.add_argument("--compare", action="store_true",
                        help="run both ways on identical scenarios, each on a fresh database, figures side by side")
    parser.add_argument("--save", default="", help="write the figures to this JSON file (a baseline for later)")
    parser.add_argument("--baseline", default="", help="a JSON file written by --save: printed beside this run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    limiter = "off" if args.no_rate_limit else "on (Telegram limits)"
    servers = ["inprocess", "process"] if args.compare else [args.server]
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cores, maybe shared)")
    results = []
    # The closed burst always runs: with --rate it is the baseline of the same run. Each run on
    # a database of its own (with --pg; a fresh SQLite file always), the same residents.
    for offered in [None] + ([(args.rate, args.seconds)] if args.rate > 0 else []):
        for server in servers:
            with _scratch_pg(args.pg) as url:
                result = asyncio.run(run(args.users, not args.no_rate_limit, url or args.database_url,
                                         args.concurrency, args.timeout, offered, server, args.processes))
            _report(result, limiter)
            results.append(result)
    if args.compare:
        for offered in dict.fromkeys(r["offered"] for r in results):  # closed first
            kind = "closed burst" if offered is None else f"{offered:g} updates/s offered"
            print(f"the server in the bench process beside a gridline serve process ({kind}):")
            _beside(*(r for r in results if r["offered"] == offered), headings=("in-process", "serve process"))
    elif len(results) == 2:
        print("the closed burst beside the offered rate:")
        _beside(*results, headings=("closed", f"{args.rate:g}/s"))
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.save:
        Path(args.save).write_text(json.dumps(results, default=str, indent=1), encoding="utf-8")
    if args.baseline:
        saved = json.loads(Path(args.baseline).read_text(encoding="utf-8"))
        saved = saved if isinstance(saved, list) else [saved]  # one run, as saved before --rate
        for before in saved:
            after = next((r for r in results if r.get("offered") == before.get("offered")
                          and r["server"] == before.get("server", r["server"])), None)  # saved before --server
            if after is not None:
                kind = "closed burst" if after.get("offered") is None else f"{after['offered']:g} updates/s offered"
                print(f"a saved run beside this one ({kind}):")
                _beside(before, after)
    if any(r["failures"] or r["dispatch_messages"] < r["filed"] for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
