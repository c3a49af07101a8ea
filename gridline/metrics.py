"""``/metrics`` in Prometheus' text format, and the request id of every log line.

What is counted, and where the numbers come from:

* HTTP requests by route pattern (``/console/cases/{number}``, never the path as sent: no
  case number or token reaches a label), method and status, with latency histograms, and
  the requests in progress: the middleware here;
* jobs finished by kind and outcome, and their duration: ``core.platform.runner.observers``;
* speech recognised (seconds of audio, seconds of work, real-time factor):
  ``speech_models.pool.observers``;
* what a package holds in memory now (Media Streams sockets, live recognitions, the speech
  queue, the chat bot's send queue, the database threads; the media upload queue and spool
  once the media store registers them): ``services.gauges``, a name → callable each package
  fills at setup, read when a scrape comes (and every few seconds by each process under
  ``--processes``, so the sum over the processes is fresh);
* what only the database knows (jobs due, running and failed by kind; calls in progress; the
  hotline's service figures of the current local hour, day and month, ``core.reporting.hotline``):
  one small query, at most every ``SNAPSHOT_SECONDS``, started by a scrape that finds the
  last one old and awaited for at most ``SNAPSHOT_WAIT_SECONDS``. A scrape never waits for
  the database beyond that: with every database thread taken it answers with the last
  figures, and ``gridline_database_snapshot_timestamp_seconds`` says how old they are.

Several processes (``gridline serve --processes N``) share one port: each writes its figures
to files in ``PROMETHEUS_MULTIPROC_DIR`` (set, to a fresh folder, before the processes start)
and whichever process a scrape reaches adds them up (prometheus_client's multiprocess mode;
each gauge says how: the sum over live processes, or the newest value for the figures from
the database). A supervisor calls :func:`process_exited` for a process that ended, so its
gauges stop counting.

Who may scrape: ``/metrics`` is off (404) unless ``GRIDLINE_METRICS_TOKEN`` (sent as
``Authorization: Bearer …``) or ``GRIDLINE_METRICS_ALLOW`` (addresses or networks of the
scrapers) is set. An address is believed only for a request that did not come through a
proxy (none of ``GRIDLINE_TRUSTED_PROXIES``, no forwarding header), so a reverse proxy on
the same machine does not open it to the world.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import math
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    multiprocess,
    values,
)
from sqlalchemy import func
from sqlmodel import select

from console.config import get_console_settings
from core.cases.models import Attachment, CallSession
from core.platform import jobs, logcontext, runner
from core.platform.clock import utcnow
from core.platform.db import session_scope
from core.platform.models import Job, JobStatus
from core.platform.settings import get_settings
from core.reporting import hotline
from core.reporting.hotline import CallFigures
from speech_models import pool

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID = web.RequestKey("gridline_request_id", str)

# The database figures are taken again when a scrape finds them older than this; a scrape
# waits at most SNAPSHOT_WAIT_SECONDS for the new ones (else it shows the last ones).
SNAPSHOT_SECONDS = 10.0
SNAPSHOT_WAIT_SECONDS = 1.0
SNAPSHOT_TIMEOUT_SECONDS = 10.0
# Under --processes each process writes its in-memory gauges this often.
SAMPLE_SECONDS = 5.0
# A call with no end and no webhook for this long is not counted as in progress (its
# status callback never came; the recovery sweep files it).
CALL_SILENT_AFTER = timedelta(minutes=15)
# Calls in progress are looked for among the newest this many calls (by id, the primary
# key): the count stays cheap on a table that only grows.
CALLS_LOOKED_AT = 10_000

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
JOB_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)
RTF_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@dataclass(frozen=True)
class GaugeSpec:
    help: str
    # How the processes' values add up under --processes: livesum (each process holds its own
    # part), livemax (every process sees the same thing, e.g. one spool folder per machine).
    mode: str = "livesum"


# Gauges read from ``services.gauges`` (name → callable returning a number). A package
# registers the ones it has; a name not listed here is refused at start-up (a typo).
SAMPLED: dict[str, GaugeSpec] = {
    "gridline_media_streams_open": GaugeSpec("Twilio Media Streams sockets connected: calls whose audio "
                                             "comes to this instance now"),
    "gridline_speech_live_recognitions": GaugeSpec("Turns recognised live now (each holds one of the "
                                                   "GRIDLINE_SPEECH_LIVE_STREAMS slots)"),
    "gridline_speech_jobs_in_flight": GaugeSpec("Recognition steps handed to the speech threads and not done: "
                                                "running or queued for a thread (the recognition queue depth)"),
    "gridline_speech_backlog_seconds": GaugeSpec("Seconds of callers' audio received by live recognisers and "
                                                 "not yet handed to a speech thread"),
    "gridline_hotline_turns_ended_by_us": GaugeSpec("Callers' turns this process ended on its own end-of-speech "
                                                    "detection (a live redirect) since it started"),
    "gridline_hotline_turn_end_failures": GaugeSpec("End-of-speech redirects that failed (Twilio error, timeout) "
                                                    "since this process started: Twilio's own quiet ended those turns"),
    "gridline_chat_send_queue": GaugeSpec("Telegram Bot API calls (messages, answers) waiting for the rate "
                                          "limiter or on their way"),
    "gridline_db_threads": GaugeSpec("Database threads (as many as the connection pool holds)"),
    "gridline_db_threads_in_use": GaugeSpec("Database threads running a call now"),
    "gridline_db_calls_waiting": GaugeSpec("Database calls waiting for a free thread"),
    "gridline_http_admission_limit": GaugeSpec("Requests admitted at once now ([admission]: what the process "
                                               "finishes in target_seconds, within min_in_flight..max_in_flight)"),
    "gridline_http_requests_admitted": GaugeSpec("Requests being answered under the admission limit "
                                                 "([admission] max_in_flight; exempt paths not counted)"),
}

GaugeSource = Callable[[], float]


def multiprocess_dir() -> str | None:
    path = os.environ.get(MULTIPROC_ENV)
    return path if path and os.path.isdir(path) else None


class _Families:
    """The metric objects, made once per process (a module-level registry: tests build
    many apps in one process, and Prometheus' client refuses a name twice)."""

    def __init__(self) -> None:
        if multiprocess_dir() and values.ValueClass is values.MutexValue:
            # prometheus_client chose in-memory values when it was imported, before a
            # supervisor set the folder: choose again, so this process writes its files.
            values.ValueClass = values.get_value_class()
        self.registry = CollectorRegistry(auto_describe=True)
        if not multiprocess_dir():
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
        r = self.registry
        self.http_requests = Counter("gridline_http_requests", "HTTP requests answered, by route pattern, "
                                     "method and status", ["route", "method", "status"], registry=r)
        self.http_seconds = Histogram("gridline_http_request_duration_seconds", "Time to answer an HTTP request, "
                                      "by route pattern and method (websockets not included)",
                                      ["route", "method"], buckets=HTTP_BUCKETS, registry=r)
        self.http_in_progress = Gauge("gridline_http_requests_in_progress", "HTTP requests being answered "
                                      "(open websockets included)", registry=r, multiprocess_mode="livesum")
        self.jobs_finished = Counter("gridline_jobs_finished", "Jobs run by this instance, by kind and outcome "
                                     "(done; retry: failed, tried again later; failed: failed for good; later: "
                                     "put back without an attempt)", ["kind", "outcome"], registry=r)
        self.job_seconds = Histogram("gridline_job_duration_seconds", "Time a job's handler took, by kind",
                                     ["kind"], buckets=JOB_BUCKETS, registry=r)
        self.speech_audio = Counter("gridline_speech_audio_seconds", "Seconds of audio recognised, by mode "
                                    "(stream: live calls; file: recordings and voice notes)", ["mode"], registry=r)
        self.speech_busy = Counter("gridline_speech_busy_seconds", "Seconds speech threads worked on recognition, "
                                   "by mode (divided by gridline_speech_audio_seconds_total: the real-time factor)",
                                   ["mode"], registry=r)
        self.speech_rtf = Histogram("gridline_speech_real_time_factor", "Real-time factor of each recognition step "
                                    "(seconds of work per second of audio; above 1 recognition falls behind)",
                                    ["mode"], buckets=RTF_BUCKETS, registry=r)
        self.db_refused = Counter("gridline_db_calls_refused", "Database calls told 'busy' (no thread free in "
                                  "time, or too many waiting): answered 503", registry=r)
        self.http_refused = Counter("gridline_http_requests_refused", "Requests refused at once with 503 and "
                                    "Retry-After because [admission] max_in_flight were in progress", registry=r)
        snapshot = {"registry": r, "multiprocess_mode": "mostrecent"}
        self.jobs_due = Gauge("gridline_jobs_due", "Jobs queued whose time has come, by kind", ["kind"], **snapshot)
        self.jobs_running = Gauge("gridline_jobs_running", "Jobs claimed by a runner now, by kind", ["kind"],
                                  **snapshot)
        self.jobs_failed = Gauge("gridline_jobs_failed", "Jobs that failed for good (every attempt used), by kind",
                                 ["kind"], **snapshot)
        self.calls_in_progress = Gauge("gridline_calls_in_progress", "Hotline calls not ended, on every instance, "
                                       "by direction (inbound; outbound: survey calls)", ["direction"], **snapshot)
        # Files that wait in a spool for the media store, on every instance (core.platform.uploads):
        # counted in the database with the jobs, so a scrape never walks a folder.
        self.uploads_pending = Gauge("gridline_media_uploads_pending", "Files waiting in an instance's spool, "
                                     "not yet confirmed in the media store (every instance)", **snapshot)
        self.spool_bytes = Gauge("gridline_media_spool_bytes", "Bytes of the files waiting in the spools for "
                                 "the media store (every instance)", **snapshot)
        # The hotline's service figures (GB/T 33358-2016) of the current local hour, day and month.
        self.hotline_calls = Gauge("gridline_hotline_calls", "Inbound hotline calls of the current local period "
                                   "(hour, day, month), by figure: offered, answered, answered_in_time, "
                                   "ended_before_case, filed_from_audio, transfers, transfers_answered, "
                                   "transfers_not_answered", ["period", "figure"], **snapshot)
        self.hotline_connection = Gauge("gridline_hotline_connection_ratio", "Calls answered / calls offered in "
                                        "the current local period (NaN without calls)", ["period"], **snapshot)
        self.hotline_in_time = Gauge("gridline_hotline_answered_in_time_ratio", "Calls answered within "
                                     "gridline_hotline_target_answer_seconds / calls offered in the current local "
                                     "period (NaN without calls)", ["period"], **snapshot)
        self.hotline_wait_max = Gauge("gridline_hotline_answer_seconds_max", "Longest time from a call's arrival "
                                      "to its first prompt in the current local period (NaN without calls "
                                      "answered)", ["period"], **snapshot)
        self.hotline_handling = Gauge("gridline_hotline_handling_seconds_average", "Average handling time of the "
                                      "calls that ended in the current local period (NaN without)", ["period"],
                                      **snapshot)
        self.hotline_target_answer = Gauge("gridline_hotline_target_answer_seconds", "The standard's time to "
                                           "answer a call ([reports.hotline] answer_within_seconds)", **snapshot)
        self.hotline_target_connection = Gauge("gridline_hotline_target_connection_ratio", "The standard's "
                                               "connection rate ([reports.hotline] connection_rate)", **snapshot)
        self.snapshot_time = Gauge("gridline_database_snapshot_timestamp_seconds", "When the figures from the "
                                   "database (jobs, calls in progress) were last taken (Unix time)", **snapshot)
        self.snapshot_errors = Counter("gridline_database_snapshot_errors", "Times the figures from the database "
                                       "could not be taken (database away or busy)", registry=r)
        self._sampled: dict[str, Any] = {}
        self._gauge_class = Gauge

    def sampled(self, name: str):  # noqa: ANN201
        """The gauge for ``name`` (SAMPLED), made the first time a package registers it:
        a gauge nobody feeds is not shown as a false 0."""
        gauge = self._sampled.get(name)
        if gauge is None:
            spec = SAMPLED[name]
            gauge = self._gauge_class(name, spec.help, registry=self.registry, multiprocess_mode=spec.mode)
            self._sampled[name] = gauge
        return gauge


_families: _Families | None = None


def families() -> _Families:
    global _families
    if _families is None:
        _families = _Families()
        _observe_jobs_and_speech(_families)
    return _families


def _observe_jobs_and_speech(f: _Families) -> None:

    def job_finished(kind: str, outcome: str, seconds: float) -> None:
        f.jobs_finished.labels(kind, outcome).inc()
        f.job_seconds.labels(kind).observe(seconds)

    def recognised(mode: str, audio_s: float, busy_s: float) -> None:
        f.speech_audio.labels(mode).inc(audio_s)
        f.speech_busy.labels(mode).inc(busy_s)
        f.speech_rtf.labels(mode).observe(busy_s / audio_s)

    runner.observers.append(job_finished)
    pool.observers.append(recognised)


def process_exited(pid: int, folder: str | None = None) -> None:
    """A process of ``gridline serve --processes`` ended: its live gauges stop counting (its
    counters stay, as Prometheus expects). ``folder``: the processes' PROMETHEUS_MULTIPROC_DIR
    (by default this process's)."""
    folder = folder or multiprocess_dir()
    if folder:
        multiprocess.mark_process_dead(pid, folder)


def exposition() -> tuple[bytes, str]:
    """The text of a scrape, and its content type: this process's metrics, or under
    ``--processes`` every process's, added up."""
    if multiprocess_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(families().registry), CONTENT_TYPE_LATEST


# -- where a request comes from --------------------------------------------------------------

FORWARDING_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")


def _networks(text: str) -> tuple:
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())


