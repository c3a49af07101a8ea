"""My account: the language the console speaks to me."""

from __future__ import annotations

from aiohttp import web

from console import db
from console.i18n import LANG_COOKIE, LANGUAGES
from console.models import ConsoleUser
from console.views.common import audit_view, form, principal, render, who
from console.web import PREFIX
from core.errors import InvalidInput


async def show(request: web.Request) -> web.Response:
    return render(request, "account.html", {})


def _set_language(session, user_id: int, language: str, who_) -> None:  # noqa: ANN001
    user = session.get(ConsoleUser, user_id)
    user.language = language
    session.add(user)
    audit_view(session, who_, "console.user_language", "console_user", user.name, {"language": language})


async def save(request: web.Request) -> web.Response:
    data = await form(request)
    language = data.get("language", "")
    if language not in LANGUAGES:
        raise InvalidInput(f"language is one of {', '.join(LANGUAGES)}",
                           code="console.no_language", language=language)
    await db.run(request, _set_language, principal(request).id, language, who(request))
    response = web.HTTPSeeOther(f"{PREFIX}/account")
    response.del_cookie(LANG_COOKIE, path=f"{PREFIX}/")  # the preference speaks now
    raise response


def setup(app: web.Application) -> None:
    app.router.add_get("/account", show)
    app.router.add_post("/account", save)
