"""Open311 GeoReport v2 over a real aiohttp server on both databases: every response checked
against the spec's fields and types (JSON and XML), the standard filters, POST through
core.cases.intake idempotent per client request id, API keys, errors in the spec's format, and
no personal data published."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from datetime import datetime

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlmodel import select

from console.open311 import public_text
from core.cases.models import Case, CaseEvent, Channel
from core.followup.models import Survey
from core.people import apikeys
from core.people.models import AuditEntry
from core.platform import clock
from core.platform.db import session_scope
from core.platform.settings import Settings
from gridline.app import build_app
from tests.core.reports_world import NOW, build_reports_world

# The spec's fields (GeoReport v2: GET Service List, GET Service Requests, POST Service Request,
# GET service_request_id from a token, Errors) and the type each must have here.
W3C = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(Z|[+-]\d{2}:\d{2})$")
SERVICE = {"service_code": str, "service_name": str, "description": str, "metadata": bool, "type": str,
           "keywords": str, "group": str}
REQUEST = {"service_request_id": str, "status": str, "status_notes": (str, type(None)),
           "service_name": (str, type(None)), "service_code": (str, type(None)), "description": (str, type(None)),
           "agency_responsible": (str, type(None)), "service_notice": (str, type(None)),
           "requested_datetime": str, "updated_datetime": str, "expected_datetime": (str, type(None)),
           "address": (str, type(None)), "address_id": (str, type(None)), "zipcode": (str, type(None)),
           "lat": (float, type(None)), "long": (float, type(None)), "media_url": (str, type(None))}
CREATED = {"service_request_id": str, "service_notice": (str, type(None)), "account_id": (str, type(None))}
PHONE_LIKE = re.compile(r"\d{7,}")


def check_fields(rows: list[dict], spec: dict) -> None:
    assert isinstance(rows, list)
    for row in rows:
        assert set(row) == set(spec), set(row) ^ set(spec)
        for key, kind in spec.items():
            assert isinstance(row[key], kind), (key, row[key])
        if "status" in spec:
            assert row["status"] in ("open", "closed")
            for key in ("requested_datetime", "updated_datetime", "expected_datetime"):
                assert row[key] is None or W3C.match(row[key]), row[key]
        if "type" in spec:
            assert row["type"] in ("realtime", "batch", "blackbox")


def xml_rows(text: str, root: str, item: str) -> list[dict]:
    assert text.startswith('<?xml version="1.0" encoding="utf-8"?>')
    tree = ET.fromstring(text.split("\n", 1)[1])
    assert tree.tag == root
    return [{child.tag: child.text or "" for child in element} for element in tree if element.tag == item] \
        if all(e.tag == item for e in tree) else pytest.fail(f"unexpected elements in <{root}>")


@pytest.fixture
def world(engine):
    w = build_reports_world(engine)
    with session_scope(engine) as session:
        _, key = apikeys.add_key(session, "city-12345", actor="test")
        _, other = apikeys.add_key(session, "mobile-app", actor="test")
    w.keys = {"city": key, "app": other}
    return w


@pytest.fixture
async def api(engine, world, tmp_path):
    app = build_app(Settings(data_dir=tmp_path), engine=engine, channels=("open311",), run_jobs=False)
    async with TestClient(TestServer(app)) as client:
        yield client


async def get_json(api, path: str, status: int = 200):  # noqa: ANN001
    resp = await api.get(path)
    assert resp.status == status, await resp.text()
    assert resp.headers["Content-Type"].startswith("application/json")
    return json.loads(await resp.text())


async def test_services_list_our_categories_in_json_and_xml(api, world):
    rows = await get_json(api, "/open311/v2/services.json")
    check_fields(rows, SERVICE)
    assert {r["service_code"] for r in rows} == {"streetlight", "flying_lead"}
    light = next(r for r in rows if r["service_code"] == "streetlight")
    assert (light["service_name"], light["metadata"], light["type"], light["group"]) == ("路灯", False, "realtime",
                                                                                        "城管局")
    assert light["keywords"] == "路灯, 灯不亮"
    resp = await api.get("/open311/v2/services.xml")
    assert resp.status == 200 and resp.headers["Content-Type"] == "text/xml; charset=utf-8"
    xml = xml_rows(await resp.text(), "services", "service")
    assert [r["service_code"] for r in xml] == [r["service_code"] for r in rows]
    assert set(xml[0]) == set(SERVICE) and xml[0]["metadata"] == "false"
    definition = await get_json(api, "/open311/v2/services/streetlight.json")
    assert definition == [{"service_code": "streetlight", "attributes": []}]
    await get_json(api, "/open311/v2/services/nope.json", 404)


async def test_requests_with_the_standard_filters(api, world, engine):
    clock.freeze(NOW)
    nov = "start_date=2026-11-01T00:00:00%2B08:00&end_date=2026-11-30T23:59:59%2B08:00"
    rows = await get_json(api, f"/open311/v2/requests.json?{nov}")
    check_fields(rows, REQUEST)
    with session_scope(engine) as session:
        expected = set(session.exec(select(Case.number).where(
            Case.created_at >= datetime(2026, 10, 31, 16), Case.created_at <= datetime(2026, 11, 30, 15, 59, 59)))
            .all())
    assert {r["service_request_id"] for r in rows} == expected and len(rows) == 9
    by_id = {r["service_request_id"]: r for r in rows}
    merged = by_id[world.numbers["nov_duplicate"]]
    assert merged["status"] == "closed" and world.numbers["nov_repeat_address_b"] in merged["status_notes"]
    ok = by_id[world.numbers["nov_ok"]]
    assert (ok["status"], ok["status_notes"], ok["service_code"], ok["agency_responsible"]) == (
        "closed", "已结案（回访满意）", "streetlight", "城管局")
    assert ok["requested_datetime"] == "2026-11-16T09:00:00+08:00"
    assert ok["address"] == "洋坊新村1号微网格, 洋坊片区, 罗布社区, 城关街道, 清溪区"
    assert by_id[world.numbers["nov_escalated"]]["status"] == "open"

    opened = await get_json(api, f"/open311/v2/requests.json?{nov}&status=open")
    closed = await get_json(api, f"/open311/v2/requests.json?{nov}&status=closed")
    both = await get_json(api, f"/open311/v2/requests.json?{nov}&status=open,closed")
    assert {r["status"] for r in opened} == {"open"} and {r["status"] for r in closed} == {"closed"}
    assert len(opened) + len(closed) == len(both) == 9
    lead = await get_json(api, f"/open311/v2/requests.json?{nov}&service_code=flying_lead")
    assert {r["service_code"] for r in lead} == {"flying_lead"} and len(lead) == 3
    two = ",".join([world.numbers["nov_ok"], world.numbers["oct_done"]])
    picked = await get_json(api, f"/open311/v2/requests.json?service_request_id={two}&status=open")
    assert {r["service_request_id"] for r in picked} == {world.numbers["nov_ok"], world.numbers["oct_done"]}
    recent = await get_json(api, "/open311/v2/requests.json")  # the last 90 days by default
    assert {r["service_request_id"] for r in recent} >= expected

    one = await get_json(api, f"/open311/v2/requests/{world.numbers['nov_ok']}.json")
    assert one == [ok]
    resp = await api.get(f"/open311/v2/requests/{world.numbers['nov_ok']}.xml")
    xml = xml_rows(await resp.text(), "service_requests", "request")
    assert set(xml[0]) == set(REQUEST) and xml[0]["status"] == "closed" and xml[0]["zipcode"] == ""


async def test_bad_requests_get_the_spec_error_format(api, world):
    cases = [
        ("/open311/v2/requests.json?start_date=yesterday", 400),
        ("/open311/v2/requests.json?start_date=2026-11-01T00:00:00", 400),  # no time zone
        ("/open311/v2/requests.json?start_date=2026-01-01T00:00:00Z&end_date=2026-11-01T00:00:00Z", 400),
        ("/open311/v2/requests.json?status=pending", 400),
        ("/open311/v2/requests.json?service_code=nope", 404),
        ("/open311/v2/requests/0000000000.json", 404),
        ("/open311/v2/tokens/never-seen.json", 404),
        ("/open311/v2/nothing.json", 404),
    ]
    for path, status in cases:
        errors = await get_json(api, path, status)
        assert len(errors) == 1 and errors[0]["code"] == status and isinstance(errors[0]["description"], str)
    resp = await api.get("/open311/v2/requests/0000000000.xml")
    assert resp.status == 404
    assert xml_rows(await resp.text(), "errors", "error")[0]["code"] == "404"


async def test_a_date_beyond_the_calendar_is_a_400_naming_the_parameter(api, world, caplog):
    """start_date=9999-12-31T00:00:00Z overflowed (start + 90 days): a traceback in the log and
    a vague "general service error". Now a 400 that names the parameter, logged at INFO."""
    import logging

    caplog.set_level(logging.INFO)
    cases = (("start_date=9999-12-31T00:00:00Z", "start_date"), ("end_date=0001-01-01T00:00:00%2B08:00", "end_date"),
             ("start_date=2026-11-01T00:00:00Z&end_date=9999-12-31T23:59:59Z", "end_date"))
    for query, name in cases:
        errors = await get_json(api, f"/open311/v2/requests.json?{query}", 400)
        assert errors == [{"code": 400, "description": errors[0]["description"]}]
        assert errors[0]["description"].startswith(f"{name} must be a date between 1900 and 2999"), errors
    resp = await api.get("/open311/v2/requests.xml?start_date=9999-12-31T00:00:00Z")
    assert resp.status == 400 and "start_date must be a date between" in await resp.text()
    answered = [r for r in caplog.records if r.name == "console.open311" and "answered 400" in r.getMessage()]
    assert len(answered) == len(cases) + 1 and all(r.levelno == logging.INFO for r in answered)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def post(api, fmt: str = "json", headers: dict | None = None, **form):  # noqa: ANN001
    resp = await api.post(f"/open311/v2/requests.{fmt}", data=form, headers=headers or {})
    return resp.status, await resp.text()


async def test_post_files_a_case_once_per_client_request_id(api, world, engine):
    form = {"api_key": world.keys["city"], "service_code": "streetlight", "lat": "26.39051234", "long": "117.79057",
            "description": "洋坊新村路灯不亮，联系电话13912345678，住9幢2单元301室", "phone": "13912345678",
            "first_name": "三", "last_name": "张", "email": "zhang@example.org", "account_id": "u-42"}
    status, body = await post(api, headers={"Idempotency-Key": "12345-0001"}, **form)
    assert status == 200, body
    created = json.loads(body)
    check_fields(created, CREATED)
    number = created[0]["service_request_id"]
    assert created[0]["account_id"] == "u-42" and created[0]["service_notice"]
    again_status, again = await post(api, headers={"Idempotency-Key": "12345-0001"}, **form)
    assert again_status == 200 and json.loads(again)[0]["service_request_id"] == number
    xml_status, xml = await post(api, "xml", **{**form, "client_request_id": "12345-0001"})
    assert xml_status == 200 and xml_rows(xml, "service_requests", "request")[0]["service_request_id"] == number
    # the same id from another client is another request
    other_status, other = await post(api, headers={"Idempotency-Key": "12345-0001"},
                                     **{**form, "api_key": world.keys["app"]})
    assert other_status == 200 and json.loads(other)[0]["service_request_id"] != number
    with session_scope(engine) as session:
        cases = session.exec(select(Case).where(Case.channel == Channel.open311, Case.number == number)).all()
        assert len(cases) == 1
        case = cases[0]
        assert case.contact_phone == "13912345678" and case.category_id is not None
        assert case.status.value == "dispatched"  # routed by the point, dispatched like any case
        submit = session.exec(select(CaseEvent).where(CaseEvent.case_id == case.id,
                                                      CaseEvent.action == "submit")).one()
        assert submit.actor == "open311:city-12345"
    tokens = await get_json(api, "/open311/v2/tokens/12345-0001.json")
    assert {t["service_request_id"] for t in tokens} == {number, json.loads(other)[0]["service_request_id"]}
    assert all(set(t) == {"service_request_id", "token"} and t["token"] == "12345-0001" for t in tokens)

    # what the public reads of it: no phone, no name, no e-mail, no flat, the point rounded
    published = (await get_json(api, f"/open311/v2/requests/{number}.json"))[0]
    text = json.dumps(published, ensure_ascii=False)
    for secret in ("13912345678", "张", "zhang@example.org", "301室", "26.3905123", "u-42"):
        assert secret not in text, secret
    assert (published["lat"], published["long"]) == (26.391, 117.791)
    assert "***" in published["description"] and "**室" in published["description"]


async def test_post_refusals(api, world, engine):
    key = world.keys["city"]
    base = {"service_code": "streetlight", "address_string": "洋坊新村9幢", "description": "灯不亮"}
    cases = [
        ({**base}, {"Idempotency-Key": "a1"}, 403),  # no api_key
        ({**base, "api_key": "gl_wrong"}, {"Idempotency-Key": "a2"}, 403),
        ({**base, "api_key": key}, {}, 400),  # no client request id
        ({**base, "api_key": key}, {"Idempotency-Key": "bad id!"}, 400),
        ({**base, "api_key": key, "service_code": ""}, {"Idempotency-Key": "a3"}, 400),
        ({**base, "api_key": key, "service_code": "nope"}, {"Idempotency-Key": "a4"}, 404),
        ({"api_key": key, "service_code": "streetlight"}, {"Idempotency-Key": "a5"}, 400),  # no place
        ({**base, "api_key": key, "lat": "91", "long": "117"}, {"Idempotency-Key": "a6"}, 400),
        ({**base, "api_key": key, "lat": "26.39"}, {"Idempotency-Key": "a7"}, 400),
        ({**base, "api_key": key, "description": "长" * 4001}, {"Idempotency-Key": "a8"}, 400),
    ]
    for form, headers, status in cases:
        got, body = await post(api, headers=headers, **form)
        assert got == status, (form, body)
        assert json.loads(body)[0]["code"] == status
    with session_scope(engine) as session:
        assert session.exec(select(Case).where(Case.channel == Channel.open311)).all() == [
            session.exec(select(Case).where(Case.channel == Channel.open311)).one()]  # only the fixture's
        apikeys.disable_key(session, "city-12345", actor="test")
        assert session.exec(select(AuditEntry).where(AuditEntry.action == "apikey.disable")).one()
    got, _ = await post(api, headers={"Idempotency-Key": "a9"}, **{**base, "api_key": key})
    assert got == 403


async def test_a_case_filed_through_open311_is_followed_up_by_hand(api, world, engine):
    """No phone, no chat: the survey lands on the console's manual-call list."""
    status, body = await post(api, headers={"Idempotency-Key": "m-1"}, api_key=world.keys["city"],
                              service_code="streetlight", lat="26.3905", long="117.7905", description="路灯坏了")
    number = json.loads(body)[0]["service_request_id"]
    from core import actions

    with session_scope(engine) as session:
        case = actions.get_case(session, number)
        actions.accept(session, case, actor="w")
        actions.report_done(session, case, actor="w", note="修好了")
        actions.verify(session, case, actor="leader")
        survey = session.exec(select(Survey).where(Survey.case_id == case.id)).one()
        assert survey.channel == "manual"


def test_public_text_masks_numbers_flats_and_names():
    assert public_text("电话 138-0013-8000 或 0598 7512301，身份证 35042619800101123X") == "电话 *** 或 ***，身份证 ***"
    assert public_text("9幢2单元301室门口") == "**幢**单元**室门口"
    assert public_text("三号楼二零三室") == "**号楼**室"
    assert public_text("陈大明说路灯坏了", ("陈大明",)) == "**说路灯坏了"
    assert public_text("路灯坏了3天") == "路灯坏了3天" and PHONE_LIKE.search(public_text("13800138000")) is None
