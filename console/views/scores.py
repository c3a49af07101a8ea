"""The worker scores page (``/console/scores``): a quarter's 70/30 scores
(``core.reporting.scores``) with their parts, of the workers the account may see (the same
``report_scope`` as the dashboard: a worker account sees its grids' workers and itself)."""

from __future__ import annotations

from aiohttp import web

from console import db, report_files
from console.access import report_scope
from console.views.common import lang, needs_page, principal, render
from core.errors import InvalidInput
from core.platform.clock import utcnow
from core.platform.rules import load_rules
from core.platform.settings import get_settings
from core.reporting import reports


def _scores(session, p, quarter_text: str):  # noqa: ANN001, ANN202
    tz = get_settings().timezone
    today = reports.local_today(tz)
    if quarter_text:
        period = reports.parse_period(quarter_text)
        if period.kind != "quarter":
            raise InvalidInput(f"a quarter is written like 2026Q4, not {quarter_text!r}",
                               code="period.invalid_quarter", text=quarter_text)
    else:
        period = reports.current_period("quarter", today)
    rows = reports.worker_scores(session, period, report_scope(session, p), reports.make_filters(session), tz,
                                 utcnow())
    current = reports.current_period("quarter", today)
    quarters = [current, current.previous(), current.previous().previous(), current.previous().previous().previous()]
    return period, rows, quarters, reports.partial_until(period, today)


@needs_page("scores")
async def scores(request: web.Request) -> web.Response:
    p = principal(request)
    quarter = (request.query.get("quarter") or "").strip()[:20]
    period, rows, quarters, until = await db.run(request, _scores, p, quarter)
    rules = load_rules()["scores"]
    return render(request, "scores.html", {
        "period": period, "period_words": period.label_words(lang(request)), "until": until, "rows": rows,
        "quarters": quarters, "rules": rules, "own": not p.sees_all, "q": quarter,
        "num": report_files.num})


def setup(app: web.Application) -> None:
    app.router.add_get("/scores", scores)
