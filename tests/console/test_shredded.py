"""Nothing of a shredded case is reachable from the console or the Open311 API: its page
says it was shredded and shows no personal data, its files answer 404 (even a file left on
disk), a phone search does not find it, the API does not serve it."""

from __future__ import annotations

import json

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlmodel import select

from core.cases.models import Attachment, Case
from core.cases.privacy import parse_age, shred_older_than
from core.platform.db import session_scope
from core.platform.settings import Settings
from gridline.app import build_app
from tests.console.conftest import add_users, login
from tests.core.actions.test_privacy import PHONE, build_privacy_world


@pytest.fixture
def shredded(engine, tmp_path):
    pw = build_privacy_world(engine, tmp_path / "data")
    with session_scope(engine) as session:
        add_users(session, pw.reports.district)
        case = session.exec(select(Case).where(Case.number == pw.hotline)).one()
        attachment_id = session.exec(select(Attachment.id).where(Attachment.case_id == case.id)).one()
    shred_older_than(engine, parse_age("365d"), data_dir=pw.data_dir)
    pw.files[0].write_bytes(b"left behind by a restore")  # a leftover must still not be served
    return pw, attachment_id


async def test_a_shredded_case_is_not_reachable(engine, shredded):
    pw, attachment_id = shredded
    app = build_app(Settings(data_dir=pw.data_dir), engine=engine, channels=("console", "open311"), run_jobs=False)
    async with TestClient(TestServer(app)) as client:
        await login(client, "admin")
        page = await client.get(f"/console/cases/{pw.hotline}")
        html = await page.text()
        assert page.status == 200 and 'id="shredded"' in html and "销毁" in html
        for secret in (PHONE, "陈阿婆", "301", "CA-shred", "<audio"):
            assert secret not in html, secret
        served = await client.get(f"/console/cases/{pw.hotline}/files/{attachment_id}")
        assert served.status == 404
        found = await (await client.get(f"/console/search?phone={PHONE}")).text()
        assert pw.hotline not in found and pw.recent in found  # the recent case is still there
        one = await client.get(f"/open311/v2/requests/{pw.hotline}.json")
        assert one.status == 404 and json.loads(await one.text())[0]["code"] == 404
        listed = await client.get("/open311/v2/requests.json?start_date=2026-11-01T00:00:00Z"
                                  "&end_date=2026-11-30T00:00:00Z")
        numbers = {r["service_request_id"] for r in json.loads(await listed.text())}
        assert pw.hotline not in numbers and pw.chat not in numbers
        assert pw.reports.numbers["nov_escalated"] in numbers  # open cases are still published
