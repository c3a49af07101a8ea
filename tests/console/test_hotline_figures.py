"""The hotline's service figures where managers read them, on both databases: the dashboard
(beside the standard's 15 s and 95 % targets, green or red, in Mandarin with no raw codes), the
monthly report's PDF (read back with pdftotext), CSV and XLSX, and ``/metrics``."""

from __future__ import annotations

import html as htmllib
import io
import re
import subprocess

import pytest
from aiohttp.test_utils import TestClient, TestServer

from core.platform import clock
from core.platform.db import session_scope
from core.platform.settings import Settings
from gridline.app import build_app
from tests.console.conftest import add_users, login
from tests.console.test_dashboard import csv_blocks
from tests.console.test_report_files import needs_poppler
from tests.core.reporting.test_hotline import CALLS, as_expected, expected, write_calls
from tests.core.reports_world import NOV_BOUNDS, NOW, build_reports_world

TZ = "Asia/Shanghai"
NOV = expected(CALLS, *NOV_BOUNDS, TZ, None)["*"]
NOV_DAYS = expected(CALLS, *NOV_BOUNDS, TZ, "day")


@pytest.fixture
def world(engine):
    clock.freeze(NOW)
    w = build_reports_world(engine)
    write_calls(engine)
    with session_scope(engine) as session:
        add_users(session, w.district)
    return w


@pytest.fixture
async def client(engine, world, tmp_path):
    app = build_app(Settings(data_dir=tmp_path, metrics_token="scrape-me-please-0123"), engine=engine, channels=("console",),
                    run_jobs=False)
    async with TestClient(TestServer(app)) as c:
        yield c


def section(page: str) -> str:
    found = re.search(r'<section class="panel hotline-figures" id="hotline-figures">(.*?)</section>', page, re.S)
    assert found, "no hotline figures on the page"
    return found.group(1)


def visible_text(fragment: str) -> str:
    return htmllib.unescape(re.sub(r"<[^>]+>", " ", fragment))


async def test_the_dashboard_shows_the_figures_beside_the_standard_in_mandarin(client, world):
    await login(client, "admin")
    page = await (await client.get("/console/dashboard?period=2026-11")).text()
    part = section(page)
    want = as_expected(NOV)
    assert f'data-figure="offered" data-value="{want["offered"]}"' in part
    assert (f'data-figure="connection_rate" data-numerator="{want["answered"]}" '
            f'data-denominator="{want["offered"]}" data-met="no"') in part  # 6 of 7: below 95 %: red
    assert (f'data-figure="answered_in_time" data-numerator="{want["answered_in_time"]}" '
            f'data-denominator="{want["answered"]}" data-met="no"') in part  # one answered after 16.5 s
    assert f'data-figure="ended_before_case" data-value="{want["ended_before_case"]}" ' \
           f'data-filed="{want["filed_from_audio"]}"' in part
    assert f'data-figure="transfers" data-value="{want["transfers"]}" data-answered="{want["transfers_answered"]}"' in part
    assert 'class="rate missed"' in part
    # the days: 2 November met both targets (green), 1 November missed both (red)
    days = dict(re.findall(r'<tr data-day="([\d-]+)">(.*?)</tr>', part, re.S))
    assert sorted(days) == sorted(NOV_DAYS)
    assert days["2026-11-02"].count('class="met"') == 2 and days["2026-11-01"].count('class="missed"') == 2
    text = visible_text(part)
    for words in ("热线服务指标（GB/T 33358-2016）", "呼入量", "接通率", "15秒内接听", "标准：连续24小时接通率 ≥ 95.0%",
                  "标准：每个来电 15 秒内接听", "未建单即结束", "其中据录音建单", "转人工已接听", "转人工未接听",
                  "平均通话时长", "未达标", "16.5秒"):
        assert words in text, words
    assert not re.search(r"[A-Za-z]+_[A-Za-z_]+", text), "a raw code on the page"
    assert "hotline_figures." not in page

    english = section(await (await client.get("/console/dashboard?period=2026-11&lang=en")).text())
    assert "Hotline service figures" in english and "Connection rate" in english and "呼入量" not in english


async def test_a_worker_sees_no_district_hotline_figures(client, world):
    await login(client, "w2")
    page = await (await client.get("/console/dashboard?period=2026-11")).text()
    assert 'id="hotline-figures"' not in page


