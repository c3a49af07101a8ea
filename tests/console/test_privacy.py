"""What a role that may not see phones and names (viewer, department) reads of a resident's
own words, and what it can find by searching them, over the real console app on both
databases: names known for the case, self-introduced names and numbers masked in the
description, the transcript, the notes and every list; the issue's digit-by-digit recovery
of a phone number through text search recovers nothing; personal searches are audit rows
and limited per account, across instances."""

from __future__ import annotations

import re

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlmodel import select

from core import actions
from core.cases.models import Channel
from core.people.models import AuditEntry, Resident
from core.places.models import Household
from core.platform import rules
from core.platform.db import session_scope
from core.platform.rules import reload_rules
from core.platform.settings import Settings
from gridline.app import build_app
from tests.console.conftest import login

PHONE = "13912345678"
TEXT = "我叫陈大明，电话13912345678，身份证350499199001011234，女儿陈小红说洋坊新村9幢楼道灯坏了"
TRANSCRIPT = [{"text": "我叫陈大明电话幺三九一二三四五六七八", "start": 0.0, "end": 4.0, "confidence": 0.9, "words": [
    {"word": "我叫", "start": 0.0, "end": 0.4, "conf": 0.9}, {"word": "陈", "start": 0.4, "end": 0.6, "conf": 0.9},
    {"word": "大明", "start": 0.6, "end": 1.0, "conf": 0.9}, {"word": "电话", "start": 1.0, "end": 1.4, "conf": 0.9},
    {"word": "幺三九", "start": 1.4, "end": 2.2, "conf": 0.9}, {"word": "一二三四", "start": 2.2, "end": 3.0, "conf": 0.9},
    {"word": "五六七八", "start": 3.0, "end": 4.0, "conf": 0.9}]}]
SECRETS = ("陈大明", "大明", "陈小红", "小红", PHONE, "1234", "350499199001011234", "一二三四")


@pytest.fixture
def case_number(engine, world) -> str:
    """A streetlight case of a registered resident (陈大明, whose household holds 陈小红),
    dispatched to the department, with an operator's note that names them again."""
    with session_scope(engine) as session:
        household = Household(code="H-PRIV", address="洋坊新村9幢", grid_id=world.district.grids["micro1"].id)
        session.add(household)
        session.flush()
        resident = Resident(name="陈大明", phone="+86" + PHONE, household_id=household.id)
        session.add_all([resident, Resident(name="陈小红", household_id=household.id)])
        session.flush()
        case, _ = actions.submit_petition(session, actions.Petition(
            channel=Channel.hotline, description=TEXT, resident_id=resident.id, contact_phone="+86" + PHONE,
            transcript=TRANSCRIPT, transcript_confidence=0.9, category_code="streetlight",
            idempotency_key="hotline|CA-privacy"), actor="hotline")
        actions.dispatch(session, case, actor="system", grid_id=world.district.grids["micro1"].id)
        actions.annotate(session, case, actor="console:op", note="已回电陈大明（13912345678），女儿陈小红在家")
        return case.number


def numbers_in(html: str) -> set[str]:
    return set(re.findall(r'href="/console/cases/(\d+)"', html))


def visible(html: str) -> str:
    """The page's text without its tags and attribute values."""
    return re.sub(r"<[^>]*>", " ", html)


async def test_viewer_and_department_read_the_case_masked_and_the_operator_in_full(client, case_number):
    for name in ("viewer", "dept"):
        await login(client, name)
        page = visible(await (await client.get(f"/console/cases/{case_number}")).text())
        assert "陈**" in page and "139****5678" in page and "洋坊新村9幢楼道灯坏了" in page, name
        assert [s for s in SECRETS if s in page] == [], name
        listing = visible(await (await client.get("/console/search?category=streetlight")).text())
        queue = visible(await (await client.get("/console/queues/department/chengguan")).text())
        for html in (listing, queue):
            assert case_number in html and [s for s in SECRETS if s in html] == [], name
    await login(client, "op")
    page = visible(await (await client.get(f"/console/cases/{case_number}")).text())
    assert all(s in page for s in ("陈大明", "陈小红", PHONE, "已回电陈大明（13912345678）")), page
    assert "幺三九" in page  # the operator still gets the transcript word by word


async def search_numbers(client, text: str) -> tuple[int, set[str]]:  # noqa: ANN001
    resp = await client.get("/console/search", params={"text": text})
    return resp.status, numbers_in(await resp.text())


async def digit_by_digit(client, number: str) -> tuple[str, int]:  # noqa: ANN001
    """The issue's attack: start from the three digits the masked page shows and try each
    next digit, keeping the one the search confirms; at most 80 requests."""
    known, requests = "139", 0
    while len(known) < 11 and requests < 80:
        for digit in "0123456789":
            requests += 1
            status, found = await search_numbers(client, known + digit)
            if number in found:
                known += digit
                break
        else:
            break
    return known, requests


@pytest.fixture
def generous_limit(tmp_path, monkeypatch):
    """A limit too high to matter: what stops the attack is the masked search alone."""
    path = tmp_path / "rules.toml"
    path.write_text("[console.search]\npersonal_per_hour = 1000\n", "utf-8")
    monkeypatch.setenv(rules.RULES_ENV, str(path))
    reload_rules()
    yield
    monkeypatch.delenv(rules.RULES_ENV)
    reload_rules()


