"""Confidential cases (保密处理) in the console, by role, over the real app on both databases:
a worker, a department and a supervisor read the case with no name, phone or voice and the
numbers in its words masked; operators and admins read everything; every view and every
refused recording is an audit row; search finds no confidential case by its resident;
operators mark and lift the mark; the badge shows on the page and in lists."""

from __future__ import annotations

import re

import pytest
from sqlmodel import select

from core import actions
from core.cases.models import Case, CaseEvent, Channel
from core.cases.queries import case_files
from core.people.models import AuditEntry
from core.platform.db import session_scope
from tests.console.conftest import PHONE, csrf_of, login, write_wav

SAID = "我是陈阿婆，电话13800138000，住洋坊新村9幢2单元301室，楼上每天半夜噪音，已经三百多天了"
# What no masked reader may see: the resident's name, phone (any part of it), household
# address, room number.
SECRETS = ("陈阿婆", "阿婆", "13800138000", "138****8000", "8000", "301", "洋坊新村9幢2单元301室")


def leaked(text: str) -> list[str]:
    """The secrets in ``text``. Digits count on their own only, not inside a longer number: a
    case number filed on 8 December (261208000N) holds "8000" and is no phone tail."""
    return [s for s in SECRETS if re.search(rf"(?<!\d){re.escape(s)}(?!\d)" if s.isdigit() else re.escape(s), text)]


@pytest.fixture
def secret(engine, world) -> tuple[str, int]:
    """A hotline case of the district's registered resident, filed in confidence, with her
    recording, dispatched to micro grid 1 (worker W-M1, account w1; department chengguan)."""
    rel = "recordings/20261120/CA-secret.wav"
    size = write_wav(world.data_dir / rel)
    with session_scope(engine) as session:
        case, _ = actions.submit_petition(session, actions.Petition(
            channel=Channel.hotline, description=SAID, idempotency_key="hotline|CA-secret", contact_phone=PHONE,
            transcript=[{"text": SAID, "start": 0.0, "end": 6.0, "confidence": 0.9}],
            category_code="streetlight", confidential=True,
            files=(actions.FileRef("recording", rel, "audio/wav", size),)), actor="hotline")
        actions.dispatch(session, case, actor="system", grid_id=world.district.grids["micro1"].id,
                         worker_id=world.district.workers["W-M1"].id)
        session.flush()
        return case.number, case_files(session, case.id, "recording")[0].id


def _audits(engine, action: str, actor: str) -> list[AuditEntry]:
    with session_scope(engine) as session:
        return list(session.exec(select(AuditEntry).where(AuditEntry.action == action,
                                                          AuditEntry.actor == actor)).all())


@pytest.mark.parametrize("name", ["w1", "dept", "sup"])
async def test_a_worker_a_department_and_a_supervisor_read_it_masked_and_each_view_is_audited(
        client, engine, secret, name):
    number, _ = secret
    await login(client, name)
    page = await client.get(f"/console/cases/{number}")
    html = await page.text()
    assert page.status == 200
    assert 'id="confidential"' in html and "保密" in html and 'id="confidential-notice"' in html
    assert leaked(html) == []
    assert "<audio" not in html and 'id="voice-withheld"' in html
    assert "楼上每天半夜噪音" in html  # the problem itself is the work
    (row,) = _audits(engine, "case.view", f"console:{name}")
    assert row.target_id == number and row.detail["confidential"] is True and row.detail["phone_shown"] is False


@pytest.mark.parametrize("name", ["op", "admin"])
async def test_operators_and_admins_read_everything_and_their_views_are_audited_too(client, engine, secret, name):
    number, recording = secret
    await login(client, name)
    html = await (await client.get(f"/console/cases/{number}")).text()
    assert 'id="confidential"' in html and 'id="confidential-notice"' not in html
    assert "陈阿婆" in html and PHONE in html and "301室" in html
    assert f"/files/{recording}" in html and "<audio" in html
    (row,) = _audits(engine, "case.view", f"console:{name}")
    assert row.detail == {"phone_shown": True, "files": 1, "confidential": True}
    heard = await client.get(f"/console/cases/{number}/files/{recording}")
    assert heard.status == 200 and (await heard.read())[:4] == b"RIFF"
    (served,) = _audits(engine, "case.file", f"console:{name}")
    assert served.detail["confidential"] is True


