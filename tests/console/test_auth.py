"""console.auth: passwords, login throttling (console.throttle) over the real console app,
audit rows of logins, disabled accounts, client addresses behind a proxy."""

from __future__ import annotations

from datetime import datetime, timedelta

import aiohttp
import pytest
from sqlmodel import select

from console.auth import (
    DEVICE_COOKIE,
    add_user,
    attempt_login,
    client_address,
    hash_password,
    set_disabled,
)
from console.models import ConsoleUser
from core.errors import InvalidInput, NotFound
from core.people.models import AuditEntry
from core.platform import clock
from core.platform.db import session_scope
from tests.console.conftest import PASSWORD, csrf_of, login


def _audit(engine, action):
    with session_scope(engine) as session:
        return session.exec(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)).all()


def test_passwords_are_argon2_and_never_stored_plain(engine, world):
    with session_scope(engine) as session:
        user = session.exec(select(ConsoleUser).where(ConsoleUser.name == "op")).one()
    assert user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash
    with pytest.raises(InvalidInput):
        hash_password("short")


def test_adding_users_checks_what_it_is_given(engine, world):
    with session_scope(engine) as session:
        with pytest.raises(InvalidInput, match="unknown role"):
            add_user(session, "x1", PASSWORD, "king")
        with pytest.raises(NotFound, match="no worker"):
            add_user(session, "x2", PASSWORD, "worker", worker_code="W-NONE")
        with pytest.raises(InvalidInput, match="needs --worker"):
            add_user(session, "x3", PASSWORD, "worker")
        with pytest.raises(InvalidInput, match="exists already"):
            add_user(session, "op", PASSWORD, "operator")
        with pytest.raises(NotFound, match="no grid"):
            add_user(session, "x4", PASSWORD, "viewer", grid_codes=["000"])


def test_login_success_and_failure_are_audited_with_the_address(engine, world):
    with session_scope(engine) as session:
        assert attempt_login(session, "op", "wrong password!", "10.1.2.3").user is None
        assert attempt_login(session, "op", PASSWORD, "10.1.2.3").user is not None
    failed, ok = _audit(engine, "console.login_failed"), _audit(engine, "console.login")
    assert [(a.target_id, a.remote) for a in failed] == [("op", "10.1.2.3")]
    assert [(a.target_id, a.remote) for a in ok] == [("op", "10.1.2.3")]


def test_a_second_attempt_on_an_account_being_checked_waits_a_second_unchecked(engine, world):
    from sqlalchemy import text

    from console import throttle

    with session_scope(engine) as first, throttle.alone_on(first, "op") as alone:  # being checked
        assert alone
        with session_scope(engine) as session:
            result = attempt_login(session, "op", PASSWORD, "10.0.0.1")
        assert result.limited and result.retry_seconds == 1 and result.user is None
    if engine.dialect.name == "postgresql":  # another instance checks it: the advisory lock says so
        with session_scope(engine) as other_instance:
            other_instance.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": throttle.advisory_key("op")})
            with session_scope(engine) as session:
                assert attempt_login(session, "op", PASSWORD, "10.0.0.1").limited
    assert _audit(engine, "console.login_failed") == [] and _audit(engine, "console.login") == []
    with session_scope(engine) as session:
        assert attempt_login(session, "op", PASSWORD, "10.0.0.1").user is not None


# ---- throttling: slowed per lane, never locked (console.throttle) ---------------------------

T0 = datetime(2026, 11, 20, 1, 0, 0)


@pytest.fixture
def office(monkeypatch):
    """Requests arrive through a trusted proxy (this host), so each browser below can say
    which address it is at; the clock is frozen, so waiting costs no time."""
    from console.config import get_console_settings

    monkeypatch.setenv("GRIDLINE_TRUSTED_PROXIES", "127.0.0.1/32")
    get_console_settings.cache_clear()
    clock.freeze(T0)
    yield
    get_console_settings.cache_clear()


def tick(seconds: float) -> None:
    clock.freeze(clock.utcnow() + timedelta(seconds=seconds))


