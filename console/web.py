"""The operator console inside Gridline's one aiohttp application, under ``/console/``.

``console.app.setup(app, services)`` mounts a sub-application with its own middlewares, so nothing of
the console (sessions, CSRF, login redirects) touches the webhooks beside it:

    errors     a refused action shows the core's message; no traceback reaches a page
    session    aiohttp-session over ``ConsoleSession`` rows (``console.auth``)
    guard      security headers; anonymous requests go to the login page; the language
    csrf       every POST carries the session's token (form field or X-CSRF-Token header)

Pages are modules of ``console.views``; each registers its routes and, for the menu, its
``NavItem`` (what the role must be allowed to open). The next pages (dashboard, reports)
slot in the same way.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from pathlib import Path
from urllib.parse import quote

import aiohttp_jinja2
from aiohttp import web
from aiohttp_session import get_session
from markupsafe import Markup, escape
from yarl import URL

from console.access import text_for
from console.auth import PRINCIPAL
from console.config import get_console_settings
from console.i18n import CONSOLE, LANG_COOKIE, has, language_of, languages, t
from console.nav import NAV
from core.cases.limits import limit_of
from core.errors import DomainError, IllegalTransition, InvalidInput, NotFound, TextTooLong
from core.platform import i18n
from core.platform.clock import zone_label

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
PREFIX = "/console"
PUBLIC = ("/console/login", "/console/static/")
LOGIN_CSRF_COOKIE = "gridline_login_csrf"
CSRF_TOKEN = web.RequestKey("console_csrf_token", str)

CSP = ("default-src 'self'; img-src 'self' data:; media-src 'self'; style-src 'self' 'unsafe-inline'; "
       "script-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


def principal(request: web.Request):  # noqa: ANN201
    return request.get(PRINCIPAL)


def lang(request: web.Request) -> str:
    p = principal(request)
    return language_of(request, p.language if p else None)


def status_for(exc: DomainError) -> int:
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, IllegalTransition):
        return 409
    return 422 if isinstance(exc, InvalidInput) else 400


def error_text(language: str, exc: DomainError) -> str:
    """A refusal of the core (or of the console) in the page's language: ``errors.<code>``
    with the error's parameters, from the console catalogue or the core one behind it."""
    if isinstance(exc, TextTooLong):
        field = t(language, f"fields.{exc.field}") if has(language, f"fields.{exc.field}") else exc.field
        return t(language, "errors.codes.text_too_long", field=field, limit=exc.limit, length=exc.length)
    code = getattr(exc, "code", "") or ""
    kind = ("not_found" if isinstance(exc, NotFound) else "illegal_transition" if isinstance(exc, IllegalTransition)
            else "invalid_input" if isinstance(exc, InvalidInput) else "domain_error")
    # A code with no words yet is said by its kind, never as core's English sentence on the page.
    generic = t(language, f"errors.generic.{kind}")
    if "." not in code or not has(language, f"errors.{code}"):
        log.warning("console: no words for error code %r (%s)", code, exc.message.splitlines()[0][:200])
        return generic
    return i18n.say(language, f"errors.{code}", exc.params, catalogue=CONSOLE, default=generic)


def close_reason_text(language: str, text: str | None) -> str:
    """A close reason as stored (``withdrawn``, ``withdrawn: 居民来电撤回`` or typed words)
    with its code in words."""
    if not text:
        return ""
    code, sep, note = text.partition(": ")
    if has(language, f"close_reasons.{code}"):
        return t(language, f"close_reasons.{code}") + (f"：{note}" if sep and language == "zh" else f": {note}" if sep else "")
    return text


def words_with_markup(language: str, key: str, **values: object) -> str:
    """A sentence of the catalogue with values put in; a value that is already markup (a
    ``<time>`` from the ``local`` filter) stays markup, everything else is escaped."""
    if not any(isinstance(v, Markup) for v in values.values()):
        return t(language, key, **values)
    held = {name: f"\x00{i}\x00" for i, name in enumerate(values) if isinstance(values[name], Markup)}
    text = str(escape(t(language, key, **{k: held.get(k, v) for k, v in values.items()})))
    for name, token in held.items():
        text = text.replace(str(escape(token)), str(values[name]))
    return Markup(text)


def render(request: web.Request, template: str, context: dict | None = None, *, status: int = 200) -> web.Response:
    language = lang(request)
    p = principal(request)
    ctx = {
        "me": p,
        "lang": language,
        "t": lambda key, **kw: words_with_markup(language, key, **kw),
        "csrf": request.get(CSRF_TOKEN, ""),
        # A form's one-time mark: the same form sent twice (a double press, a retried request)
        # is taken once (console.casework.apply).
        "once": lambda: secrets.token_urlsafe(12),
        "nav": [item for item in NAV if p is not None and p.may_open(item.page)],
        "path": request.path,
        "query": request.query,
        "languages": languages(),
        "zone": zone_label(),
        "static": lambda name: str(request.app.router["static"].url_for(filename=name)),
        "mask": ((lambda value, people=(), case=None: text_for(p, value, people, case)) if p is not None
                 else (lambda value, people=(), case=None: value)),
        "has_flag": lambda flag: has(language, f"flags.{flag}"),
        "has_event": lambda action: has(language, f"events.{action}"),
        "has_close": lambda reason: has(language, f"close_reasons.{reason}"),
        "has": lambda key: has(language, key),
        "close_reason_text": lambda text: close_reason_text(language, text),
        # A reason core (or a console default) wrote as a code, in the page's words; typed
        # reasons and rows from before codes as they are.
        "reason": lambda code, data=None: i18n.reason_text(language, code, data, catalogue=CONSOLE),
        # Why routing chose the case's grid: its trace of codes, or the reason of older rows.
        "routing": lambda case: i18n.case_routing_text(language, case.routing_trace, case.routing_reason,
                                                       catalogue=CONSOLE),
    }
    ctx.update(context or {})
    response = aiohttp_jinja2.render_template(template, request, ctx, status=status)
    return response


