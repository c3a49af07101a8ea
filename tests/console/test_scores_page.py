"""The worker scores page (/console/scores) over a real server on both databases, with the
clock frozen mid-quarter: each worker's 70/30 parts as core computes them, "样本不足" below the
rules' minimum, scoped as the dashboard is, the partial quarter labelled; the dashboard and the
report files say the same about a partial period."""

from __future__ import annotations

import re
from datetime import date

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlmodel import select

from console.access import principal_for, report_scope
from console.models import ConsoleUser
from core.platform import clock
from core.platform.db import session_scope
from core.platform.settings import Settings
from core.reporting import reports
from core.reporting.scores import quarter_scores
from gridline.app import build_app
from tests.console.conftest import add_users, login
from tests.console.test_dashboard import csv_blocks
from tests.core.reports_world import NOW, build_reports_world

ROW = re.compile(r'<tr data-code="([^"]+)"(?: class="too-few")?>(.*?)</tr>', re.S)
CELL = re.compile(r"<td[^>]*>(.*?)</td>", re.S)


@pytest.fixture
def world(engine):
    clock.freeze(NOW)  # Wednesday 2 December 2026: the middle of Q4 and the start of December
    w = build_reports_world(engine)
    with session_scope(engine) as session:
        add_users(session, w.district)
    return w


@pytest.fixture
async def client(engine, world, tmp_path):
    app = build_app(Settings(data_dir=tmp_path), engine=engine, channels=("console",), run_jobs=False)
    async with TestClient(TestServer(app)) as c:
        yield c


def rows_on(html: str) -> dict[str, list[str]]:
    return {code: [c.strip() for c in CELL.findall(cells)] for code, cells in ROW.findall(html)}


async def test_the_quarters_scores_with_their_parts_and_too_few_cases(client, engine, world):
    with session_scope(engine) as session:
        expected = quarter_scores(session, "2026Q4", as_of=NOW)
    too_few = {s.code for s in expected if s.too_few}
    standing = {s.code for s in expected if s.standing_score is not None}
    assert too_few and standing, "the world must show both kinds"

    await login(client, "admin")
    resp = await client.get("/console/scores")
    html = await resp.text()
    assert resp.status == 200, html
    assert "2026年第四季度" in html and "截至12月2日" in html  # the current quarter, partial
    assert "工作分（70%）" in html and "评价分（30%）" in html and "少于 3 件" in html
    shown = rows_on(html)
    assert list(shown) == [s.code for s in expected]  # in core's order: standing scores first
    for s in expected:
        cells = shown[s.code]
        assert cells[1] == str(s.assignments)
        assert cells[2] == f"{s.response_on_time}/{s.response_counted}"
        assert cells[3] == f"{s.resolution_on_time}/{s.resolution_counted}"
        assert cells[5] == ("—" if s.work_score is None else f"{s.work_score:.2f}")
        assert cells[7] == ("—" if s.evaluation_score is None else f"{s.evaluation_score:.2f}")
        assert cells[8] == ("样本不足" if s.too_few else ("—" if s.score is None else f"{s.score:.2f}"))

    resp = await client.get("/console/scores?quarter=2026Q3")
    html = await resp.text()
    assert resp.status == 200 and "2026年第三季度" in html and 'id="partial"' not in html

    resp = await client.get("/console/scores?quarter=2026-11")
    html = await resp.text()
    assert resp.status == 422 and "不是有效的季度" in html

    resp = await client.get("/console/scores?lang=en")
    html = await resp.text()
    assert "Worker scores" in html and "Work (70%)" in html
    assert ("Too few cases" in html) and "样本不足" not in html


async def test_a_worker_sees_the_scores_of_its_grids_only(client, engine, world):
    with session_scope(engine) as session:
        user = session.exec(select(ConsoleUser).where(ConsoleUser.name == "w2")).one()
        scope = report_scope(session, principal_for(session, user))
        allowed = {s.code for s in reports.worker_scores(session, reports.parse_period("2026Q4"), scope,
                                                          reports.make_filters(session), "Asia/Shanghai", NOW)}
        everybody = {s.code for s in quarter_scores(session, "2026Q4", as_of=NOW)}
    assert allowed and allowed < everybody
    await login(client, "w2")
    html = await (await client.get("/console/scores")).text()
    assert set(rows_on(html)) == allowed
    assert 'href="/console/scores"' in html  # in the worker's menu


async def test_the_dashboard_and_the_report_files_say_the_period_is_partial(client, engine, world):
    await login(client, "admin")
    html = await (await client.get("/console/dashboard")).text()  # December, two days in
    assert 'id="partial"' in html and "本期未满，截至12月2日" in html
    html = await (await client.get("/console/dashboard?period=2026-11")).text()
    assert 'id="partial"' not in html

    resp = await client.get("/console/reports/download?kind=monthly&period=2026-12&format=html")
    html = await resp.text()
    assert resp.status == 200 and "（截至12月2日）" in html
    assert "与上期同期（2026-11-01..2026-11-02）比较" in html
    assert "样本不足" in html  # the quarter so far has workers below the minimum
    body = await (await client.get("/console/reports/download?kind=monthly&period=2026-12&format=csv")).read()
    blocks = csv_blocks(body)
    assert blocks["summary"][0]["until"] == date(2026, 12, 2).isoformat()
    assert blocks["summary"][0]["previous_period"] == "2026-11-01..2026-11-02"
    assert any(r["sample"] == "样本不足" and r["score"] == "" for r in blocks["scores"])
    whole = csv_blocks(await (await client.get(
        "/console/reports/download?kind=monthly&period=2026-11&format=csv")).read())
    assert whole["summary"][0]["until"] == "" and whole["summary"][0]["previous_period"] == "2026-10"