async def test_the_digit_by_digit_attack_recovers_nothing_through_the_masked_search(client, case_number,
                                                                                      generous_limit, engine):
    await login(client, "op")  # the number is there to be found, by a role that may see it
    assert case_number in (await search_numbers(client, "1391234"))[1]
    await login(client, "viewer")
    assert case_number in (await search_numbers(client, "139"))[1]  # what the page shows matches
    assert case_number in (await search_numbers(client, "****5678"))[1]
    known, requests = await digit_by_digit(client, case_number)
    assert known == "139" and requests == 10  # not one digit beyond what the page shows
    for name in ("陈大明", "陈大", "大明", "小红", "3504991990", "一二三四"):  # nor a name, nor an ID
        assert case_number not in (await search_numbers(client, name))[1], name
    assert case_number in (await search_numbers(client, "楼道灯坏了"))[1]
    with session_scope(engine) as session:
        rows = session.exec(select(AuditEntry).where(AuditEntry.actor == "console:viewer",
                                                     AuditEntry.action == "case.search_text")).all()
    # Every search with a digit, a star or a surname's shape; not 大明 or 小红 (no surname:
    # they find nothing either), nor the plain one.
    assert len(rows) == 2 + 10 + 4
    assert all(row.detail["masked"] for row in rows)


async def test_with_the_packaged_limit_the_attack_meets_429_before_its_80th_request(client, case_number, engine):
    await login(client, "viewer")
    known, statuses = "139", []
    for n in range(80):
        status, found = await search_numbers(client, known + str(n % 10))
        statuses.append(status)
        if case_number in found:
            known += str(n % 10)
    assert known == "139"
    assert statuses[:60] == [200] * 60 and set(statuses[60:]) == {429}
    resp = await client.get("/console/search", params={"text": "1390"})
    html = await resp.text()
    assert resp.status == 429 and "一小时内查询个人信息" in html and "60" in html
    assert (await client.get("/console/search", params={"text": "路灯"})).status == 200  # not personal
    with session_scope(engine) as session:
        refused = session.exec(select(AuditEntry).where(AuditEntry.action == "case.search_refused")).all()
    assert len(refused) == 21


@pytest.fixture
def tight_limit(tmp_path, monkeypatch):
    path = tmp_path / "rules.toml"
    path.write_text("[console.search]\npersonal_per_hour = 3\n", "utf-8")
    monkeypatch.setenv(rules.RULES_ENV, str(path))
    reload_rules()
    yield
    monkeypatch.delenv(rules.RULES_ENV)
    reload_rules()


async def test_the_limit_counts_phone_and_name_searches_per_account_on_every_instance(client, case_number, engine,
                                                                                       world, tight_limit):
    await login(client, "op")
    assert (await client.get("/console/search", params={"phone": PHONE})).status == 200
    assert (await client.get("/console/search", params={"text": "陈大明"})).status == 200
    assert (await client.get("/console/search", params={"text": "飞线充电"})).status == 200  # not counted
    other = build_app(Settings(data_dir=world.data_dir), engine=engine, channels=("console",), run_jobs=False)
    async with TestClient(TestServer(other)) as second:  # another instance, the same database
        await login(second, "op")
        assert (await second.get("/console/search", params={"text": "wxm@"})).status == 200
        resp = await second.get("/console/search", params={"phone": PHONE, "lang": "en"})
        assert resp.status == 429 and "3 times in the last hour" in await resp.text()
    assert (await client.get("/console/search", params={"text": "1391"})).status == 429
    await login(client, "admin")  # another account has its own count
    assert (await client.get("/console/search", params={"text": "1391"})).status == 200
    with session_scope(engine) as session:
        actions_of_op = [r.action for r in session.exec(select(AuditEntry).where(
            AuditEntry.actor == "console:op", AuditEntry.action.like("case.search%")).order_by(AuditEntry.id)).all()]
    assert actions_of_op == ["case.search_phone", "case.search_text", "case.search_text", "case.search_refused",
                             "case.search_refused"]


async def test_a_masked_search_pages_through_many_candidates(client, engine, world, generous_limit):
    """More candidates than one batch: the masked search still finds the visible matches, in
    order, page by page."""
    with session_scope(engine) as session:
        for n in range(230):
            actions.submit_petition(session, actions.Petition(
                channel=Channel.chat, description=f"路灯坏了，电话1390000{n:04d}" if n % 2 else f"路灯坏了第{n}盏",
                idempotency_key=f"chat|bulk{n}"), actor="resident:chat")
    await login(client, "viewer")
    seen, url = [], "/console/search?text=路灯坏了第"
    while url:
        html = await (await client.get(url)).text()
        seen += re.findall(r'href="/console/cases/(\d+)"', html)
        more = re.search(r'href="/console/search(\?[^"]*)" id="more"', html)
        url = "/console/search" + more.group(1).replace("&amp;", "&") if more else None
    assert len(seen) == 115 and len(set(seen)) == 115 and seen == sorted(seen, reverse=True)
    status, found = await search_numbers(client, "13900000")
    assert status == 200 and found == set()  # the middle of every number stays hidden