async def test_a_month_without_calls_says_so(client, world):
    await login(client, "admin")
    part = section(await (await client.get("/console/dashboard?period=2026-09")).text())
    assert "本期没有来电" in part and 'data-met="no"' not in part and 'data-met="yes"' not in part


@needs_poppler
async def test_the_monthly_report_carries_the_figures(client, world, tmp_path):
    await login(client, "sup")
    resp = await client.get("/console/reports/download?kind=monthly&period=2026-11&format=pdf")
    assert resp.status == 200
    pdf = tmp_path / "monthly.pdf"
    pdf.write_bytes(await resp.read())
    text = re.sub(r"\s+", " ", subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True,
                                              check=True).stdout)
    want = as_expected(NOV)
    assert "热线服务指标（GB/T 33358-2016）" in text
    assert f"{want['answered']}/{want['offered']} = 85.7%" in text  # 6 of 7 answered
    assert f"{want['answered_in_time']}/{want['answered']}" in text and "未达标" in text
    for day in NOV_DAYS:
        assert day in text, day

    resp = await client.get("/console/reports/download?kind=monthly&period=2026-11&format=csv")
    blocks = csv_blocks(await resp.read())
    per_day = {row["day"]: row for row in blocks["hotline_days"]}
    for day, b in NOV_DAYS.items():
        row = per_day[day]
        assert (int(row["offered"]), int(row["answered"]), int(row["answered_in_time"]),
                int(row["ended_before_case"]), int(row["filed_from_audio"]), int(row["transfers"]),
                int(row["transfers_answered"])) == (b["offered"], b["answered"], b["answered_in_time"],
                                                    b["ended_before_case"], b["filed_from_audio"], b["transfers"],
                                                    b["transfers_answered"]), day
    assert int(per_day["合计"]["offered"]) == NOV["offered"] and per_day["合计"]["connection_rate"] == "85.7%"
    hours = expected(CALLS, *NOV_BOUNDS, TZ, "hour")
    assert [r["hour"] for r in blocks["hotline_hours"]] == sorted(hours)

    resp = await client.get("/console/reports/download?kind=monthly&period=2026-11&format=xlsx")
    from openpyxl import load_workbook

    book = load_workbook(io.BytesIO(await resp.read()))
    sheet = book["热线每日"]
    header = [c.value for c in sheet[1]]
    rows = {r[0]: dict(zip(header, r, strict=True)) for r in sheet.iter_rows(min_row=2, values_only=True)}
    assert rows["2026-11-02"]["接通率"] == 1.0 and rows["合计"]["呼入量"] == NOV["offered"]


async def test_a_report_about_one_grid_carries_no_district_figures(client, world):
    await login(client, "sup")
    grid = world.district.grids["micro2"].code
    page = await (await client.get(f"/console/reports/download?kind=monthly&period=2026-11&format=html&grid={grid}")).text()
    assert 'id="hotline"' not in page
    whole = await (await client.get("/console/reports/download?kind=monthly&period=2026-11&format=html")).text()
    assert 'id="hotline"' in whole


async def test_metrics_expose_this_hour_day_and_month(client, engine, world):
    # NOW is 10:00 on 2 December local: December's calls so far are the three of its first day
    for _ in range(20):  # a scrape waits a second for the database's figures; a busy machine may need more
        resp = await client.get("/metrics", headers={"Authorization": "Bearer scrape-me-please-0123"})
        body = await resp.text()
        assert resp.status == 200, body
        if "gridline_hotline_calls{" in body:
            break
    dec = expected(CALLS, NOV_BOUNDS[1], NOW, TZ, None)["*"]

    def value(line: str) -> float:
        found = re.search(rf"^{re.escape(line)} (\S+)$", body, re.M)
        assert found, line
        return float(found.group(1))

    assert value('gridline_hotline_calls{figure="offered",period="month"}') == dec["offered"] == 3
    assert value('gridline_hotline_calls{figure="answered_in_time",period="month"}') == dec["answered_in_time"]
    assert value('gridline_hotline_calls{figure="ended_before_case",period="month"}') == dec["ended_before_case"]
    assert value('gridline_hotline_connection_ratio{period="month"}') == 1.0
    assert value('gridline_hotline_calls{figure="offered",period="day"}') == 0  # none yet on 2 December
    assert value("gridline_hotline_target_answer_seconds") == 15
    assert value("gridline_hotline_target_connection_ratio") == 0.95
    assert re.search(r'^gridline_hotline_connection_ratio\{period="day"\} NaN$', body, re.M)
