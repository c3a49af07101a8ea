"""The dashboard and report downloads over a real server on both databases: the figures on
the page equal hand-written SQL, a worker sees its own grids' figures, downloads are
scoped and audited, bad filters get a clear page."""

from __future__ import annotations

import csv
import io
import re

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlmodel import select

from core.people.models import AuditEntry
from core.platform import clock
from core.platform.db import session_scope
from core.platform.settings import Settings
from gridline.app import build_app
from tests.console.conftest import add_users, login
from tests.core.reporting.test_reports import sql, totals_sql
from tests.core.reports_world import NOV_BOUNDS, NOW, build_reports_world

RATE = re.compile(r'data-rate="(\w+)" data-numerator="(\d+)"(?: data-denominator="(\d+)")?')


@pytest.fixture
def world(engine):
    clock.freeze(NOW)
    w = build_reports_world(engine)
    with session_scope(engine) as session:
        add_users(session, w.district)
    return w


@pytest.fixture
async def client(engine, world, tmp_path):
    app = build_app(Settings(data_dir=tmp_path), engine=engine, channels=("console",), run_jobs=False)
    async with TestClient(TestServer(app)) as c:
        yield c


def rates_on(html: str) -> dict[str, tuple[int, int | None]]:
    return {name: (int(num), int(den) if den else None) for name, num, den in RATE.findall(html)}


def expected_rates(totals: dict) -> dict[str, tuple[int, int | None]]:
    return {"response": (totals["responded_on_time"], totals["dispatched"]),
            "closure": (totals["closed"], totals["received"]),
            "on_time": (totals["resolved_on_time"], totals["reported_done"]),
            "satisfaction": (totals["satisfied"], totals["surveyed"]),
            "received": (totals["received"], None)}


async def test_dashboard_figures_equal_sql_for_a_manager_and_for_a_worker(client, engine, world):
    await login(client, "admin")
    resp = await client.get("/console/dashboard?period=2026-11&level=micro")
    html = await resp.text()
    assert resp.status == 200, html
    assert rates_on(html) == expected_rates(totals_sql(engine, *NOV_BOUNDS))
    for panel in ("trend", "channels", "by_category", "by_grid", "most_open", "most_overdue"):
        assert f'data-chart="{panel}"' in html, panel
    assert "洋坊新村2号微网格" in html and "近90天每日受理与办结" in html

    # W-M2's account (its worker and micro grid 2): its own grids' figures only
    await login(client, "w2")
    html = await (await client.get("/console/dashboard?period=2026-11")).text()
    micro2 = world.district.grids["micro2"].id
    scoped = totals_sql(engine, *NOV_BOUNDS, "AND (c.worker_id = :w OR c.grid_id = :g)",
                        w=world.district.workers["W-M2"].id, g=micro2)
    assert rates_on(html) == expected_rates(scoped)
    assert scoped["received"] < totals_sql(engine, *NOV_BOUNDS)["received"]
    assert "仅含您的网格" in html and "洋坊新村1号微网格" not in html

    # a category filter
    await login(client, "viewer")
    html = await (await client.get("/console/dashboard?period=2026-11&category=flying_lead")).text()
    cat = world.district.categories["flying_lead"].id
    assert rates_on(html) == expected_rates(totals_sql(engine, *NOV_BOUNDS, "AND c.category_id = :k", k=cat))


async def test_bad_filters_get_a_clear_page(client, world):
    await login(client, "op")
    for query, words in (("period=2026-13", "2026-13"), ("level=planet", "planet"), ("category=nope", "nope"),
                         ("grid=999", "999")):
        resp = await client.get(f"/console/dashboard?{query}")
        assert resp.status == 422, query
        assert words in await resp.text()
    resp = await client.get("/console/reports/download?kind=daily&format=csv")
    assert resp.status == 422
    resp = await client.get("/console/reports/download?kind=monthly&period=2026-11&format=doc")
    assert resp.status == 422
    resp = await client.get("/console/reports/download?kind=monthly&period=2026-W48&format=csv")
    assert resp.status == 422



