"""console.web: the login wall, CSRF, cookies and headers, languages, and errors shown as
pages (never a 500) — over a real aiohttp server on both databases."""

from __future__ import annotations

import logging

from sqlmodel import select

from console.models import ConsoleSession
from core.platform.db import session_scope
from tests.console.conftest import csrf_of, login


async def test_unauthenticated_requests_go_to_the_login_page(client, world):
    for path in ("/console/", "/console/triage", f"/console/cases/{world.triage_case}",
                 f"/console/cases/{world.triage_case}/files/{world.recording_id}", "/console/search?text=路灯",
                 "/console/audit"):
        resp = await client.get(path, allow_redirects=False)
        assert resp.status == 303, path
        assert resp.headers["Location"].startswith("/console/login?next="), path
    resp = await client.post(f"/console/cases/{world.triage_case}/act/annotate", data={"note": "x"},
                             allow_redirects=False)
    assert resp.status == 401
    page = await client.get("/console/login")
    assert page.status == 200 and "登录" in await page.text()


async def test_login_sets_a_hardened_session_cookie_and_logout_ends_it(client, engine, world):
    resp = await login(client, "op")
    cookie = resp.cookies["gridline_console"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax" and cookie["path"] == "/console/"
    assert not cookie["secure"]  # the public URL of the tests is http
    with session_scope(engine) as session:
        assert len(session.exec(select(ConsoleSession)).all()) == 1
    assert (await client.get("/console/triage")).status == 200
    token = await csrf_of(client)
    out = await client.post("/console/logout", data={"_csrf": token}, allow_redirects=False)
    assert out.status == 303
    with session_scope(engine) as session:
        assert session.exec(select(ConsoleSession)).all() == []
    assert (await client.get("/console/triage", allow_redirects=False)).status == 303


async def test_secure_cookie_when_the_public_url_is_https(engine, world, monkeypatch):
    from aiohttp.test_utils import TestClient, TestServer

    from console.config import get_console_settings
    from core.platform.settings import Settings
    from gridline.app import build_app

    monkeypatch.setenv("GRIDLINE_PUBLIC_URL", "https://hotline.example.org")
    get_console_settings.cache_clear()
    try:
        app = build_app(Settings(data_dir=world.data_dir), engine=engine, channels=("console",), run_jobs=False)
        async with TestClient(TestServer(app)) as c:
            page = await c.get("/console/login")
            assert page.cookies["gridline_login_csrf"]["secure"]
    finally:
        get_console_settings.cache_clear()


async def test_a_form_without_a_csrf_token_gets_403(client, world):
    await login(client, "op")
    number = world.triage_case
    for data in ({"note": "无令牌"}, {"note": "错令牌", "_csrf": "forged"}):
        resp = await client.post(f"/console/cases/{number}/act/annotate", data=data, allow_redirects=False)
        assert resp.status == 403
        assert "安全令牌" in await resp.text()
    token = await csrf_of(client)
    ok = await client.post(f"/console/cases/{number}/act/annotate", data={"note": "有令牌", "_csrf": token},
                           allow_redirects=False)
    assert ok.status == 303
    # htmx sends the token as a header
    ok = await client.post(f"/console/cases/{number}/act/annotate", data={"note": "头部令牌"},
                           headers={"X-CSRF-Token": token}, allow_redirects=False)
    assert ok.status == 303


async def test_the_login_form_itself_needs_its_token(client, world):
    await client.get("/console/login")
    resp = await client.post("/console/login", data={"name": "op", "password": "correct horse battery"},
                             allow_redirects=False)
    assert resp.status == 403


async def test_pages_carry_security_headers_and_are_not_cached(client, world):
    await login(client, "op")
    resp = await client.get("/console/triage")
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Cache-Control"] == "no-store"


async def test_language_by_query_then_cookie(client, world):
    await login(client, "op")
    assert "待分拨诉求" in await (await client.get("/console/triage")).text()
    english = await client.get("/console/triage?lang=en")
    assert "Triage" in await english.text()
    assert "Triage" in await (await client.get("/console/triage")).text()  # remembered
    assert "待分拨诉求" in await (await client.get("/console/triage?lang=zh")).text()


async def test_language_by_the_accounts_preference(client, world):
    await login(client, "viewer")
    token = await csrf_of(client)
    resp = await client.post("/console/account", data={"_csrf": token, "language": "en"}, allow_redirects=False)
    assert resp.status == 303
    assert "Search cases" in await (await client.get("/console/search")).text()


async def test_an_illegal_transition_shows_the_cores_message(client, world):
    await login(client, "sup")
    token = await csrf_of(client)
    resp = await client.post(f"/console/cases/{world.triage_case}/act/verify", data={"_csrf": token})
    assert resp.status == 409
    html = await resp.text()
    # core's refusal in the page's words (it was core's English sentence on a zh page)
    assert f"诉求 {world.triage_case} 当前为“已受理”，不能核查。" in html
    assert "cannot verify a case that is received" not in html
    assert 'id="error"' in html
    bad = await client.post(f"/console/cases/{world.triage_case}/act/close", data={"_csrf": token})
    assert bad.status == 422 and "请选择或填写结案原因。" in await bad.text()


async def test_bad_input_is_a_clear_page_never_a_500(client, world):
    await login(client, "op")
    for path, status in (("/console/cases/999999", 404), ("/console/search?after=%%%", 422),
                         ("/console/search?date_from=yesterday", 422), ("/console/search?grid=nowhere", 422),
                         ("/console/search?status=lost", 422), ("/console/queues/worker/NOBODY", 404),
                         ("/console/nothing-here", 404)):
        resp = await client.get(path)
        assert resp.status == status, (path, resp.status)
        assert "<h1>" in await resp.text()


async def test_a_search_date_outside_the_calendar_is_a_form_error_not_a_500(client, world, caplog):
    """date_to=0001-01-01 overflowed in the time zone conversion (OverflowError, a 500 and a
    traceback). Now the search form again, saying which date is wrong, in the page's language."""
    await login(client, "op")
    caplog.set_level(logging.INFO)
    cases = (("date_to=0001-01-01", "截止日期 0001-01-01 超出了可查询的范围"),
             ("date_from=9999-12-31", "起始日期 9999-12-31 超出了可查询的范围"),
             ("date_from=2026-02-30", "起始日期“2026-02-30”看不懂"),
             ("date_to=0001-01-01&lang=en", "The end date 0001-01-01 is outside the dates a search can cover"))
    for query, message in cases:
        resp = await client.get(f"/console/search?text=路灯&{query}")
        html = await resp.text()
        assert resp.status == 422, (query, resp.status)
        assert message in html and 'id="error"' in html and 'name="date_to"' in html, query
        assert 'id="results"' not in html
    refused = [r for r in caplog.records if r.name == "console.views.search"]
    assert len(refused) == len(cases) and all(r.levelno == logging.INFO for r in refused)
    assert "date_to '0001-01-01'" in refused[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    ok = await client.get("/console/search?text=路灯&date_from=1900-01-01&date_to=2999-12-31&lang=zh")
    assert ok.status == 200 and 'id="results"' in await ok.text()


async def test_roles_open_only_their_pages(client, world):
    await login(client, "w1")
    for path in ("/console/triage", "/console/audit", "/console/users", "/console/surveys/manual"):
        assert (await client.get(path)).status == 403, path
    home = await client.get("/console/", allow_redirects=False)
    assert home.headers["Location"] == "/console/queues/mine"


async def test_every_error_is_a_styled_page_in_the_pages_language(client, world):
    """Issue 26: an ended session answered a bare line of text. Every error the console gives
    (401, 403, 404, 405, 409, 413, 422, CSRF) is the console's page: its stylesheet, a title in
    words, the message, a way on; in English with ?lang=en."""
    number = world.triage_case
    ended = await client.post(f"/console/cases/{number}/act/edit_text", data={"description": "改到一半"},
                              allow_redirects=False)
    html = await ended.text()
    assert ended.status == 401 and "console.css" in html and "需要重新登录" in html and "登录已过期" in html
    # the login brings the person back to the case page the form was on
    assert f'href="/console/login?next=/console/cases/{number}"' in html and 'id="typed-kept"' in html
    here = str(client.make_url("/console/triage?sort=oldest"))
    polled = await client.get("/console/triage?sort=oldest", headers={"HX-Request": "true", "HX-Current-URL": here})
    assert polled.status == 401 and 'id="error-message"' in await polled.text()  # console.js makes it a toast
    assert "next=/console/triage%3Fsort%3Doldest" in await polled.text()
    elsewhere = await client.get("/console/triage", headers={"HX-Request": "true",
                                                             "HX-Current-URL": "http://elsewhere.example/console/x"})
    assert 'next=/console/"' in await elsewhere.text()  # never back to another site

    await login(client, "w1")
    token = await csrf_of(client)
    cases = [
        (await client.get(f"/console/cases/{world.other_grid_case}"), 403, "没有权限"),
        (await client.get("/console/no-such-page"), 404, "找不到页面"),
        (await client.put(f"/console/cases/{number}/act/annotate", data={"_csrf": token}), 405, "不支持"),
        (await client.post(f"/console/cases/{number}/act/accept", data={"_csrf": "forged"}), 403, "安全令牌"),
        (await client.post(f"/console/cases/{number}/act/annotate",
                           data={"_csrf": token, "note": "长" * 2_000_000}), 413, "内容太大"),
    ]
    await login(client, "sup")
    token = await csrf_of(client)
    cases.append((await client.post(f"/console/cases/{world.other_grid_case}/act/verify", data={"_csrf": token}),
                  409, "不能核查"))  # a refusal on the case page: that page, with the message
    for resp, status, words in cases:
        html = await resp.text()
        assert resp.status == status, (status, resp.status)
        assert "console.css" in html and 'role="alert"' in html and words in html, status
    english = await client.get("/console/no-such-page?lang=en")
    assert english.status == 404 and "Page not found" in await english.text()
