"""What the process is doing, for administrators (``/console/system``, and ``.json`` for
scripts): its database threads and each channel's report (jobs, the hotline's recognition
backlog and transcription jobs, …). ``/healthz`` says only that the process is alive."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from console.db import SERVICES
from console.nav import NAV, NavItem
from console.views.common import needs_page, render

NAV.append(NavItem("system", "/console/system", "nav.system"))
REPORT_SECONDS = 3


async def system_report(services) -> dict[str, Any]:  # noqa: ANN001
    """The database threads, then each channel's report (``services.extras["health"]``: name
    → async callable). A report that fails or is slow is shown as such."""
    body: dict[str, Any] = {"database_threads": services.db.stats()}
    for name, report in services.extras.get("health", {}).items():
        try:
            body[name] = await asyncio.wait_for(report(), REPORT_SECONDS)
        except Exception as exc:  # the database away: the page still answers
            body[name] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    return body


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2, default=str)


@needs_page("system")
async def page(request: web.Request) -> web.Response:
    report = await system_report(request.config_dict[SERVICES])
    return render(request, "system.html", {"sections": [(name, _dumps(value)) for name, value in report.items()]})


@needs_page("system")
async def as_json(request: web.Request) -> web.Response:
    return web.json_response(await system_report(request.config_dict[SERVICES]), dumps=_dumps)


def setup(app: web.Application) -> None:
    app.router.add_get("/system", page)
    app.router.add_get("/system.json", as_json)