class Browser:
    """One browser at one address, with cookies of its own (its device cookie stays between
    logins; the session cookie goes, as after logging out)."""

    def __init__(self, client, address: str):
        self.client = client
        self.headers = {"X-Forwarded-For": address}
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def get(self, path: str) -> str:
        async with self.http.get(self.client.make_url(path), headers=self.headers) as resp:
            assert resp.status == 200, path
            return await resp.text()

    async def post(self, path: str, data: dict) -> int:
        async with self.http.post(self.client.make_url(path), data=data, headers=self.headers,
                                  allow_redirects=False) as resp:
            return resp.status

    async def login(self, name: str, password: str = PASSWORD, *, lang: str = "zh") -> tuple[int, str, dict]:
        self.http.cookie_jar.clear(lambda cookie: cookie.key != DEVICE_COOKIE)
        page = await self.get(f"/console/login?lang={lang}")
        token = page.split('name="_csrf" value="', 1)[1].split('"', 1)[0]
        async with self.http.post(self.client.make_url(f"/console/login?lang={lang}"), headers=self.headers,
                                  data={"_csrf": token, "name": name, "password": password},
                                  allow_redirects=False) as resp:
            return resp.status, await resp.text(), dict(resp.headers)

    def device_cookie(self) -> str | None:
        return next((c.value for c in self.http.cookie_jar if c.key == DEVICE_COOKIE), None)


@pytest.fixture
async def browsers(client, office):
    made: list[Browser] = []

    def at(address: str) -> Browser:
        made.append(Browser(client, address))
        return made[-1]

    yield at
    for browser in made:
        await browser.http.close()


async def fail(browser: Browser, name: str, password: str = "wrong password") -> int:
    """One checked failure, after waiting out any throttle as a patient guesser does; returns
    how long it had to wait first."""
    status, _, headers = await browser.login(name, password)
    waited = 0
    if status == 429:
        waited = int(headers["Retry-After"])
        tick(waited)
        status, _, _ = await browser.login(name, password)
    assert status == 401
    return waited


def _checked(engine) -> int:
    """Attempts whose password was checked (each leaves an audit row)."""
    return len(_audit(engine, "console.login_failed")) + len(_audit(engine, "console.login"))


async def test_five_wrong_then_right_from_another_address_at_once_and_from_the_same_after_its_wait(
        engine, browsers):
    mistyper, elsewhere = browsers("198.51.100.7"), browsers("203.0.113.40")
    waits = [await fail(mistyper, "op") for _ in range(5)]
    assert waits == [0, 0, 0, 5, 10]  # three free failures, then each wait twice the last
    assert (await elsewhere.login("op"))[0] == 303  # an address without failures: at once

    checked = _checked(engine)
    status, text, headers = await mistyper.login("op")
    assert status == 429 and headers["Retry-After"] == "20" and "请 20 秒后再试" in text
    status, text, _ = await mistyper.login("op", lang="en")
    assert status == 429 and "Try again in 20 seconds" in text
    assert _checked(engine) == checked  # the password was not even looked at
    tick(19)
    assert (await mistyper.login("op"))[0] == 429
    tick(1)
    assert (await mistyper.login("op"))[0] == 303
    # a success from the address starts its count again (a new browser: no device cookie)
    assert [await fail(browsers("198.51.100.7"), "op") for _ in range(4)] == [0, 0, 0, 5]


async def test_twenty_failures_from_the_office_leave_a_colleague_there_alone(engine, browsers):
    office_ip = "192.0.2.50"
    forgetful = browsers(office_ip)
    waits = [await fail(forgetful, "op", f"guess number {i}") for i in range(20)]
    assert max(waits) == 900  # capped: fifteen minutes, never a lock
    assert (await browsers(office_ip).login("sup"))[0] == 303  # a new browser, the right password
    assert (await browsers(office_ip).login("admin"))[0] == 303


async def test_spraying_from_one_address_is_still_slowed_but_not_a_trusted_colleague(engine, browsers):
    office_ip = "192.0.2.60"
    colleague = browsers(office_ip)
    assert (await colleague.login("sup"))[0] == 303 and colleague.device_cookie()  # a trusted browser
    sprayer = browsers(office_ip)
    waits = [await fail(sprayer, name, "Spring2026!") for name in
             ("root", "admin", "op", "test", "guest", "user", "viewer", "manager", "boss", "dept", "w1")]
    # the eighth name makes every further attempt wait, twice as long each time (pairs have 1 failure)
    assert waits == [0] * 8 + [5, 10, 20]
    status, _, headers = await browsers(office_ip).login("viewer")  # untrusted, same address: waits too
    assert status == 429 and headers["Retry-After"] == "40"
    assert (await colleague.login("sup"))[0] == 303  # judged by its own failures only: none
    assert (await browsers("203.0.113.9").login("viewer"))[0] == 303  # another address: at once


