"""An administrator of the console for tests outside tests/console that read an admin page,
such as ``/console/system.json`` (what ``/healthz`` showed to anyone before): one account,
and a login through the real form, from an aiohttp test client or over plain HTTP."""

from __future__ import annotations

import http.cookiejar
import json
import urllib.parse
import urllib.request

from sqlalchemy import Engine

from core.platform.db import session_scope

ADMIN = "sysadmin"
PASSWORD = "correct horse battery staple"


def add_admin(engine: Engine) -> None:
    from console.auth import add_user

    with session_scope(engine) as session:
        add_user(session, ADMIN, PASSWORD, "admin")


def _csrf(html: str) -> str:
    return html.split('name="_csrf" value="', 1)[1].split('"', 1)[0]


async def admin_json(client, path: str = "/console/system.json") -> dict:  # noqa: ANN001
    """``path`` as JSON, read by the administrator over an aiohttp TestClient."""
    page = await client.get("/console/login")
    resp = await client.post("/console/login", data={"_csrf": _csrf(await page.text()), "name": ADMIN,
                                                     "password": PASSWORD}, allow_redirects=False)
    assert resp.status == 303, await resp.text()
    answer = await client.get(path)
    assert answer.status == 200, await answer.text()
    return await answer.json()


def admin_json_over_http(url: str, path: str = "/console/system.json") -> dict:
    """The same from a running server (``gridline serve``), with a cookie jar of its own."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    with opener.open(f"{url}/console/login", timeout=10) as resp:
        token = _csrf(resp.read().decode())
    form = urllib.parse.urlencode({"_csrf": token, "name": ADMIN, "password": PASSWORD}).encode()
    with opener.open(f"{url}/console/login", data=form, timeout=30) as resp:  # follows the 303
        assert resp.status == 200
    with opener.open(f"{url}{path}", timeout=10) as resp:
        return json.loads(resp.read())