async def test_a_bad_period_is_said_in_the_readers_language(client, world):
    await login(client, "op")
    page = await (await client.get("/console/dashboard?period=2026-13")).text()
    assert "“2026-13”不是有效的期间" in page and "not a period" not in page
    page = await (await client.get("/console/dashboard?period=2026-13&lang=en")).text()
    assert "2026-13 is not a period: write a week 2026-W48" in page and "不是有效的期间" not in page
    resp = await client.get("/console/reports/download?kind=monthly&period=2026-W48&format=csv")
    assert resp.status == 422 and "“2026-W48”不是这种报表的期间" in await resp.text()


async def test_a_report_is_titled_in_the_readers_language(client, world):
    await login(client, "sup")
    zh = await (await client.get("/console/reports/download?kind=monthly&period=2026-11&format=html&lang=zh")).text()
    en = await (await client.get("/console/reports/download?kind=monthly&period=2026-11&format=html&lang=en")).text()
    assert "2026年11月诉求办理月通报</h1>" in zh
    assert ": Monthly report of petitions, 2026-11</h1>" in en and "诉求办理月通报" not in en

def export_keys(lang: str = "zh") -> tuple[dict[str, str], dict[str, str]]:
    """The words of the export's tables and columns back to their keys (each word names one)."""
    from console import report_files
    from console.i18n import catalogue
    from core.reporting.reports import RATE_NAMES

    columns = set(catalogue(lang)["export"]["columns"]) | {
        f"{r}_{part}{when}" for r in RATE_NAMES for part in ("numerator", "denominator", "rate")
        for when in ("", "_previous")}
    words = {report_files.column_words(k, lang, "Asia/Shanghai"): k for k in columns}
    assert len(words) == len(columns), "two columns with the same words"
    # a partial period's file heads its comparison columns 上期同期
    words |= {report_files.column_words(k, lang, "Asia/Shanghai", partial=True): k for k in columns
              if k not in report_files.SAME_DAYS.values()}
    tables = {report_files.table_words(k, lang): k for k in catalogue(lang)["export"]["tables"]}
    return tables, words


def csv_blocks(body: bytes, lang: str = "zh") -> dict[str, list[dict]]:
    """The CSV's blocks by table key, each row by column key (the file says them in words)."""
    table_keys, column_keys = export_keys(lang)
    text = body.decode("utf-8-sig")
    blocks, name, rows = {}, None, []
    for row in csv.reader(io.StringIO(text)):
        if row and row[0].startswith("# "):
            name, rows = table_keys[row[0][2:]], []
            blocks[name] = rows
        elif row and name is not None:
            rows.append(row)
    return {k: [dict(zip([column_keys[w] for w in v[0]], r, strict=True)) for r in v[1:]] for k, v in blocks.items()}


