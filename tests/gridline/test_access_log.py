"""gridline.access_log: `gridline serve` logs each request's path and a redacted query. A
phone search, a search by name, a survey link's token and a phone number hidden in the login
page's ``next=`` never reach the log of a real server process."""

from __future__ import annotations

import http.cookiejar
import urllib.error
import urllib.parse
import urllib.request

import pytest

from gridline.access_log import redact_query, redacted_target
from tests.support.console_admin import ADMIN, PASSWORD, add_admin
from tests.support.serve import ServeProcess, database_url
from tests.support.waiting import wait_until

PHONE = "13912345678"
TOKEN = "sUrVeYtOkEn_9f8e7d6c5b4a"
NAME = "陈大明"


@pytest.mark.parametrize(("query", "shown"), [
    (f"phone={PHONE}&status=received", "phone=***&status=received"),
    ("phone=%2B86+139+1234+5678", "phone=***"),
    (f"t={TOKEN}", "t=***"),
    ("token=abc&api_key=k1", "token=***&api_key=***"),
    (f"text={urllib.parse.quote(NAME)}&grid=350102", "text=***&grid=350102"),
    # a phone or ID number or an e-mail address under any key, in any spelling
    ("q=139-1234-5678", "q=***"),
    ("number=350499199001011234", "number=***"),
    ("x=35049919900101123X", "x=***"),
    ("contact=wxm%40example.com", "contact=***"),
    # dates, cursors, short codes stay readable
    ("date_from=2026-11-01&date_to=2026-11-20&lang=en", "date_from=2026-11-01&date_to=2026-11-20&lang=en"),
    ("seg=3&round=1&after=status", "seg=3&round=1&after=status"),
    ("a=&b", "a=&b="),
])
def test_redact_query(query, shown):
    assert redact_query(query) == shown


def test_a_link_inside_the_query_is_redacted_too():
    target = "/console/login?next=" + urllib.parse.quote(f"/console/search?phone={PHONE}&grid=1", safe="")
    assert redacted_target(target) == "/console/login?next=/console/search?phone=***%26grid=1"
    assert redacted_target("/healthz") == "/healthz"


def _opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))


def _status(opener, url: str, data: bytes | None = None, headers: dict | None = None) -> int:  # noqa: ANN001
    try:
        with opener.open(urllib.request.Request(url, data=data, headers=headers or {}), timeout=30) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_log_of_a_real_server_keeps_no_phone_token_or_name(engine, tmp_path):
    add_admin(engine)
    with ServeProcess(tmp_path / "data", database_url(engine), env={"GRIDLINE_SPEECH_MODEL": ""}) as server:
        browser = _opener()
        page = browser.open(f"{server.url}/console/login", timeout=10).read().decode()
        csrf = page.split('name="_csrf" value="', 1)[1].split('"', 1)[0]
        form = urllib.parse.urlencode({"_csrf": csrf, "name": ADMIN, "password": PASSWORD}).encode()
        assert _status(browser, f"{server.url}/console/login", form) == 200  # after the 303
        assert _status(browser, f"{server.url}/console/search?phone={PHONE}&status=received") == 200
        assert _status(browser, f"{server.url}/console/search?text={urllib.parse.quote(NAME)}",
                       headers={"Referer": f"{server.url}/console/search?phone={PHONE}"}) == 200
        # a resident's survey link (a POST without Twilio's signature: refused, and logged)
        assert _status(_opener(), f"{server.url}/twilio/survey/1/answer?t={TOKEN}", b"Digits=1") == 403
        # an anonymous phone search: sent to the login page, the search in its next=
        assert _status(_opener(), f"{server.url}/console/search?phone=139-1234-5678") == 200

        def logged() -> bool:
            return all(line in server.output for line in (
                "GET /console/search?phone=***&status=received HTTP/1.1\" 200",
                "GET /console/search?text=*** HTTP/1.1\" 200",
                "POST /twilio/survey/1/answer?t=*** HTTP/1.1\" 403",
                "GET /console/login?next=/console/search?phone=*** HTTP/1.1\" 200"))

        wait_until(logged, timeout=20, message="the access log lines")
        out = server.output
    for secret in (PHONE, "139-1234-5678", "12345678", TOKEN, NAME, urllib.parse.quote(NAME), PASSWORD):
        assert secret not in out, secret