async def test_guessing_the_admin_from_many_addresses_does_not_lock_out_the_admin(engine, browsers):
    admins_browser = browsers("198.51.100.1")
    assert (await admins_browser.login("admin"))[0] == 303
    cookie = admins_browser.device_cookie()
    for i in range(10):  # one guess from each of ten addresses: no pair and no address waits
        assert await fail(browsers(f"203.0.113.{i + 1}"), "admin") == 0
    status, _, headers = await browsers("203.0.113.200").login("admin")  # a new browser anywhere waits
    assert status == 429 and headers["Retry-After"] == "5"
    forged = browsers("198.51.100.1")
    forged.http.cookie_jar.update_cookies({DEVICE_COOKIE: "x" * 43}, forged.client.make_url("/console/login"))
    assert (await forged.login("admin"))[0] == 429  # a token we never issued is no device cookie
    assert (await admins_browser.login("admin"))[0] == 303  # the admin's own browser: at once
    assert admins_browser.device_cookie() == cookie  # still fresh: kept, not reissued

    # a trusted browser is slowed by its own failures
    assert [await fail(admins_browser, "admin") for _ in range(6)] == [0] * 5 + [5]
    assert (await admins_browser.login("admin"))[0] == 429


async def test_an_admin_sees_and_clears_a_throttle_and_it_is_audited(engine, browsers):
    mistyper = browsers("198.51.100.9")
    for _ in range(4):
        await fail(mistyper, "op")
    assert (await mistyper.login("op"))[0] == 429

    admin = browsers("198.51.100.1")
    assert (await admin.login("admin"))[0] == 303
    page = await admin.get("/console/users?lang=en")
    row = page.split('<tr data-kind="pair">', 1)[1].split("</tr>", 1)[0]
    assert "<td>op</td><td>198.51.100.9</td><td>4</td>" in row and "09:00:15" in row  # 4th failure at +5 s, then 10 s (local time)
    csrf = page.split('name="_csrf" value="', 1)[1].split('"', 1)[0]

    supervisor = browsers("198.51.100.2")
    assert (await supervisor.login("sup"))[0] == 303
    sup_csrf = (await supervisor.get("/console/search")).split('name="_csrf" value="', 1)[1].split('"', 1)[0]
    assert await supervisor.post("/console/users/throttles/clear",
                                 {"_csrf": sup_csrf, "account": "op", "address": "198.51.100.9"}) == 403
    assert (await mistyper.login("op"))[0] == 429

    assert await admin.post("/console/users/throttles/clear",
                            {"_csrf": csrf, "account": "op", "address": "198.51.100.9"}) == 303
    [row] = _audit(engine, "console.login_unthrottle")
    assert (row.actor, row.remote, row.detail) == ("console:admin", "198.51.100.1",
                                                   {"account": "op", "address": "198.51.100.9"})
    assert (await mistyper.login("op"))[0] == 303
    assert 'id="no-throttles"' in await admin.get("/console/users")


async def test_a_disabled_account_is_logged_out_at_once(client, engine, world):
    await login(client, "op")
    assert (await client.get("/console/triage")).status == 200
    with session_scope(engine) as session:
        set_disabled(session, "op", True, actor="cli")
    assert (await client.get("/console/triage", allow_redirects=False)).status == 303
    await login(client, "op", expect=401)


async def test_admin_disables_from_the_users_page(client, engine, world):
    await login(client, "admin")
    token = await csrf_of(client, "/console/users")
    resp = await client.post("/console/users/viewer/disable", data={"_csrf": token}, allow_redirects=False)
    assert resp.status == 303
    rows = _audit(engine, "console.user_disable")
    assert [(r.actor, r.target_id) for r in rows] == [("console:admin", "viewer")] and rows[0].remote


class _Req:
    def __init__(self, remote, xff=None):
        self.remote = remote
        self.headers = {"X-Forwarded-For": xff} if xff else {}


def test_x_forwarded_for_only_from_a_configured_proxy(monkeypatch):
    from console.config import get_console_settings

    get_console_settings.cache_clear()
    monkeypatch.delenv("GRIDLINE_TRUSTED_PROXIES", raising=False)
    try:
        assert client_address(_Req("203.0.113.5", "1.2.3.4")) == "203.0.113.5"
        monkeypatch.setenv("GRIDLINE_TRUSTED_PROXIES", "10.0.0.0/8")
        get_console_settings.cache_clear()
        # the nearest hop that is not our proxy; what the client wrote first is not believed
        assert client_address(_Req("10.0.0.7", "6.6.6.6, 198.51.100.20, 10.0.0.3")) == "198.51.100.20"
        assert client_address(_Req("203.0.113.5", "1.2.3.4")) == "203.0.113.5"  # not via the proxy
    finally:
        get_console_settings.cache_clear()