def error_page(request: web.Request, status: int, message: str, *, login_next: str | None = None) -> web.Response:
    """Every error the console answers: a page in the page's language with a title in words
    and a way on (back, home, or, when the session has ended, the login that returns here).
    An htmx request gets the same page; console.js shows its message in a toast."""
    language = lang(request)
    title_key = f"errors.titles.e{status}"
    return render(request, "error.html", {
        "status": status, "message": message,
        "title": t(language, title_key) if has(language, title_key) else t(language, "errors.titles.e500"),
        "login_next": login_next,
    }, status=status)


def return_target(request: web.Request) -> str:
    """Where a login after an ended session should bring the person back: the case page a
    form was sent from, the page a GET asked for, else the page it came from (same site)."""
    path = request.path
    if request.method == "GET" and not request.headers.get("HX-Request"):
        return request.path_qs
    parts = path.split("/")
    if len(parts) >= 4 and parts[2] == "cases" and parts[3].isdigit():
        return f"{PREFIX}/cases/{parts[3]}"
    came_from = request.headers.get("HX-Current-URL") or request.headers.get("Referer") or ""
    if came_from:
        url = URL(came_from)
        if (not url.is_absolute() or url.host == request.url.host) and url.path.startswith(f"{PREFIX}/"):
            return url.path_qs
    return f"{PREFIX}/"


@web.middleware
async def timing(request: web.Request, handler):  # noqa: ANN001, ANN201
    """Server-Timing on every answer: how long the server worked on it (the benchmark reads it)."""
    started = time.perf_counter()
    response = await handler(request)
    if not response.prepared:
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.2f}"
    return response


@web.middleware
async def errors(request: web.Request, handler):  # noqa: ANN001, ANN201
    try:
        return await handler(request)
    except DomainError as exc:
        log.info("console: %s %s refused: %s", request.method, request.path, exc.message.splitlines()[0][:200])
        return error_page(request, status_for(exc), error_text(lang(request), exc))
    except web.HTTPRequestEntityTooLarge as exc:  # more than [limits] form_body_bytes
        log.info("console: %s %s: %s", request.method, request.path, exc.text)
        return error_page(request, 413, t(lang(request), "errors.too_large", kb=limit_of("form_body_bytes") // 1024))
    except web.HTTPException as exc:
        if exc.status < 400 or (exc.text or "").startswith("<"):
            raise  # redirects, and pages already made
        language = lang(request)
        if exc.status == 401:  # the session ended (or there was none) on a form or an htmx request
            message = t(language, "errors.session_ended")
            response = error_page(request, 401, message, login_next=return_target(request))
        else:
            key = {403: "errors.forbidden", 404: "errors.not_found", 405: "errors.method"}.get(exc.status)
            response = error_page(request, exc.status, t(language, key) if key else t(language, "errors.generic.domain_error"))
        for name in ("Allow", "Retry-After", "WWW-Authenticate"):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
        return response
    except Exception:  # a bug: logged once with its traceback, the page says so plainly
        log.exception("console: %s %s failed", request.method, request.path)
        return error_page(request, 500, t(lang(request), "errors.internal"))


@web.middleware
async def guard(request: web.Request, handler):  # noqa: ANN001, ANN201
    public = request.path.startswith(PUBLIC)
    if not public:
        session = await get_session(request)  # loads the account too (DatabaseStorage)
        if principal(request) is None:
            if request.method == "GET" and not request.headers.get("HX-Request"):
                raise web.HTTPSeeOther(f"{PREFIX}/login?next={_safe_next(request.path_qs)}")
            raise web.HTTPUnauthorized()  # the errors middleware makes it a page with the way back
        request[CSRF_TOKEN] = session.get("csrf", "")
    response = await handler(request)
    asked = request.query.get("lang")
    if asked in languages():
        response.set_cookie(LANG_COOKIE, asked, path=f"{PREFIX}/", max_age=365 * 86400, httponly=True,
                            samesite="Lax", secure=get_console_settings().secure_cookies)
    if not request.path.startswith("/console/static/"):
        response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def _safe_next(target: str) -> str:
    return quote(target if target.startswith(f"{PREFIX}/") else f"{PREFIX}/", safe="")


@web.middleware
async def csrf(request: web.Request, handler):  # noqa: ANN001, ANN201
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return await handler(request)
    if request.content_type == "multipart/form-data" and getattr(request.match_info.handler, "checks_csrf_itself", False):
        return await handler(request)  # a large upload: the view reads its token from the first part
    if request.path == f"{PREFIX}/login":
        expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    else:
        expected = request.get(CSRF_TOKEN, "")
    sent = request.headers.get("X-CSRF-Token", "")
    if not sent and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        sent = (await request.post()).get("_csrf", "")
    if not expected or not isinstance(sent, str) or not hmac.compare_digest(expected, sent):
        return error_page(request, 403, t(lang(request), "errors.csrf"))
    return await handler(request)


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)
