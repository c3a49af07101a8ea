"""Limits at the console's and Open311's real boundary (aiohttp server, both databases):
a text over [limits] is refused in the page's language with what was typed kept, a body
larger than a form answers 413 with a clear message, a suggested duplicate names its earlier
case, and Open311 holds then refuses one phone number's flood (429 with Retry-After)."""

from __future__ import annotations

import json

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlmodel import select

from core import actions
from core.actions import Petition
from core.cases import intake
from core.cases.flood import DUPLICATE, FLOOD
from core.cases.models import Case, CaseEvent, CaseStatus, Channel
from core.people import apikeys
from core.platform.db import session_scope
from core.platform.settings import Settings
from gridline.app import build_app
from tests.console.conftest import csrf_of, login

POINT = {"latitude": 26.3905, "longitude": 117.7915}  # micro2



async def _act(client, number, action, **data):
    token = await csrf_of(client)
    return await client.post(f"/console/cases/{number}/act/{action}", data={"_csrf": token, **data},
                             allow_redirects=False)


def _events(engine, number: str, action: str) -> list[CaseEvent]:
    with session_scope(engine) as session:
        case = actions.get_case(session, number)
        return list(session.exec(select(CaseEvent).where(CaseEvent.case_id == case.id,
                                                         CaseEvent.action == action)).all())


async def test_a_correction_over_the_limit_is_refused_in_the_pages_language_and_kept(client, engine, world):
    await login(client, "op")
    n = world.triage_case
    typed = "洋坊新村九号楼路灯坏了" * 400 + "尾"  # 4,401 characters
    resp = await _act(client, n, "edit_text", description=typed)
    page = await resp.text()
    assert resp.status == 422
    assert "诉求内容太长了：4401 个字，最多 4000 个字" in page
    assert f">{typed}</textarea>" in page  # what was typed is still in the form
    assert 'maxlength="4000"' in page
    assert _events(engine, n, "classify") == []
    with session_scope(engine) as session:
        assert actions.get_case(session, n).description != typed

    resp = await client.post(f"/console/cases/{n}/act/edit_text?lang=en",
                             data={"_csrf": await csrf_of(client), "description": typed}, allow_redirects=False)
    assert resp.status == 422
    assert "The description is too long: 4401 characters, at most 4000" in await resp.text()


async def test_a_note_over_the_limit_is_refused_and_kept(client, engine, world):
    await login(client, "op")
    n = world.triage_case
    note = "已电话联系居民，" * 250 + "。"  # 2,001 characters
    resp = await _act(client, n, "annotate", note=note)
    page = await resp.text()
    assert resp.status == 422 and "备注太长了：2001 个字，最多 2000 个字" in page
    assert f'value="{note}"' in page
    assert _events(engine, n, "note") == []
    assert (await _act(client, n, "annotate", note=note[:2000])).status == 303
    assert len(_events(engine, n, "note")) == 1


async def test_a_reason_over_the_limit_is_refused(client, engine, world):
    await login(client, "op")
    resp = await _act(client, world.other_grid_case, "return", reason="不是本网格" * 101)
    assert resp.status == 422 and "原因太长了" in await resp.text()
    with session_scope(engine) as session:
        assert actions.get_case(session, world.other_grid_case).status == CaseStatus.dispatched


async def test_a_five_million_character_note_is_refused_before_it_is_read(client, engine, world):
    """The issue's reproduction: a 5,000,000-character note was stored and the case page
    became 5.1 MB. The body is larger than any form: 413, a clear page, nothing stored."""
    await login(client, "op")
    n = world.triage_case
    token = await csrf_of(client)
    resp = await client.post(f"/console/cases/{n}/act/annotate", data={"_csrf": token, "note": "a" * 5_000_000},
                             allow_redirects=False)
    page = await resp.text()
    assert resp.status == 413
    assert "提交的内容太大了（表单最多 64 KB）" in page and "Traceback" not in page
    assert _events(engine, n, "note") == []
    case_page = await (await client.get(f"/console/cases/{n}")).text()
    assert len(case_page) < 200_000


async def test_a_suggested_duplicate_links_its_earlier_case_and_a_dispatch_settles_it(client, engine, world):
    rid = world.district.resident.id
    words = "楼道里有人飞线给电动车充电，很危险"
    first = intake.file_petition(engine, Petition(channel=Channel.chat, description=words, resident_id=rid,
                                                  idempotency_key="d1", **POINT))
    again = intake.file_petition(engine, Petition(channel=Channel.chat, description=words, resident_id=rid,
                                                  idempotency_key="d2", **POINT))
    assert first.dispatched
    assert again.held and again.held.duplicate_of == first.case.number
    await login(client, "op")
    page = await (await client.get(f"/console/cases/{again.case.number}")).text()
    assert "疑似重复反映" in page and "暂缓派遣（待核实）" in page
    assert f'<a href="/console/cases/{first.case.number}">{first.case.number}</a>' in page
    assert f'name="into" value="{first.case.number}"' in page  # with its merge button
    triage = await (await client.get("/console/triage")).text()
    assert again.case.number in triage
    # the operator decides it is another problem after all: dispatching settles the hold
    assert (await _act(client, again.case.number, "dispatch")).status == 303
    with session_scope(engine) as session:
        case = actions.get_case(session, again.case.number)
        assert case.status == CaseStatus.dispatched and DUPLICATE not in (case.flags or [])


