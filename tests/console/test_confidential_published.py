"""A confidential case (保密处理) as Open311 publishes it and as the reports list it, on both
databases: no name, phone or number of three digits or more in the published words, and
no household address in a report (PDF/XLSX/CSV are drawn from the same tables)."""

from __future__ import annotations

import io
import json

import pytest
from aiohttp.test_utils import TestClient, TestServer
from openpyxl import load_workbook

from console import report_files
from core import actions
from core.cases.models import Channel
from core.platform.clock import utcnow
from core.platform.db import session_scope
from core.platform.settings import Settings
from core.reporting import reports
from gridline.app import build_app
from tests.core.district import build_district

TZ = "Asia/Shanghai"
SAID = "我是陈阿婆，电话13800138000，住9幢2单元301室，楼下路灯坏了，物业收了300元也不修"
HOME = "罗布社区洋坊新村9幢2单元301室"  # the district resident's household (tests/core/district.py)


def _file(session, district, *, confidential: bool, key: str) -> str:
    case, _ = actions.submit_petition(session, actions.Petition(
        channel=Channel.hotline, description=SAID, idempotency_key=key, resident_id=district.resident.id,
        contact_phone=district.resident.phone, category_code="streetlight", confidential=confidential))
    return case.number


@pytest.fixture
def filed(engine) -> dict[str, str]:
    with session_scope(engine) as session:
        district = build_district(session)
        return {"secret": _file(session, district, confidential=True, key="c|1"),
                "plain": _file(session, district, confidential=False, key="c|2")}


@pytest.fixture
async def api(engine, filed, tmp_path):
    app = build_app(Settings(data_dir=tmp_path), engine=engine, channels=("open311",), run_jobs=False)
    async with TestClient(TestServer(app)) as client:
        yield client


async def _published(api, number: str) -> str:
    resp = await api.get(f"/open311/v2/requests/{number}.json")
    assert resp.status == 200, await resp.text()
    (row,) = json.loads(await resp.text())
    return row["description"]


async def test_open311_publishes_a_confidential_case_with_every_number_masked(api, filed):
    secret = await _published(api, filed["secret"])
    plain = await _published(api, filed["plain"])
    for gone in ("陈阿婆", "阿婆", "13800138000", "301", "300"):
        assert gone not in secret, gone
    assert "楼下路灯坏了" in secret
    # the same words of an ordinary case keep the sum (fewer than seven digits): the difference is the mark
    assert "300元" in plain and "13800138000" not in plain
    listed = await api.get("/open311/v2/requests.json")
    body = await listed.text()
    assert "300元" in body and body.count("300元") == 1


def _monthly(engine) -> reports.Report:
    now = utcnow()
    month = reports.local_today(TZ, now).strftime("%Y-%m")
    with session_scope(engine) as session:
        return reports.report(session, "monthly", reports.parse_period(month), reports.make_filters(session),
                              tz=TZ, as_of=now)


def test_a_report_lists_no_household_of_a_confidential_case(engine):
    with session_scope(engine) as session:
        district = build_district(session)
        for n in range(2):
            _file(session, district, confidential=True, key=f"s|{n}")
    report = _monthly(engine)
    assert report.repeats == []
    for text in (report_files.render(report, "csv", tz=TZ).body.decode("utf-8-sig"), _xlsx_text(report),
                 report_files.html(report, tz=TZ)):
        assert HOME not in text and "13800138000" not in text and "陈阿婆" not in text


def _xlsx_text(report: reports.Report) -> str:
    book = load_workbook(io.BytesIO(report_files.render(report, "xlsx", tz=TZ).body))
    return "\n".join(str(cell) for sheet in book.worksheets for row in sheet.iter_rows(values_only=True)
                     for cell in row if cell is not None)


def test_the_same_cases_not_confidential_are_a_repeated_complaint_at_the_home(engine):
    """The control: without the mark the two cases are listed at the resident's home."""
    with session_scope(engine) as session:
        district = build_district(session)
        for n in range(2):
            _file(session, district, confidential=False, key=f"p|{n}")
    report = _monthly(engine)
    assert [r.place for r in report.repeats] == [HOME]
    assert HOME in report_files.render(report, "csv", tz=TZ).body.decode("utf-8-sig")
    assert HOME in _xlsx_text(report)
