"""Where a hotline webhook's time goes: SQL statements and database time per webhook.

    python bench/ivr_sql.py --database-url postgresql://postgres@127.0.0.1:5432/bench_ivr [--calls 8]

Serves the app in this process (demo district, the fake recogniser, so only the webhook
path is measured) and plays ``--calls`` simultaneous callers at real-time pace, as
``bench/ivr.py --fake`` does: by default the talk-only path (words and quiet, read-backs answered
by voice), ``--keys`` the keypad one. Every SQL statement is counted against the webhook whose
request ran it (the database threads carry the request's context), with the time the
statement took. Prints per webhook path: requests, latency p50/p99, statements per request,
database seconds per request, and the statements most run. The database is emptied first.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextvars
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ivr import ADDRESS, FAKE_TEXT, YES, make_audio, pct, prepare, run_calls  # noqa: E402

REQUEST = contextvars.ContextVar("request_path", default="(background)")


class Counter:
    def __init__(self):
        self.statements: dict[str, int] = collections.Counter()
        self.db_seconds: dict[str, float] = collections.defaultdict(float)
        self.kinds: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.requests: dict[str, list[float]] = collections.defaultdict(list)

    def attach(self, engine) -> None:
        from sqlalchemy import event

        @event.listens_for(engine, "before_cursor_execute")
        def before(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
            conn.info["started"] = time.perf_counter()

        @event.listens_for(engine, "after_cursor_execute")
        def after(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
            path = REQUEST.get()
            self.statements[path] += 1
            self.db_seconds[path] += time.perf_counter() - conn.info.pop("started", time.perf_counter())
            self.kinds[path][shape(statement)] += 1

    def middleware(self):
        from aiohttp import web

        @web.middleware
        async def count(request, handler):  # noqa: ANN001
            token = REQUEST.set(request.path)
            started = time.perf_counter()
            try:
                return await handler(request)
            finally:
                self.requests[request.path].append(time.perf_counter() - started)
                REQUEST.reset(token)

        return count


def shape(statement: str) -> str:
    """A statement's kind and first table: ``SELECT call_session``, ``UPDATE case``; a
    locking read is ``SELECT call_session FOR UPDATE``."""
    words = statement.split()
    verb = words[0].upper() if words else "?"
    table = re.search(r"\b(?:FROM|INTO|UPDATE)\s+\"?(\w+)", statement, re.IGNORECASE)
    locks = " FOR UPDATE" if verb == "SELECT" and "FOR UPDATE" in statement.upper() else ""
    return f"{verb} {table.group(1) if table else ''}{locks}".strip()


async def serve_and_call(db_url: str, calls: int, tmp: Path, keys: bool = False) -> Counter:
    from aiohttp import web

    from core.platform.db import make_engine
    from core.platform.settings import Settings
    from gridline.app import build_app
    from speech_models.pool import SpeechPool
    from tests.support.fake_transcriber import FakeTranscriber

    phones = prepare(db_url)
    counter = Counter()
    engine = make_engine(db_url)
    counter.attach(engine)
    token = "bench-token"
    runner = None
    try:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        # Every call recognised live (the fake recogniser costs nothing): each takes the whole
        # path (read-back, the address of an unknown caller) rather than some filed at once.
        settings = Settings(data_dir=tmp, database_url=db_url, public_url=url, twilio_auth_token=token,
                            telegram_token="", port=port, speech_live_streams=calls)
        fake = FakeTranscriber(default=FAKE_TEXT).say_in_grammar(*["对"] * 10000)  # a read-back answered 对
        app = build_app(settings, engine=engine, speech=SpeechPool(fake, workers=2), channels=("ivr",))
        app.middlewares.insert(0, counter.middleware())
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        audio = make_audio(tmp, None)
        address = make_audio(tmp, None, ADDRESS, "address.wav")
        answer = None if keys else make_audio(tmp, None, YES, "yes.wav")
        counter.statements.clear()  # start-up work is not a webhook's
        counter.db_seconds.clear()
        counter.kinds.clear()
        counter.requests.clear()
        results, errors, wall = await run_calls(url, token, calls, audio, address, phones, 1 / 3, answer=answer)
        print(f"{calls} calls, {len(results)} completed in {wall:.1f} s; errors: {errors[:2]}")
    finally:
        if runner is not None:
            await runner.cleanup()
        engine.dispose()
    return counter


def transitions(db_url: str, n: int) -> None:
    """CPU, wall time and statements of one call transition (``Call.count_confirm_try``):
    the locked read-modify-write every transition was, against the write from the webhook's
    own read of the call (``calls.apply(known=...)``), alternating, on one call."""
    import uuid

    from core.platform.db import make_engine
    from ivr import calls
    from ivr.state import Call

    prepare(db_url)
    engine = make_engine(db_url)
    counter = Counter()
    counter.attach(engine)
    sid = "CA" + uuid.uuid4().hex
    calls.open_call(engine, sid, from_number="+8613900000123", to_number="+8657100000000", status="in-progress")
    for _ in range(3):
        calls.apply(engine, sid, Call.begin_turn, "petition")
    known = calls.load_call(engine, sid)

    def locked() -> None:
        calls.apply(engine, sid, Call.count_confirm_try)

    def from_read() -> None:
        nonlocal known
        known, _ = calls.apply(engine, sid, Call.count_confirm_try, known=calls.load_call(engine, sid))

    def write_only() -> None:
        nonlocal known
        known, _ = calls.apply(engine, sid, Call.count_confirm_try, known=known)

    ways = {"locked read + write (before)": locked, "read, then write from it": from_read,
            "write from a read already made": write_only}
    cpu = dict.fromkeys(ways, 0.0)
    wall = dict.fromkeys(ways, 0.0)
    statements = dict.fromkeys(ways, 0)
    for _ in range(20):  # warm
        for fn in ways.values():
            fn()
    for _ in range(n):
        for name, fn in ways.items():
            before = counter.statements["(background)"]
            c, w = time.process_time(), time.perf_counter()
            fn()
            cpu[name] += time.process_time() - c
            wall[name] += time.perf_counter() - w
            statements[name] += counter.statements["(background)"] - before
    engine.dispose()
    print(f"one transition of a call, {n} each, alternating ({db_url.split('://')[0]}):")
    for name in ways:
        print(f"  {name:<32} {cpu[name] / n * 1000:6.3f} ms CPU  {wall[name] / n * 1000:6.3f} ms wall  "
              f"{statements[name] / n:.1f} statements")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--database-url", required=True, help="a database this may empty (PostgreSQL or SQLite)")
    ap.add_argument("--calls", type=int, default=8)
    ap.add_argument("--top", type=int, default=6, help="statement kinds shown per webhook")
    ap.add_argument("--keys", action="store_true", help="the keypad path instead of the talk-only one (bench/ivr.py)")
    ap.add_argument("--transitions", type=int, default=0, metavar="N",
                    help="instead: time N transitions of one call, the locked way against the known one")
    args = ap.parse_args()
    from sqlalchemy import create_engine, text

    from core.platform.settings import normalise_database_url

    db_url = normalise_database_url(args.database_url)
    if db_url.startswith("postgresql"):
        with create_engine(db_url, isolation_level="AUTOCOMMIT").connect() as c:
            c.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
            c.execute(text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
    if args.transitions:
        transitions(db_url, args.transitions)
        return
    tmp = Path(tempfile.mkdtemp(prefix="gridline-bench-ivr-sql-"))
    counter = asyncio.run(serve_and_call(db_url, args.calls, tmp, args.keys))
    print(f"{'keypad' if args.keys else 'talk-only'} path")
    print(f"{'webhook':<28} {'n':>4} {'p50 ms':>7} {'p99 ms':>7} {'SQL/req':>8} {'db ms/req':>9}")
    for path, lat in sorted(counter.requests.items()):
        n = len(lat)
        print(f"{path:<28} {n:>4} {pct(lat, 50) * 1000:>7.1f} {pct(lat, 99) * 1000:>7.1f} "
              f"{counter.statements[path] / n:>8.1f} {counter.db_seconds[path] / n * 1000:>9.1f}")
        top = counter.kinds[path].most_common(args.top)
        print("    " + ", ".join(f"{k} ×{v / n:.1f}" for k, v in top))
    background = counter.statements.get("(background)", 0)
    print(f"outside any request (stream sockets' token checks run inside theirs; jobs, sweeps): {background} "
          f"statements, {counter.db_seconds.get('(background)', 0.0):.2f} s")


if __name__ == "__main__":
    main()