def _within(address: str | None, networks: tuple) -> bool:
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    return any(ip in net for net in networks)


def _trusted_proxies() -> tuple:
    return get_console_settings().proxy_networks()


# -- database figures ------------------------------------------------------------------------

@dataclass
class Snapshot:
    due: dict[str, int]
    running: dict[str, int]
    failed: dict[str, int]
    calls: dict[str, int]
    uploads_pending: int = 0
    uploads_pending_bytes: int = 0
    hotline: dict[str, CallFigures] = field(default_factory=dict)  # hour, day, month → figures


def current_hotline_figures(session, now, tz: str) -> dict[str, CallFigures]:  # noqa: ANN001
    """The service figures of the local hour, day and month ``now`` is in: one grouped pass
    over the month's inbound calls, its hour and day picked out."""
    periods = hotline.current_periods(now, tz)
    month = hotline.hotline_figures(session, *periods["month"], tz, grains=("hour", "day"))
    local_hour, local_day = (hotline.local_key(periods[grain][0], tz, grain) for grain in ("hour", "day"))
    return {
        "hour": next((x for x in month.hours if x.key == local_hour), CallFigures(local_hour)),
        "day": next((x for x in month.days if x.key == local_day), CallFigures(local_day)),
        "month": month.total,
    }


def take_snapshot(engine, tz: str | None = None) -> Snapshot:  # noqa: ANN001
    """Jobs due, running and failed by kind, calls in progress by direction, and the hotline's
    figures of this hour, day and month: small grouped counts (jobs by the claim index on
    status and run_at; calls among the newest by id; the month's calls by their arrival)."""
    now = utcnow()
    with session_scope(engine) as session:
        due = session.exec(select(Job.kind, func.count()).where(Job.status == JobStatus.queued, Job.run_at <= now)
                           .group_by(Job.kind)).all()
        held = session.exec(select(Job.kind, Job.status, func.count())
                            .where(Job.status.in_([JobStatus.running, JobStatus.failed]))
                            .group_by(Job.kind, Job.status)).all()
        newest = session.exec(select(func.max(CallSession.id))).one() or 0
        calls = session.exec(select(CallSession.direction, func.count()).where(
            CallSession.id > newest - CALLS_LOOKED_AT, CallSession.ended_at.is_(None),
            CallSession.updated_at >= now - CALL_SILENT_AFTER).group_by(CallSession.direction)).all()
        waiting, waiting_bytes = session.exec(
            select(func.count(), func.coalesce(func.sum(Attachment.size), 0))
            .where(Attachment.upload_pending == True)).one()  # noqa: E712
        figures = current_hotline_figures(session, now, tz or get_settings().timezone)
    return Snapshot(due={k: int(n) for k, n in due},
                    running={k: int(n) for k, s, n in held if s == JobStatus.running},
                    failed={k: int(n) for k, s, n in held if s == JobStatus.failed},
                    calls={d: int(n) for d, n in calls},
                    uploads_pending=int(waiting), uploads_pending_bytes=int(waiting_bytes), hotline=figures)


