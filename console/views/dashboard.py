"""The managers' dashboard (``/console/dashboard``) and report downloads
(``/console/reports/download``). Figures come from ``core.reporting.reports``, counted within what the
account may see (``console.access.report_scope``: a worker account sees its grids' figures).
A download is an audit row: a report lists case numbers and places."""

from __future__ import annotations

import asyncio

from aiohttp import web
from sqlmodel import select

from console import charts, db, report_files
from console.access import report_scope
from console.i18n import t
from console.views.common import audit_view, lang, needs_page, principal, render, who
from core.cases.models import Category
from core.errors import InvalidInput
from core.places.models import GridLevel
from core.platform.clock import local_text
from core.platform.settings import get_settings
from core.reporting import reports

# Rendering a PDF takes a core for a second or two: at most this many at once per process.
PDF_AT_ONCE = asyncio.Semaphore(2)


def _tz() -> str:
    return get_settings().timezone


def _dashboard_ask(session, p, query, language):  # noqa: ANN001, ANN202
    tz = _tz()
    today = reports.local_today(tz)
    period = reports.parse_period(query["period"]) if query.get("period") else reports.current_period("month", today)
    filters = reports.make_filters(session, level=query.get("level") or None,
                                   category_code=query.get("category") or None, grid_code=query.get("grid") or None)
    ask = reports.dashboard_ask(period, filters, scope=report_scope(session, p), tz=tz, language=language)
    categories = session.exec(select(Category).order_by(Category.code)).all()
    suggestions = [reports.current_period("month", today), reports.last_complete("month", today),
                   reports.current_period("week", today), reports.last_complete("week", today),
                   reports.current_period("quarter", today), reports.last_complete("quarter", today)]
    return ask, categories, suggestions


def dashboard_charts(data: reports.Dashboard, language: str) -> dict:
    def tr(key: str) -> str:
        return t(language, key)

    return {
        "by_category": charts.bars("by_category", tr("dashboard.by_category"),
                                   [(c.name, c.value) for c in data.by_category], empty=tr("dashboard.none")),
        "by_grid": charts.bars("by_grid", tr("dashboard.by_grid"), [(c.name, c.value) for c in data.by_grid[:20]],
                               colour=charts.PALETTE[1], empty=tr("dashboard.none")),
        "trend": charts.lines("trend", tr("dashboard.trend"), [d.day for d in data.trend],
                              [(tr("dashboard.trend_received"), [d.received for d in data.trend]),
                               (tr("dashboard.trend_closed"), [d.closed for d in data.trend])]),
        "most_open": charts.bars("most_open", tr("dashboard.most_open"),
                                 [(x.name, x.open) for x in data.most_open], colour=charts.PALETTE[4],
                                 empty=tr("dashboard.none")),
        "most_overdue": charts.bars("most_overdue", tr("dashboard.most_overdue"),
                                    [(x.name, x.overdue) for x in data.most_overdue], colour=charts.PALETTE[3],
                                    empty=tr("dashboard.none")),
        "channels": charts.shares("channels", tr("dashboard.channels"),
                                  [(tr(f"channel.{c.code}"), c.value) for c in data.channels]),
    }


@needs_page("dashboard")
async def dashboard(request: web.Request) -> web.Response:
    p = principal(request)
    query = {k: (request.query.get(k) or "").strip()[:40] for k in ("period", "level", "category", "grid")}
    ask, categories, suggestions = await db.run(request, _dashboard_ask, p, query, lang(request))
    # The dashboard's lanes of queries at once, each on a connection of its own (core.reporting.reports).
    lanes = await asyncio.gather(*(db.run(request, reports.dashboard_lane, ask, lane)
                                   for lane in reports.DASHBOARD_LANES))
    data = reports.assemble_dashboard(ask, [part for lane in lanes for part in lane])
    language = lang(request)
    return render(request, "dashboard.html", {
        "d": data, "q": query, "categories": categories, "suggestions": suggestions,
        "levels": [lv.value for lv in GridLevel], "charts": dashboard_charts(data, language),
        "kinds": reports.KINDS, "formats": tuple(report_files.FORMATS), "own": not p.sees_all,
        "pct": report_files.pct, "as_of": local_text(data.as_of, tz=_tz()),
        "seconds": lambda v: report_files.seconds(v, language), "met_class": report_files.met_class,
        "met_code": report_files.met_code,
        "report_period": {k: reports.last_complete(reports.PERIOD_OF_KIND[k], reports.local_today(_tz())).label
                          for k in reports.KINDS},
    })


def _report(session, p, query, who_, language):  # noqa: ANN001, ANN202
    tz = _tz()
    kind = query["kind"]
    period = reports.period_for_report(kind, query.get("period") or None, reports.local_today(tz))
    filters = reports.make_filters(session, grid_code=query.get("grid") or None)
    data = reports.report(session, kind, period, filters, scope=report_scope(session, p), tz=tz, language=language)
    audit_view(session, who_, "report.download", "report", f"{kind}:{period.label}",
               {"grid": query.get("grid") or None, "format": query["format"], "scope": "all" if p.sees_all else "own"})
    return data


@needs_page("reports")
async def download(request: web.Request) -> web.StreamResponse:
    p = principal(request)
    query = {k: (request.query.get(k) or "").strip()[:40] for k in ("kind", "period", "grid", "format")}
    query["format"] = query["format"] or "pdf"
    if query["format"] not in report_files.FORMATS:
        raise InvalidInput(f"no report format {query['format']!r} (one of {', '.join(report_files.FORMATS)})",
                           code="console.no_report_format", format=query["format"])
    language = lang(request)
    data = await db.run(request, _report, p, query, who(request), language)
    if query["format"] == "pdf":
        async with PDF_AT_ONCE:
            out = await asyncio.to_thread(report_files.render, data, "pdf", tz=_tz(), lang=language)
    else:
        out = await asyncio.to_thread(report_files.render, data, query["format"], tz=_tz(), lang=language)
    disposition = "inline" if query["format"] == "html" else "attachment"
    return web.Response(body=out.body, headers={
        "Content-Type": out.content_type, "Content-Disposition": f'{disposition}; filename="{out.filename}"',
        "Cache-Control": "private, no-store"})


def setup(app: web.Application) -> None:
    app.router.add_get("/dashboard", dashboard)
    app.router.add_get("/reports/download", download)

