"""Log in and out."""

from __future__ import annotations

import secrets
from urllib.parse import urlparse

from aiohttp import web
from aiohttp_session import get_session, new_session

from console import db
from console.auth import DEVICE_COOKIE, attempt_login, client_address, login_policy
from console.config import get_console_settings
from console.i18n import t
from console.models import ConsoleSession
from console.views.common import form, lang, principal, render
from console.web import LOGIN_CSRF_COOKIE, PREFIX, new_csrf_token
from core.people import audit


def _next(target: str | None) -> str:
    parsed = urlparse(target or "")
    if parsed.scheme or parsed.netloc or not (target or "").startswith(f"{PREFIX}/") or target.startswith("//"):
        return f"{PREFIX}/"
    return target


def _login_page(request: web.Request, *, error: str = "", status: int = 200, name: str = "") -> web.Response:
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(32)
    response = render(request, "login.html", {"login_csrf": token, "error": error, "name": name,
                                              "next": _next(request.query.get("next"))}, status=status)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, path=f"{PREFIX}/login", httponly=True, samesite="Strict",
                        secure=get_console_settings().secure_cookies)
    return response


async def login_form(request: web.Request) -> web.Response:
    await get_session(request)
    if principal(request) is not None:
        raise web.HTTPSeeOther(_next(request.query.get("next")))
    return _login_page(request)


async def login(request: web.Request) -> web.Response:
    data = await form(request)
    name, password = data.get("name", ""), (await request.post()).get("password", "")
    language = lang(request)
    if not name or not isinstance(password, str) or not password:
        return _login_page(request, error=t(language, "login.missing"), status=400, name=name)
    remote = client_address(request)
    result = await db.run(request, attempt_login, name, password, remote, request.cookies.get(DEVICE_COOKIE))
    if result.limited:
        response = _login_page(request, error=t(language, "login.limited",
                                                wait=wait_words(language, result.retry_seconds)),
                               status=429, name=name)
        response.headers["Retry-After"] = str(result.retry_seconds)
        return response
    if result.user is None:
        return _login_page(request, error=t(language, "login.failed"), status=401, name=name)
    old = await get_session(request)
    if old.identity is not None:  # a fresh session id at every login (no fixation)
        await db.run(request, _drop, old.identity)
    session = await new_session(request)
    session["user_id"] = result.user.id
    session["csrf"] = new_csrf_token()
    response = web.HTTPSeeOther(_next(request.query.get("next") or data.get("next")))
    response.del_cookie(LOGIN_CSRF_COOKIE, path=f"{PREFIX}/login")
    if result.device_cookie is not None:  # this browser is now trusted for the account (console.throttle)
        days = login_policy().device_trust.days
        response.set_cookie(DEVICE_COOKIE, result.device_cookie, path=f"{PREFIX}/login", max_age=days * 86400,
                            httponly=True, samesite="Strict", secure=get_console_settings().secure_cookies)
    raise response


def wait_words(language: str, seconds: int) -> str:
    if seconds < 120:
        return t(language, "login.seconds", n=seconds)
    return t(language, "login.minutes", n=-(-seconds // 60))


def _drop(session, digest: str) -> None:  # noqa: ANN001
    row = session.get(ConsoleSession, digest)
    if row is not None:
        session.delete(row)


async def logout(request: web.Request) -> web.Response:
    session = await get_session(request)
    p = principal(request)
    if p is not None:
        def record(s):  # noqa: ANN001, ANN202
            audit.record(s, actor=p.actor, action="console.logout", target_type="console_user",
                         target_id=p.name, remote=client_address(request))

        await db.run(request, record)
    session.invalidate()
    raise web.HTTPSeeOther(f"{PREFIX}/login")


async def home(request: web.Request) -> web.Response:
    p = principal(request)
    for page, path in (("triage", "triage"), ("queues", "queues/mine"), ("search", "search")):
        if p.may_open(page):
            raise web.HTTPSeeOther(f"{PREFIX}/{path}")
    return render(request, "error.html", {"status": 403, "message": t(lang(request), "errors.no_pages")},
                  status=403)


def setup(app: web.Application) -> None:
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/", home)