class Metrics:
    """One app's ``/metrics``: who may scrape, the gauges its packages registered, the
    database figures, and the middleware that counts requests and names them in logs."""

    def __init__(self, services: Any):
        self.services = services
        settings = services.settings
        self.token = settings.metrics_token
        self.allow = _networks(settings.metrics_allow)
        self.families = families()
        self.snapshot_every = SNAPSHOT_SECONDS
        self._snapshot_at = float("-inf")
        self._snapshot_task: asyncio.Task | None = None
        self._snapshot_failing = False
        self._kinds_seen: set[str] = set()
        self._refused_seen = 0
        self._turned_away_seen = 0

    @property
    def enabled(self) -> bool:
        return bool(self.token or self.allow)

    # -- gauges of this process --------------------------------------------------------------

    def check_sources(self) -> None:
        unknown = sorted(set(self.services.gauges) - set(SAMPLED))
        if unknown:
            raise ValueError(f"gauges registered that gridline.metrics does not declare: {', '.join(unknown)}")

    def sample(self) -> None:
        """Read every registered gauge's source now (on the event loop, where they live)."""
        f = self.families
        for name, source in list(self.services.gauges.items()):
            try:
                f.sampled(name).set(float(source()))
            except Exception:  # a source that fails must not cost the scrape
                log.warning("gauge %s could not be read", name, exc_info=True)
        refused = self.services.db.refused
        if refused > self._refused_seen:
            f.db_refused.inc(refused - self._refused_seen)
        self._refused_seen = refused
        admission = getattr(self.services, "admission", None)
        turned_away = admission.refused if admission is not None else 0
        if turned_away > self._turned_away_seen:
            f.http_refused.inc(turned_away - self._turned_away_seen)
        self._turned_away_seen = turned_away

    async def sample_periodically(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_SECONDS)

    # -- figures from the database -----------------------------------------------------------

    async def _refresh_snapshot(self) -> None:
        f = self.families
        services = self.services
        try:
            snap = await asyncio.wait_for(services.db.run(take_snapshot, services.engine), SNAPSHOT_TIMEOUT_SECONDS)
        except Exception as exc:  # database away or every thread busy: the last figures stay
            f.snapshot_errors.inc()
            if not self._snapshot_failing:
                log.warning("metrics: could not count jobs and calls in the database: %s", exc)
            self._snapshot_failing = True
            return
        if self._snapshot_failing:
            log.info("metrics: counting jobs and calls in the database again")
        self._snapshot_failing = False
        # Every kind known gets a value, 0 included, so a kind that emptied shows 0 (not
        # the last count it had).
        kinds = set(jobs.KINDS) | self._kinds_seen | set(snap.due) | set(snap.running) | set(snap.failed)
        self._kinds_seen = kinds
        for kind in kinds:
            f.jobs_due.labels(kind).set(snap.due.get(kind, 0))
            f.jobs_running.labels(kind).set(snap.running.get(kind, 0))
            f.jobs_failed.labels(kind).set(snap.failed.get(kind, 0))
        for direction in {"inbound", "outbound"} | set(snap.calls):
            f.calls_in_progress.labels(direction).set(snap.calls.get(direction, 0))
        _set_hotline(f, snap.hotline)
        f.uploads_pending.set(snap.uploads_pending)
        f.spool_bytes.set(snap.uploads_pending_bytes)
        f.snapshot_time.set(time.time())

    async def snapshot(self) -> None:
        """Start new database figures if the last are old; wait a moment for them."""
        if time.monotonic() - self._snapshot_at >= self.snapshot_every and (
                self._snapshot_task is None or self._snapshot_task.done()):
            self._snapshot_at = time.monotonic()
            self._snapshot_task = asyncio.get_running_loop().create_task(
                self._refresh_snapshot(), name="gridline-metrics-snapshot")
        task = self._snapshot_task
        if task is not None and not task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), SNAPSHOT_WAIT_SECONDS)

    # -- the endpoint ------------------------------------------------------------------------

    def _refusal(self, request: web.Request) -> web.Response | None:
        if not self.enabled:
            return web.Response(status=404, text="metrics are off: set GRIDLINE_METRICS_TOKEN "
                                "or GRIDLINE_METRICS_ALLOW\n")
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if self.token and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                                             self.token.encode()):
            return None
        direct = not any(h in request.headers for h in FORWARDING_HEADERS) and not _within(
            request.remote, _trusted_proxies())
        if self.allow and direct and _within(request.remote, self.allow):
            return None
        if self.token:
            return web.Response(status=401, text="a bearer token is needed\n",
                                headers={"WWW-Authenticate": 'Bearer realm="gridline metrics"'})
        return web.Response(status=403, text="not from an address in GRIDLINE_METRICS_ALLOW\n")

    async def handle(self, request: web.Request) -> web.Response:
        refused = self._refusal(request)
        if refused is not None:
            return refused
        await self.snapshot()
        self.sample()
        body, content_type = await asyncio.get_running_loop().run_in_executor(None, exposition)
        response = web.Response(body=body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})
        return response

    # -- every request -----------------------------------------------------------------------

    def request_id_for(self, request: web.Request) -> str:
        """The id a trusted proxy sent (``X-Request-Id``), else a new one."""
        given = request.headers.get(REQUEST_ID_HEADER)
        if given and logcontext.acceptable(given) and _within(request.remote, _trusted_proxies()):
            return given
        return secrets.token_hex(8)

    @web.middleware
    async def middleware(self, request: web.Request, handler):  # noqa: ANN001, ANN201
        rid = self.request_id_for(request)
        request[REQUEST_ID] = rid
        # Set in the request's own task (aiohttp runs each in one), so the access log line,
        # written in the same task after the answer, carries it too.
        logcontext.bind_request(rid)
        f = self.families
        f.http_in_progress.inc()
        started = time.perf_counter()
        status = 500
        websocket = False
        try:
            response = await handler(request)
            status = response.status
            websocket = isinstance(response, web.WebSocketResponse)
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = 499  # the client went away first (nginx's word for it)
            raise
        finally:
            f.http_in_progress.dec()
            route = route_label(request)
            method = request.method if request.method in METHODS else "other"
            f.http_requests.labels(route, method, str(status)).inc()
            if not websocket:
                f.http_seconds.labels(route, method).observe(time.perf_counter() - started)


