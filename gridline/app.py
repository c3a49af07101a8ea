"""The one aiohttp application: health checks, then each channel mounts its routes."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy import Engine, text
from sqlmodel import select

import chat.qr
import chat.resident_web
import chat.web
import console.app
import console.open311
import ivr.survey_web
import ivr.web
from console.views.grids import GRID_QR
from core.actions import reference
from core.deadlines.sweeps import SLA_SWEEP_JOB, escalate_overdue, schedule_sweep
from core.errors import DatabaseBusy
from core.places.indexes import indexes_for
from core.places.models import Grid
from core.platform.db import engine_from_settings, has_tables, schema_lock, session_scope
from core.platform.dbpool import DatabasePool
from core.platform.instances import InstanceLease
from core.platform.media import MediaStore
from core.platform.media_stores import media_store
from core.platform.migrations import upgrade
from core.platform.rules import load_every_file, load_rules
from core.platform.runner import JobRunner
from core.platform.settings import Settings, get_settings
from core.platform.uploads import (
    MEDIA_UPLOAD_JOB,
    UploadPolicy,
    failed_count,
    pending_count,
    spool_name,
    upload_handler,
)
from gridline.admission import Admission
from gridline.metrics import Metrics
from gridline.metrics import install as install_metrics
from gridline.wiring import wire
from ivr import config as _ivr_config  # noqa: F401 (registers the hotline's rules files for load_every_file)

log = logging.getLogger(__name__)


@dataclass
class Services:
    """What the channels share; built once by the composition root."""

    settings: Settings
    engine: Engine
    jobs: JobRunner
    speech: Any = None  # speech_models pool, when a model is configured
    extras: dict[str, Any] = field(default_factory=dict)
    # What /metrics reads from a package at scrape time: metric name (declared in
    # gridline.metrics.SAMPLED) → a callable giving its value now, in this process.
    gauges: dict[str, Callable[[], float]] = field(default_factory=dict)
    # The database's own threads: channels run every blocking database call through
    # ``services.db.run`` and turn its DatabaseBusy into 503 / "please try again".
    # Sized to the engine's connection pool when not given.
    db: DatabasePool = None  # type: ignore[assignment]
    # Where files of cases live (core.platform.media): the data directory, a folder or a bucket.
    media: MediaStore = None  # type: ignore[assignment]
    # Which spool this instance's waiting files lie in (core.platform.uploads.spool_name).
    spool: str = ""
    # This process's lease among the instances sharing the database (core.platform.instances).
    instance: InstanceLease = None  # type: ignore[assignment]
    # Requests this process answers at once; more are refused with 503 (gridline.admission).
    admission: Admission = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.media is None:
            self.media = media_store(self.settings)
        if not self.spool:
            self.spool = spool_name(self.settings.data_dir)
        if self.db is None:
            self.db = DatabasePool.for_engine(self.engine, threads=self.settings.db_threads,
                                              queue=self.settings.db_queue,
                                              wait_seconds=self.settings.db_wait_seconds)
        if self.instance is None:
            local = self.engine.dialect.name == "postgresql" and getattr(self.media, "spool_is_store", False)
            self.instance = InstanceLease(self.engine, db=self.db.run,
                                          local_folder=Path(self.settings.data_dir) if local else None)
        if self.admission is None:
            self.admission = Admission.from_rules(load_rules())


SERVICES = web.AppKey("gridline_services", Services)


def prepare_database(engine: Engine, *, load_demo: bool) -> bool:
    """Upgrade the schema; on an empty database load the demo district. Returns whether
    the demo was loaded. Under the schema lock: instances started together take turns, and
    only the first finds the database empty."""
    with schema_lock(engine):
        upgrade(engine)
        if not load_demo:
            return False
        with session_scope(engine) as session:
            if session.exec(select(Grid.id).limit(1)).first() is not None:
                return False
            reference.load_demo(session, actor="system:serve")
            return True


async def healthz(request: web.Request) -> web.Response:
    """Alive: for anyone (load balancers, supervisors), so it says nothing else. What the
    process is doing (database threads, each channel's report) is for administrators:
    ``/console/system`` (console.views.system)."""
    return web.json_response({"status": "ok"})


HSTS = "max-age=31536000; includeSubDomains"


async def _strict_transport(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("Strict-Transport-Security", HSTS)


def add_security_headers(app: web.Application, settings: Settings) -> None:
    """Behind an https public URL, every answer tells browsers to come back only over https
    (a year, subdomains too). Over http the header would be ignored, or pin a test host."""
    if settings.public_url.lower().startswith("https://"):
        app.on_response_prepare.append(_strict_transport)


@web.middleware
async def busy_is_503(request: web.Request, handler):  # noqa: ANN001, ANN201
    """A database call that found every thread taken (and the wait over) is a 503 with
    Retry-After, not a 500: the client may try again in a moment."""
    try:
        return await handler(request)
    except DatabaseBusy as exc:
        log.warning("%s %s: database busy (%s)", request.method, request.path, exc)
        return web.json_response({"status": "busy", "detail": "please try again"}, status=503,
                                 headers={"Retry-After": "2"})


def _setup_ivr(app: web.Application, services: Services) -> None:
    ivr.survey_web.setup(app, services, ivr.web.setup(app, services))


def _setup_chat(app: web.Application, services: Services) -> None:
    chat.web.setup(app, services)
    web_chat = chat.resident_web.setup(app, services)
    # The console's grid pages offer each grid's QR code (console.views.grids.GRID_QR).
    services.extras[GRID_QR] = chat.qr.GridQrMaker(web_chat)


# Each channel mounts its routes.
CHANNELS = {"ivr": _setup_ivr, "chat": _setup_chat, "console": console.app.setup,
            "open311": console.open311.setup}


async def readyz(request: web.Request) -> web.Response:
    """Ready: the database answers and has its schema (503 otherwise). Files waiting in a
    spool for the media store make it ``degraded`` with their count (and those whose upload
    was given up, ``failed_uploads``), still 200: the instance takes calls and keeps what it
    hears; a balancer must not drop it for that."""
    services = request.app[SERVICES]

    def probe() -> tuple[int, int] | None:
        with services.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        if not has_tables(services.engine):
            return None
        with session_scope(services.engine) as session:
            pending = pending_count(session)
            return pending, failed_count(session) if pending else 0

    try:
        counts = await asyncio.wait_for(services.db.run(probe), 5)
    except Exception as exc:  # database down, restarting or busy
        return web.json_response({"status": "unavailable", "database": str(exc)[:200]}, status=503)
    if counts is None:
        return web.json_response({"status": "unavailable", "database": "schema missing"}, status=503)
    pending, failed = counts
    if failed:  # given up after media.upload_attempts: kept in a spool, someone must look
        return web.json_response({"status": "degraded", "media": "uploads failed", "pending_uploads": pending,
                                  "failed_uploads": failed})
    if pending:
        return web.json_response({"status": "degraded", "media": "uploads pending", "pending_uploads": pending})
    return web.json_response({"status": "ready", "pending_uploads": 0})


# Young-generation collections this far apart, full ones rare (Python's default is 700, 10, 10).
SERVER_GC_THRESHOLDS = (20_000, 20, 20)


def settle_garbage_collector() -> None:
    """For a long-running server, once it has started: what start-up made (modules, models,
    templates, the routing indexes' code) lives as long as the process, so it is frozen out
    of the collector's way, and collections run less often. A full collection walks every
    object while holding the GIL: the console's database threads and the event loop all
    wait for it (bench/console.py: the dashboard's slowest requests were these pauses)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*SERVER_GC_THRESHOLDS)


def build_app(
    settings: Settings | None = None,
    *,
    engine: Engine | None = None,
    speech: Any = None,
    channels: tuple[str, ...] = ("ivr", "chat", "console", "open311"),
    run_jobs: bool = True,
    server_gc: bool = False,
) -> web.Application:
    """The one web app of every channel. ``server_gc``: settle the garbage collector once the
    app has started (``gridline serve``; off in tests, which build many apps in one process)."""
    wire()  # what follows a case change, before any channel can change one
    settings = settings or get_settings()
    engine = engine or engine_from_settings(settings)
    # A bad GRIDLINE_RULES (or a sibling) stops the start, with one line naming the key.
    load_every_file()
    rules = load_rules()
    unknown = [name for name in channels if name not in CHANNELS]
    if unknown:
        raise ValueError(f"unknown channel(s) {', '.join(unknown)}; known: {', '.join(CHANNELS)}")
    services = Services(settings=settings, engine=engine, jobs=JobRunner(engine, reports_orphans=True), speech=speech)
    db = services.db
    services.jobs.db = db.run
    # The metrics' middleware first: it counts every answer (503s included) and gives every
    # log line of the request its id. Admission next: a request over the limit is refused
    # before any handler (or database call) starts.
    metrics = Metrics(services)
    admission = services.admission
    # Bodies aiohttp reads for a handler (console forms, Open311) are small forms; webhooks read
    # their own bodies with their own bounds (Twilio 64 KiB, Telegram 1 MiB). Larger: 413.
    app = web.Application(client_max_size=int(rules["limits"]["form_body_bytes"]),
                          middlewares=[metrics.middleware, admission.middleware, busy_is_503])
    app[SERVICES] = services
    install_metrics(app, metrics)
    services.gauges["gridline_db_threads"] = lambda: db.threads
    services.gauges["gridline_db_threads_in_use"] = lambda: db.busy
    services.gauges["gridline_db_calls_waiting"] = lambda: db.waiting
    services.gauges["gridline_http_requests_admitted"] = lambda: admission.in_flight
    services.gauges["gridline_http_admission_limit"] = lambda: admission.limit
    services.extras.setdefault("health", {})["jobs"] = services.jobs.health  # for /console/system
    add_security_headers(app, settings)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)

    for name in channels:
        CHANNELS[name](app, services)
    speech = services.speech
    if speech is not None and hasattr(speech, "backlog_seconds"):  # a SpeechPool (chat voice notes too)
        services.gauges.setdefault("gridline_speech_jobs_in_flight", lambda: speech.busy)
        services.gauges.setdefault("gridline_speech_backlog_seconds", speech.backlog_seconds)

    async def sla_sweep(job) -> None:  # noqa: ANN001
        escalated = await db.run(escalate_overdue, engine)
        if escalated:
            log.info("sla sweep escalated %d case(s): %s", len(escalated), ", ".join(escalated))

    services.jobs.register(SLA_SWEEP_JOB, sla_sweep)
    services.jobs.register(MEDIA_UPLOAD_JOB, upload_handler(
        engine, services.media, services.spool, UploadPolicy.from_rules(rules)))

    check_every = float(rules["sweeps"]["schedule_check_seconds"])

    async def schedule_sweeps() -> None:
        while True:
            try:
                await db.run(schedule_sweep, engine)
                services.jobs.wake()
            except Exception:  # database restarting or busy: try at the next check
                log.exception("could not schedule the SLA sweep")
            await asyncio.sleep(check_every)

    async def warm_indexes() -> None:
        try:
            await db.run(indexes_for, engine)
        except Exception:  # the first request builds them instead
            log.warning("could not build the routing indexes at start", exc_info=True)

    async def jobs_lifecycle(app: web.Application):
        loop = asyncio.get_running_loop()
        # Built in the background, so start-up does not wait and the first resident does not pay.
        warming = loop.create_task(warm_indexes(), name="gridline-warm-indexes")
        ticker = None
        if run_jobs:
            # Jobs are held in the name of this instance's lease: killed, its jobs are due
            # again once the lease ran out (core.platform.jobs.claim), not after 5 minutes.
            # (Started first: the channels' tickers look at ``jobs.running`` as they start.)
            services.jobs.name = services.instance.id
            services.jobs.start()
            await services.instance.start()
            ticker = loop.create_task(schedule_sweeps(), name="gridline-sla-ticker")
        yield
        warming.cancel()
        if ticker is not None:
            ticker.cancel()
        await services.jobs.stop()
        if run_jobs:
            await services.instance.stop()

    app.cleanup_ctx.append(jobs_lifecycle)

    async def close_database_threads(_app: web.Application) -> None:
        # Last: the channels' own clean-up (the hotline's last handover rows, its lease)
        # still goes through these threads. A cleanup_ctx's end runs before every on_cleanup.
        await asyncio.get_running_loop().run_in_executor(None, db.shutdown)

    app.on_cleanup.append(close_database_threads)
    if server_gc:
        async def settle(_app: web.Application) -> None:
            settle_garbage_collector()

        app.on_startup.append(settle)
    return app