# ---- Open311 ----------------------------------------------------------------------------------


@pytest.fixture
async def api(engine, world, tmp_path):
    with session_scope(engine) as session:
        _, key = apikeys.add_key(session, "city-12345", actor="test")
    app = build_app(Settings(data_dir=tmp_path), engine=engine, channels=("open311",), run_jobs=False)
    async with TestClient(TestServer(app)) as c:
        c.key = key
        yield c


async def _post(api, request_id: str, **form):
    base = {"api_key": api.key, "service_code": "streetlight", "lat": "26.3905", "long": "117.7915"}
    resp = await api.post("/open311/v2/requests.json", data={**base, **form},
                          headers={"Idempotency-Key": request_id})
    return resp, json.loads(await resp.text())


def _open311_cases(engine) -> list[Case]:
    with session_scope(engine) as session:
        return list(session.exec(select(Case).where(Case.channel == Channel.open311).order_by(Case.id)).all())


async def test_open311_holds_then_refuses_one_phones_flood(api, engine, world, override):
    override("[intake.flood]\nmax_petitions = 2\nrefuse_above = 4\n")
    words = ["路灯不亮了", "三号楼前面那盏路灯一直灯不亮", "河边的路灯坏了", "广场边上的路灯闪个不停"]
    phones = ["13977778888", "+86 139 7777 8888", "139-7777-8888", "8613977778888"]  # one number
    answers = [await _post(api, f"r{i}", description=w, phone=p) for i, (w, p) in enumerate(zip(words, phones, strict=True))]
    assert [resp.status for resp, _ in answers] == [200] * 4
    notices = [body[0]["service_notice"] for _, body in answers]
    assert notices[:2] == ["已受理，将按网格派遣处理。"] * 2
    assert notices[2:] == ["已受理。该号码近期提交较多，将由工作人员核实后派遣。"] * 2
    cases = _open311_cases(engine)
    assert [c.status for c in cases] == [CaseStatus.dispatched] * 2 + [CaseStatus.received] * 2
    assert all(FLOOD in c.flags for c in cases[2:])

    resp, body = await _post(api, "r5", description="健身器材坏了", phone="13977778888")
    assert resp.status == 429
    assert body[0]["code"] == 429 and "send it again" in body[0]["description"]
    assert 1 <= int(resp.headers["Retry-After"]) <= 3601
    assert len(_open311_cases(engine)) == 4  # refused before anything was written
    # a retry of a request already filed is answered with its case, not refused
    resp, body = await _post(api, "r0", description=words[0], phone=phones[0])
    assert resp.status == 200 and body[0]["service_request_id"] == cases[0].number
    # another number is not affected
    resp, _ = await _post(api, "r6", description="健身器材坏了", phone="13933334444")
    assert resp.status == 200


async def test_open311_says_a_repeat_joins_the_earlier_case(api, engine, world):
    _, first = await _post(api, "x1", description="洋坊新村9幢门口路灯不亮", phone="13955556666")
    resp, again = await _post(api, "x2", description="洋坊新村9幢门口路灯不亮！", phone="13955556666")
    assert resp.status == 200
    number = first[0]["service_request_id"]
    assert again[0]["service_notice"] == f"已受理。与此前的 {number} 号诉求内容相同，将一并处理，不重复派遣。"
    held = _open311_cases(engine)[-1]
    assert held.status == CaseStatus.received and DUPLICATE in held.flags


async def test_open311_text_and_body_limits(api, engine, world):
    resp, body = await _post(api, "t1", description="长" * 4001)
    assert resp.status == 400 and body[0]["description"] == "description is too long: 4001 characters, at most 4000"
    resp, body = await _post(api, "t2", description="灯不亮", first_name="张" * 65)
    assert resp.status == 400 and "first_name is limited to 64 characters" in body[0]["description"]
    resp, body = await _post(api, "t3", description="灯不亮", address_string="洋坊新村" * 100, lat="", long="")
    assert resp.status == 400 and body[0]["description"].startswith("address is too long")
    resp, body = await _post(api, "t4", description="灯" * 30_000)  # 90 KB of UTF-8, over the form bound
    assert resp.status == 413 and body[0]["code"] == 413
    assert "larger than 65536 bytes" in body[0]["description"]
    assert _open311_cases(engine) == []