HOTLINE_COUNTS = ("offered", "answered", "answered_in_time", "ended_before_case", "filed_from_audio", "transfers",
                  "transfers_answered", "transfers_not_answered")


def _set_hotline(f: _Families, figures: dict[str, CallFigures]) -> None:
    def value(x: float | None) -> float:
        return math.nan if x is None else float(x)

    goals = hotline.targets()
    f.hotline_target_answer.set(goals.answer_within_s)
    f.hotline_target_connection.set(goals.connection_rate)
    for period, x in figures.items():
        for name in HOTLINE_COUNTS:
            f.hotline_calls.labels(period, name).set(x.figure(name))
        f.hotline_connection.labels(period).set(value(x.connection_rate))
        f.hotline_in_time.labels(period).set(value(x.in_time_rate))
        f.hotline_wait_max.labels(period).set(value(x.longest_wait_s))
        f.hotline_handling.labels(period).set(value(x.average_handling_s))


METRICS = web.AppKey("gridline_metrics", Metrics)


def route_label(request: web.Request) -> str:
    """The route's pattern as registered (``/twilio/survey/{survey}/status``), never the
    path as sent; ``unmatched`` for paths no route takes (bounded, whatever is asked)."""
    match = request.match_info
    route = getattr(match, "route", None)
    resource = getattr(route, "resource", None)
    if resource is None:
        return "unmatched"
    return resource.canonical or "unmatched"


async def _echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    rid = request.get(REQUEST_ID)
    if rid:
        response.headers.setdefault(REQUEST_ID_HEADER, rid)


def install(app: web.Application, metrics: Metrics) -> Metrics:
    """Mount ``/metrics``, the request-id header, and (under ``--processes``) each process's
    sampling of its gauges. The middleware itself is ``Metrics.middleware``: build_app puts
    it first, so it sees every answer, 503s and 500s included."""
    app[METRICS] = metrics
    app.router.add_get("/metrics", metrics.handle)
    app.on_response_prepare.append(_echo_request_id)

    async def lifecycle(_app: web.Application):
        metrics.check_sources()
        if not metrics.enabled:
            log.info("/metrics is off: set GRIDLINE_METRICS_TOKEN (a bearer token) or GRIDLINE_METRICS_ALLOW "
                     "(the scrapers' addresses) to turn it on")
        sampler = None
        if multiprocess_dir():
            sampler = asyncio.get_running_loop().create_task(metrics.sample_periodically(),
                                                             name="gridline-metrics-sampler")
        yield
        if sampler is not None:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        task = metrics._snapshot_task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app.cleanup_ctx.append(lifecycle)
    return metrics