async def test_the_recording_is_refused_403_to_a_worker_and_the_attempt_is_audited(client, engine, secret):
    number, recording = secret
    await login(client, "w1")
    refused = await client.get(f"/console/cases/{number}/files/{recording}")
    assert refused.status == 403
    body = await refused.read()
    assert not body.startswith(b"RIFF") and "保密" in body.decode()
    (row,) = _audits(engine, "case.file_refused", "console:w1")
    assert row.target_id == number and row.detail["attachment"] == recording
    assert _audits(engine, "case.file", "console:w1") == []
    ranged = await client.get(f"/console/cases/{number}/files/{recording}", headers={"Range": "bytes=0-99"})
    assert ranged.status == 403


async def test_the_same_worker_still_hears_a_case_that_is_not_confidential(client, engine, secret):
    number, recording = secret
    with session_scope(engine) as session:
        case = actions.get_case(session, number)
        actions.set_confidential(session, case, actor="console:op", confidential=False)
    await login(client, "w1")
    html = await (await client.get(f"/console/cases/{number}")).text()
    assert "<audio" in html and 'id="confidential"' not in html and PHONE in html
    assert (await client.get(f"/console/cases/{number}/files/{recording}")).status == 200


async def test_lists_show_the_badge_and_the_masked_words(client, engine, secret):
    number, _ = secret
    await login(client, "w1")
    html = await (await client.get("/console/search", params={"category": "streetlight"})).text()
    assert number in html and "badge-confidential" in html
    assert leaked(html) == []
    await login(client, "op")
    html = await (await client.get("/console/search", params={"category": "streetlight"})).text()
    assert number in html and "badge-confidential" in html and "13800138000" in html


async def test_search_finds_no_confidential_case_by_its_residents_name_or_phone(client, engine, secret):
    number, _ = secret
    await login(client, "w1")
    for term in ("陈阿婆", "13800138000", "301"):
        html = await (await client.get("/console/search", params={"text": term})).text()
        assert f"/console/cases/{number}" not in html, term
    html = await (await client.get("/console/search", params={"text": "半夜噪音"})).text()
    assert f"/console/cases/{number}" in html  # the problem is still found
    await login(client, "sup")  # sees phones, not a confidential case's
    html = await (await client.get("/console/search", params={"phone": "13800138000"})).text()
    assert f"/console/cases/{number}" not in html
    html = await (await client.get("/console/search", params={"text": "陈阿婆"})).text()
    assert f"/console/cases/{number}" not in html
    await login(client, "op")
    html = await (await client.get("/console/search", params={"phone": "13800138000"})).text()
    assert f"/console/cases/{number}" in html
    html = await (await client.get("/console/search", params={"text": "陈阿婆"})).text()
    assert f"/console/cases/{number}" in html


async def test_an_operator_lifts_and_sets_the_mark_and_a_worker_may_not(client, engine, secret):
    number, _ = secret
    await login(client, "w1")
    html = await (await client.get(f"/console/cases/{number}")).text()
    assert "act/confidential" not in html
    token = await csrf_of(client)
    refused = await client.post(f"/console/cases/{number}/act/confidential",
                                data={"_csrf": token, "confidential": "no"}, allow_redirects=False)
    assert refused.status == 403
    await login(client, "op")
    html = await (await client.get(f"/console/cases/{number}")).text()
    assert "act/confidential" in html and "取消保密" in html
    token = await csrf_of(client)
    lifted = await client.post(f"/console/cases/{number}/act/confidential",
                               data={"_csrf": token, "confidential": "no", "reason": "居民同意公开"},
                               allow_redirects=False)
    assert lifted.status == 303
    bad = await client.post(f"/console/cases/{number}/act/confidential",
                            data={"_csrf": token, "confidential": "maybe"}, allow_redirects=False)
    assert bad.status == 422 or bad.status == 400
    with session_scope(engine) as session:
        case = session.exec(select(Case).where(Case.number == number)).one()
        assert case.confidential is False
        events = session.exec(select(CaseEvent).where(CaseEvent.case_id == case.id,
                                                      CaseEvent.action == "confidential")).all()
        assert [(e.actor, e.data, e.reason) for e in events] == [("console:op", {"confidential": False}, "居民同意公开")]
    (row,) = _audits(engine, "case.confidential", "console:op")
    assert row.detail["confidential"] == "no"
    html = await (await client.get(f"/console/cases/{number}")).text()
    assert "设为保密件" in html and 'id="confidential"' not in html


async def test_a_confidential_case_waits_in_no_triage_queue(client, engine, secret):
    number, _ = secret
    await login(client, "op")
    html = await (await client.get("/console/triage")).text()
    assert f"/console/cases/{number}" not in html
