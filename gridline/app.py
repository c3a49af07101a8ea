"""The one aiohttp application: health checks, then each channel mounts its routes."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from sqlalchemy import Engine, text

from core.db import has_tables, make_engine, session_scope, upgrade
from core.runner import JobRunner
from core.settings import Settings, get_settings
from core.sweeps import escalate_overdue, schedule_sweep

log = logging.getLogger(__name__)


@dataclass
class Services:
    """What the channels share; built once by the composition root."""

    settings: Settings
    engine: Engine
    jobs: JobRunner
    speech: Any = None  # speech_models pool, when a model is configured
    extras: dict[str, Any] = field(default_factory=dict)


SERVICES = web.AppKey("gridline_services", Services)


def prepare_database(engine: Engine, *, load_demo: bool) -> bool:
    """Upgrade the schema; on an empty database load the demo district. Returns whether
    the demo was loaded."""
    upgrade(engine)
    if not load_demo:
        return False
    from sqlmodel import select

    from core.models import Grid

    with session_scope(engine) as session:
        if session.exec(select(Grid.id).limit(1)).first() is not None:
            return False
        from core.demo import load_demo as load

        load(session)
        return True


async def healthz(request: web.Request) -> web.Response:
    """Alive, plus what each channel reports (``services.extras["health"]``: name → async
    callable), e.g. the hotline's recognition backlog. A report that fails or is slow is
    shown as such; it does not make the process unhealthy."""
    body: dict[str, Any] = {"status": "ok"}
    for name, report in request.app[SERVICES].extras.get("health", {}).items():
        try:
            body[name] = await asyncio.wait_for(report(), 3)
        except Exception as exc:  # database away: the process itself is still alive
            body[name] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    return web.json_response(body)


async def readyz(request: web.Request) -> web.Response:
    services = request.app[SERVICES]

    def probe() -> bool:
        with services.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return has_tables(services.engine)

    try:
        ok = await asyncio.wait_for(asyncio.to_thread(probe), 5)
    except Exception as exc:  # database down or restarting
        return web.json_response({"status": "unavailable", "database": str(exc)[:200]}, status=503)
    if not ok:
        return web.json_response({"status": "unavailable", "database": "schema missing"}, status=503)
    return web.json_response({"status": "ready"})


def build_app(
    settings: Settings | None = None,
    *,
    engine: Engine | None = None,
    speech: Any = None,
    channels: tuple[str, ...] = ("ivr", "chat"),
    run_jobs: bool = True,
) -> web.Application:
    settings = settings or get_settings()
    engine = engine or make_engine(settings.effective_database_url)
    services = Services(settings=settings, engine=engine, jobs=JobRunner(engine), speech=speech)
    app = web.Application(client_max_size=25 * 1024 * 1024)
    app[SERVICES] = services
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)

    for name in channels:
        module = __import__(f"{name}.web", fromlist=["setup"])
        module.setup(app, services)

    async def sla_sweep(job) -> None:  # noqa: ANN001
        escalated = await asyncio.to_thread(escalate_overdue, engine)
        if escalated:
            log.info("sla sweep escalated %d case(s): %s", len(escalated), ", ".join(escalated))

    services.jobs.register("sla_sweep", sla_sweep)

    async def schedule_sweeps() -> None:
        while True:
            try:
                await asyncio.to_thread(schedule_sweep, engine)
                services.jobs.wake()
            except Exception:  # database restarting: try at the next slot
                log.exception("could not schedule the SLA sweep")
            await asyncio.sleep(60)

    async def jobs_lifecycle(app: web.Application):
        ticker = None
        if run_jobs:
            services.jobs.start()
            ticker = asyncio.get_running_loop().create_task(schedule_sweeps(), name="gridline-sla-ticker")
        yield
        if ticker is not None:
            ticker.cancel()
        await services.jobs.stop()

    app.cleanup_ctx.append(jobs_lifecycle)
    return app
