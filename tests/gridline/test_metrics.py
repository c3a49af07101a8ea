"""gridline.metrics: /metrics of a real app after real requests, read with Prometheus' own
text parser; who may scrape; a scrape while every database thread is taken; the request id
of every answer and log line."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from core import actions
from core.actions import Petition
from core.cases.models import Channel
from core.platform import jobs
from core.platform.db import session_scope
from core.platform.settings import Settings
from gridline import metrics
from gridline.app import SERVICES, build_app
from gridline.metrics import METRICS
from speech_models.pool import SpeechPool
from tests.support.console_admin import ADMIN, PASSWORD, add_admin
from tests.support.fake_transcriber import FakeTranscriber
from tests.support.serve import ServeProcess, database_url
from tests.support.twilio_signing import signed_headers
from tests.support.waiting import wait_until

TOKEN = "metrics-token-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
TWILIO_TOKEN = "test-auth-token-0123456789abcdef"
PUBLIC = "http://hotline.test"
CALL_SID = "CA0123456789abcdef0123456789abcdef"


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a scrape: (name, labels) → value, parsed by prometheus_client."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(scrape: dict, name: str, **labels: str) -> float:
    return scrape.get((name, frozenset(labels.items())), 0.0)


async def scrape(client) -> dict:  # noqa: ANN001
    resp = await client.get("/metrics", headers=BEARER)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/plain; version=")  # the text format
    return samples(await resp.text())


async def login(client) -> None:  # noqa: ANN001
    page = await client.get("/console/login")
    csrf = (await page.text()).split('name="_csrf" value="', 1)[1].split('"', 1)[0]
    resp = await client.post("/console/login", data={"_csrf": csrf, "name": ADMIN, "password": PASSWORD},
                             allow_redirects=False)
    assert resp.status == 303


@contextlib.contextmanager
def trusted_proxies(monkeypatch, networks: str):  # noqa: ANN001, ANN201
    """GRIDLINE_TRUSTED_PROXIES for the block only (the console's settings are cached)."""
    from console.config import get_console_settings

    monkeypatch.setenv("GRIDLINE_TRUSTED_PROXIES", networks)
    get_console_settings.cache_clear()
    try:
        yield
    finally:
        monkeypatch.delenv("GRIDLINE_TRUSTED_PROXIES")
        get_console_settings.cache_clear()


def settings(tmp_path, **kw) -> Settings:
    return Settings(data_dir=tmp_path, public_url=PUBLIC, twilio_auth_token=TWILIO_TOKEN, metrics_token=TOKEN, **kw)


async def test_a_scrape_after_a_console_page_a_twilio_webhook_and_jobs(engine, tmp_path, monkeypatch):
    # The metric objects live once per process; an earlier test in this process may have run
    # the bot and made its gauge. A server process builds one app: start from a fresh set.
    monkeypatch.setattr(metrics, "_families", None)
    add_admin(engine)
    with session_scope(engine) as session:
        case, _ = actions.submit_petition(session, Petition(channel=Channel.console, description="路灯不亮"))
        # one job nobody here takes (the chat bot is off): due, and stays so
        jobs.enqueue(session, "notify_resident", {"case": case.number, "status": "received"})
    app = build_app(settings(tmp_path), engine=engine, channels=("ivr", "console"), run_jobs=False)
    services = app[SERVICES]
    app[METRICS].snapshot_every = 0  # the database figures at every scrape (they are cached in service)

    async def boom(job) -> None:  # noqa: ANN001
        raise RuntimeError("the SMS gateway is away")

    services.jobs.register("sms_progress", boom)
    async with TestClient(TestServer(app)) as client:
        before = await scrape(client)
        await login(client)
        page = await client.get(f"/console/cases/{case.number}")
        assert page.status == 200
        assert len(page.headers["X-Request-Id"]) == 16
        form = {"CallSid": CALL_SID, "From": "+8613800000009", "To": "+8601012345", "CallStatus": "ringing"}
        voice = await client.post("/twilio/voice", data=form,
                                  headers=signed_headers(TWILIO_TOKEN, f"{PUBLIC}/twilio/voice", form))
        assert voice.status == 200 and "<Response>" in await voice.text()
        forged = await client.post("/twilio/voice", data=form, headers={"X-Twilio-Signature": "forged"})
        assert forged.status == 403
        with session_scope(engine) as session:
            jobs.enqueue(session, "sla_sweep", {})
            jobs.enqueue(session, "sms_progress", {}, max_attempts=1)
        assert await services.jobs.run_once() == 2  # the sweep runs, the SMS fails for good
        after = await scrape(client)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # requests by the route's pattern: no case number, token or CallSid in any label
    assert grew("gridline_http_requests_total", route="/console/cases/{number}", method="GET", status="200") == 1
    assert grew("gridline_http_requests_total", route="/twilio/voice", method="POST", status="200") == 1
    assert grew("gridline_http_requests_total", route="/twilio/voice", method="POST", status="403") == 1
    assert grew("gridline_http_request_duration_seconds_count", route="/console/cases/{number}", method="GET") == 1
    assert value(after, "gridline_http_request_duration_seconds_bucket", route="/console/cases/{number}",
                 method="GET", le="+Inf") >= 1
    labels = {v for (_, ls) in after for (_, v) in ls}
    assert not any(case.number in v or CALL_SID in v for v in labels), labels
    # the scrape itself is in progress while it is answered
    assert value(after, "gridline_http_requests_in_progress") >= 1
    # jobs: what this process ran, and what the database holds
    assert grew("gridline_jobs_finished_total", kind="sla_sweep", outcome="done") == 1
    assert grew("gridline_jobs_finished_total", kind="sms_progress", outcome="failed") == 1
    assert grew("gridline_job_duration_seconds_count", kind="sla_sweep") == 1
    assert value(after, "gridline_jobs_due", kind="notify_resident") == 1
    assert value(after, "gridline_jobs_failed", kind="sms_progress") == 1
    assert value(after, "gridline_jobs_due", kind="sla_sweep") == 0 and value(after, "gridline_jobs_running",
                                                                               kind="sla_sweep") == 0
    # the call that rang is in progress (it has not ended)
    assert value(after, "gridline_calls_in_progress", direction="inbound") == 1
    # and counted in the hotline's service figures of today: offered, its greeting gone out in time
    for figure in ("offered", "answered", "answered_in_time"):
        assert value(after, "gridline_hotline_calls", period="day", figure=figure) == 1, figure
    assert value(after, "gridline_hotline_connection_ratio", period="day") == 1.0
    assert value(after, "gridline_calls_in_progress", direction="outbound") == 0
    assert time.time() - value(after, "gridline_database_snapshot_timestamp_seconds") < 60
    # what the packages hold in memory
    assert value(after, "gridline_db_threads") == services.db.threads
    assert ("gridline_media_streams_open", frozenset()) in after
    assert ("gridline_chat_send_queue", frozenset()) not in after  # the bot is off: not a false 0


async def test_metrics_are_off_unless_a_token_or_an_address_is_set(engine, tmp_path, monkeypatch):
    off = build_app(Settings(data_dir=tmp_path), engine=engine, channels=(), run_jobs=False)
    async with TestClient(TestServer(off)) as client:
        resp = await client.get("/metrics")
        assert resp.status == 404 and "GRIDLINE_METRICS_TOKEN" in await resp.text()

    app = build_app(Settings(data_dir=tmp_path, metrics_token=TOKEN), engine=engine, channels=(), run_jobs=False)
    async with TestClient(TestServer(app)) as client:
        anonymous = await client.get("/metrics")
        assert anonymous.status == 401 and anonymous.headers["WWW-Authenticate"].startswith("Bearer")
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer metrics-token-0123456780"})
        assert wrong.status == 401
        assert (await client.get("/metrics", headers=BEARER)).status == 200

    # by address: the test client connects from 127.0.0.1
    allowed = build_app(Settings(data_dir=tmp_path, metrics_allow="127.0.0.1, 10.0.0.0/8"), engine=engine,
                        channels=(), run_jobs=False)
    async with TestClient(TestServer(allowed)) as client:
        assert (await client.get("/metrics")).status == 200
        # through a reverse proxy on this machine: the address is the proxy's, not the client's
        for header in ({"X-Forwarded-For": "203.0.113.9"}, {"Forwarded": "for=203.0.113.9"},
                       {"X-Real-IP": "203.0.113.9"}):
            assert (await client.get("/metrics", headers=header)).status == 403, header
        with trusted_proxies(monkeypatch, "127.0.0.1"):
            assert (await client.get("/metrics")).status == 403  # the peer is a proxy
    elsewhere = build_app(Settings(data_dir=tmp_path, metrics_allow="10.0.0.0/8"), engine=engine, channels=(),
                          run_jobs=False)
    async with TestClient(TestServer(elsewhere)) as client:
        assert (await client.get("/metrics")).status == 403


class HeldTranscriber(FakeTranscriber):
    """A recogniser that works on a file until the test lets it finish."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.held: list[float] = []  # how long each file was held, as the recogniser itself saw it

    def transcribe_pcm(self, pcm, sample_rate, phrases=None):  # noqa: ANN001, ANN201
        began = time.perf_counter()
        self.gate.wait(30)
        self.held.append(time.perf_counter() - began)
        return super().transcribe_pcm(pcm, sample_rate, phrases)


async def test_recognition_is_counted_with_its_queue_and_real_time_factor(engine, tmp_path):
    transcriber = HeldTranscriber()
    pool = SpeechPool(transcriber, workers=1)
    app = build_app(settings(tmp_path), engine=engine, channels=("ivr",), speech=pool, run_jobs=False)
    async with TestClient(TestServer(app)) as client:
        before = await scrape(client)
        # two recordings of 2 s for one speech thread: one is recognised, one waits
        work = [asyncio.ensure_future(pool.transcribe_pcm(b"\x00\x01" * 16000 * 2, 16000)) for _ in range(2)]
        while pool.busy < 2:
            await asyncio.sleep(0.01)
        queued = await scrape(client)
        await asyncio.sleep(0.3)  # the thread works 0.3 s on the first
        transcriber.gate.set()
        await asyncio.gather(*work)
        # a live stream: 3 s of a caller's audio
        stream = await pool.open_stream(8000, encoding="mulaw", partials=False)
        stream.feed(b"\xff" * 8000 * 3)
        await stream.finish()
        after = await scrape(client)
        await pool.close()

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert value(queued, "gridline_speech_jobs_in_flight") == 2
    assert value(after, "gridline_speech_jobs_in_flight") == 0
    assert grew("gridline_speech_audio_seconds_total", mode="file") == pytest.approx(4.0)
    assert grew("gridline_speech_audio_seconds_total", mode="stream") == pytest.approx(3.0)
    # the busy time counted covers at least what the recogniser itself spent holding the files
    held = sum(transcriber.held)
    assert held > 0
    busy = grew("gridline_speech_busy_seconds_total", mode="file")
    assert held <= busy < held + 10
    assert grew("gridline_speech_real_time_factor_count", mode="file") == 2
    # each factor is its file's work over its 2 s of audio
    assert grew("gridline_speech_real_time_factor_sum", mode="file") >= held / 2
    assert grew("gridline_speech_real_time_factor_count", mode="stream") >= 1


def test_bad_metrics_settings_are_named():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="metrics_allow"):
        Settings(metrics_allow="10.0.0.0/8, the office")
    with pytest.raises(ValidationError, match="metrics_token"):
        Settings(metrics_token="short")
    with pytest.raises(ValidationError, match="log_format"):
        Settings(log_format="xml")


async def test_a_scrape_answers_while_every_database_thread_is_taken(engine, tmp_path):
    app = build_app(settings(tmp_path, db_threads=1, db_wait_seconds=30), engine=engine, channels=(),
                    run_jobs=False)
    services = app[SERVICES]
    app[METRICS].snapshot_every = 0
    release = threading.Event()
    async with TestClient(TestServer(app)) as client:
        first = await scrape(client)
        taken = asyncio.ensure_future(services.db.run(release.wait, 30))
        while services.db.busy == 0:
            await asyncio.sleep(0.01)
        try:
            started = time.monotonic()
            held = await scrape(client)
            assert time.monotonic() - started < 5  # not the 30 s a request would wait for a thread
        finally:
            release.set()
            await taken
    assert value(held, "gridline_db_threads_in_use") == 1
    assert value(held, "gridline_db_calls_waiting") == 1  # the snapshot's own query, waiting in line
    # the figures from the database are the last ones taken, and say so
    assert value(held, "gridline_database_snapshot_timestamp_seconds") == value(
        first, "gridline_database_snapshot_timestamp_seconds")


async def test_the_request_id_is_echoed_and_a_proxys_is_kept_only_from_a_trusted_proxy(engine, tmp_path,
                                                                                      monkeypatch):
    app = build_app(Settings(data_dir=tmp_path), engine=engine, channels=("console",), run_jobs=False)
    async with TestClient(TestServer(app)) as client:
        own = await client.get("/healthz", headers={"X-Request-Id": "from-anyone-1"})
        assert own.headers["X-Request-Id"] != "from-anyone-1"
        missing = await client.get("/no/such/page")
        assert missing.status == 404 and len(missing.headers["X-Request-Id"]) == 16
        with trusted_proxies(monkeypatch, "127.0.0.0/8"):
            kept = await client.get("/healthz", headers={"X-Request-Id": "lb-7f3a-0001"})
            assert kept.headers["X-Request-Id"] == "lb-7f3a-0001"
            forged = await client.get("/healthz", headers={"X-Request-Id": "two\\nlines"})
            assert forged.headers["X-Request-Id"] != "two\\nlines"


async def test_the_log_lines_of_a_twilio_webhook_carry_its_callsid_and_the_request_id(engine, tmp_path):
    from gridline.access_log import RedactingAccessLogger
    from gridline.logs import configure

    stream = io.StringIO()
    handler = configure("text")
    handler.setStream(stream)
    try:
        app = build_app(settings(tmp_path), engine=engine, channels=("ivr",), run_jobs=False)
        server = TestServer(app, access_log_class=RedactingAccessLogger,
                            access_log=logging.getLogger("aiohttp.access"))
        async with TestClient(server) as client:
            form = {"CallSid": CALL_SID, "From": "+8613800000009", "To": "+8601012345", "CallStatus": "ringing"}
            resp = await client.post("/twilio/voice", data=form,
                                     headers=signed_headers(TWILIO_TOKEN, f"{PUBLIC}/twilio/voice", form))
            assert resp.status == 200
            rid = resp.headers["X-Request-Id"]
            logging.getLogger("elsewhere").info("a line outside any request")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = stream.getvalue().splitlines()
    access = [line for line in lines if "POST /twilio/voice" in line]
    assert len(access) == 1, lines
    assert f"[req={rid} call={CALL_SID}]" in access[0]
    assert any(line.endswith("INFO elsewhere: a line outside any request") for line in lines)


# -- real `gridline serve` processes ---------------------------------------------------------

def _get(url: str, headers: dict | None = None) -> tuple[int, dict, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def _scrape_over_http(url: str) -> dict:
    status, _, body = _get(f"{url}/metrics", BEARER)
    assert status == 200, body
    return samples(body)


# Metrics shared through PROMETHEUS_MULTIPROC_DIR's files: the database is incidental.
@pytest.mark.one_database
def test_two_processes_write_and_one_scrape_adds_them_up(engine, tmp_path):
    """What `gridline serve --processes N` does, with the processes on two ports so each can be
    reached: the same PROMETHEUS_MULTIPROC_DIR, and a scrape of either sees both."""
    from gridline.metrics import process_exited

    shared = tmp_path / "prometheus"
    shared.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(shared), "GRIDLINE_METRICS_TOKEN": TOKEN, "GRIDLINE_SPEECH_MODEL": ""}
    url = database_url(engine)
    with ServeProcess(tmp_path / "a", url, env={**env, "GRIDLINE_DB_THREADS": "3"}, args=("--no-demo",)) as a, \
            ServeProcess(tmp_path / "b", url, env={**env, "GRIDLINE_DB_THREADS": "5"}, args=("--no-demo",)) as b:
        base = value(_scrape_over_http(a.url), "gridline_http_requests_total", route="/healthz", method="GET",
                     status="200")
        for server, times in ((a, 3), (b, 2)):
            for _ in range(times):
                assert _get(f"{server.url}/healthz")[0] == 200
        scraped = _scrape_over_http(a.url)
        assert value(scraped, "gridline_http_requests_total", route="/healthz", method="GET", status="200") == base + 5
        assert value(scraped, "gridline_http_request_duration_seconds_count", route="/healthz", method="GET") >= 5
        # a gauge each process holds for itself is the sum over the live processes
        wait_until(lambda: value(_scrape_over_http(b.url), "gridline_db_threads") == 8, timeout=20,
                   message="both processes' database threads")
        b.kill()
        process_exited(b.proc.pid, str(shared))  # what the supervisor does for a process that ended
        after = _scrape_over_http(a.url)
    assert value(after, "gridline_db_threads") == 3
    # what the dead process answered stays counted
    assert value(after, "gridline_http_requests_total", route="/healthz", method="GET", status="200") >= base + 5


def test_json_logs_of_a_real_server_one_object_a_line_with_the_callsid(engine, tmp_path):
    env = {"GRIDLINE_LOG_FORMAT": "json", "GRIDLINE_SPEECH_MODEL": "", "GRIDLINE_TWILIO_AUTH_TOKEN": TWILIO_TOKEN}
    with ServeProcess(tmp_path / "data", database_url(engine), env=env) as server:
        form = {"CallSid": CALL_SID, "From": "+8613800000009", "To": "+8601012345", "CallStatus": "ringing"}
        request = urllib.request.Request(f"{server.url}/twilio/voice", data=urllib.parse.urlencode(form).encode(),
                                         headers=signed_headers(TWILIO_TOKEN, f"{server.url}/twilio/voice", form))
        with urllib.request.urlopen(request, timeout=30) as resp:
            assert resp.status == 200
            rid = resp.headers["X-Request-Id"]
        assert _get(f"{server.url}/no/such/page")[0] == 404

        def records() -> list[dict]:
            lines = [line for line in server.output.splitlines()
                     if line.strip() and not line.startswith("===== start")]  # the test's own marker
            return [json.loads(line) for line in lines]  # every line one JSON object, or this raises

        wait_until(lambda: any("POST /twilio/voice" in r["message"] for r in records()), timeout=20,
                   message="the webhook's access log line")
        server.stop()
        logged = records()
    webhook = [r for r in logged if "POST /twilio/voice" in r["message"]]
    assert len(webhook) == 1
    assert webhook[0]["call_id"] == CALL_SID and webhook[0]["request_id"] == rid
    assert webhook[0]["logger"] == "aiohttp.access" and webhook[0]["level"] == "INFO"
    assert set(webhook[0]) >= {"time", "level", "logger", "message", "request_id", "call_id"}
    assert datetime.fromisoformat(webhook[0]["time"]).tzinfo is not None
    missing = [r for r in logged if "GET /no/such/page" in r["message"]]
    assert len(missing) == 1 and "call_id" not in missing[0] and len(missing[0]["request_id"]) == 16
    # start-up said its words as records too (the demo district, aiohttp's banner)
    assert any("loaded the demo district" in r["message"] for r in logged)
    assert any("Running on" in r["message"] for r in logged)


async def test_files_waiting_for_the_media_store_are_counted_with_their_bytes(engine, tmp_path):
    from core.cases.models import Attachment

    with session_scope(engine) as session:
        session.add(Attachment(kind="recording", path="recordings/a.wav", size=1000, sha256="0" * 64,
                               upload_pending=True))
        session.add(Attachment(kind="voice", path="chat/b.ogg", size=234, sha256="1" * 64, upload_pending=True))
        session.add(Attachment(kind="photo", path="chat/c.jpg", size=99, sha256="2" * 64))  # kept already
    app = build_app(settings(tmp_path), engine=engine, channels=("console",), run_jobs=False)
    app[METRICS].snapshot_every = 0
    async with TestClient(TestServer(app)) as client:
        figures = await scrape(client)
    assert value(figures, "gridline_media_uploads_pending") == 2
    assert value(figures, "gridline_media_spool_bytes") == 1234