async def test_report_downloads_are_scoped_and_audited(client, engine, world):
    await login(client, "sup")
    for fmt, kind in (("pdf", "application/pdf"), ("xlsx", "spreadsheetml"), ("html", "text/html"),
                      ("csv", "text/csv")):
        resp = await client.get(f"/console/reports/download?kind=monthly&period=2026-11&format={fmt}")
        body = await resp.read()
        assert resp.status == 200 and kind in resp.headers["Content-Type"], (fmt, body[:300])
        assert f"gridline-monthly-2026-11.{fmt}" in resp.headers["Content-Disposition"]
        assert resp.headers["Cache-Control"] == "private, no-store"
    whole = csv_blocks(body)
    totals = totals_sql(engine, *NOV_BOUNDS)
    assert int(whole["rates"][0]["received"]) == totals["received"]
    assert int(whole["rates"][0]["closure_numerator"]) == totals["closed"]

    await login(client, "w2")
    resp = await client.get("/console/reports/download?kind=monthly&period=2026-11&format=csv")
    mine = csv_blocks(await resp.read())
    micro2 = world.district.grids["micro2"].id
    scoped = totals_sql(engine, *NOV_BOUNDS, "AND (c.worker_id = :w OR c.grid_id = :g)",
                        w=world.district.workers["W-M2"].id, g=micro2)
    assert int(mine["rates"][0]["received"]) == scoped["received"]
    assert {r["code"] for r in mine["scores"]} <= {"W-M2"}
    numbers = {r["number"] for r in mine["overdue"]}
    allowed = {n for (n,) in sql(engine, 'SELECT number FROM "case" WHERE worker_id = :w OR grid_id = :g',
                                 w=world.district.workers["W-M2"].id, g=micro2)}
    assert numbers and numbers <= allowed
    with session_scope(engine) as session:
        rows = session.exec(select(AuditEntry).where(AuditEntry.action == "report.download")
                            .order_by(AuditEntry.id)).all()
    assert [(r.actor, r.target_id, r.detail["format"], r.detail["scope"]) for r in rows][-1] == (
        "console:w2", "monthly:2026-11", "csv", "own")
    assert len(rows) == 5 and all(r.remote for r in rows)


@pytest.mark.skipif(not __import__("pathlib").Path("/usr/bin/chromium").exists()
                    and not __import__("tests.conftest", fromlist=["IN_CI"]).IN_CI,
                    reason="Debian's chromium is not installed (scripts/bootstrap.sh dev installs it)")
async def test_dashboard_charts_render_in_a_real_browser_with_no_network(engine, world, tmp_path, request):
    """Debian's Chromium, every request not to our server aborted (and none made): each chart
    is an SVG that the browser laid out with marks of non-zero size."""
    from playwright.async_api import async_playwright

    from tests.console.conftest import PASSWORD
    from tests.console.test_browser import ARTIFACTS, CHROMIUM, FLAGS

    clock.freeze(None)  # the browser's session cookie lives in real time
    app = build_app(Settings(data_dir=tmp_path), engine=engine, channels=("console",), run_jobs=False)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")
    shots = ARTIFACTS / request.node.callspec.id
    shots.mkdir(parents=True, exist_ok=True)
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            context = await browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 1000})
            outside: list[str] = []

            async def only_ours(route):  # noqa: ANN001, ANN202
                if route.request.url.startswith(base):
                    await route.continue_()
                else:
                    outside.append(route.request.url)
                    await route.abort()

            await context.route("**/*", only_ours)
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto(f"{base}/console/login?next=/console/dashboard%3Fperiod%3D2026-11%26level%3Dmicro")
            await page.fill("input[name=name]", "viewer")
            await page.fill("input[name=password]", PASSWORD)
            await page.click("button[type=submit]")
            await page.wait_for_url(re.compile(r".*/console/dashboard\?period=2026-11&level=micro$"))
            charts = await page.eval_on_selector_all("svg.chart", """svgs => svgs.map(s => {
                const box = s.getBoundingClientRect();
                const marks = [...s.querySelectorAll('rect.bar, polyline.series')]
                    .map(m => m.getBBox()).filter(b => b.width > 0 && b.height >= 0);
                return {name: s.dataset.chart, width: box.width, height: box.height, marks: marks.length};
            })""")
            by_name = {c["name"]: c for c in charts}
            assert set(by_name) == {"trend", "channels", "by_category", "by_grid", "most_open", "most_overdue"}
            for name, chart in by_name.items():
                assert chart["width"] > 100 and chart["height"] > 20, chart
                assert chart["marks"] > 0, name
            assert by_name["trend"]["marks"] == 2 and by_name["channels"]["marks"] == 4
            assert await page.inner_text("[data-rate=closure] .value") == "25.0%"
            await page.screenshot(path=str(shots / "dashboard.png"), full_page=True)
            print(f"\ndashboard screenshot: {shots / 'dashboard.png'}")
            assert outside == [] and errors == []
            await browser.close()
    finally:
        await server.close()
