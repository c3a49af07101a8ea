"""The console's words: ``console/locales/<lang>.toml`` (Mandarin first, English second),
looked up by dotted key through the one catalogue mechanism (``core/platform/i18n.py``); what core's
codes mean comes from the core catalogue behind it. The language of a page: ``?lang=``
(remembered in a cookie), else the cookie, else the account's preference, else Mandarin."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from core.platform.i18n import CORE, DEFAULT, Catalogue

LOCALES = Path(__file__).resolve().parent / "locales"
CONSOLE = Catalogue("console", LOCALES, fallback=CORE)
LANG_COOKIE = "gridline_lang"


def languages() -> tuple[str, ...]:
    """The languages the console speaks: one ``console/locales/<lang>.toml`` each."""
    return CONSOLE.languages


def __getattr__(name: str) -> object:  # ``LANGUAGES`` follows the files present
    if name == "LANGUAGES":
        return languages()
    raise AttributeError(name)


def catalogue(language: str) -> dict:
    return CONSOLE.table(language)


def t(language: str, key: str, **values: object) -> str:
    return CONSOLE.t(language, key, **values)  # a missing key is a bug: the catalogue test finds it


def has(language: str, key: str) -> bool:
    return CONSOLE.has(language, key)


def language_of(request: web.Request, preference: str | None = None) -> str:
    spoken = languages()
    asked = request.query.get("lang")
    if asked in spoken:
        return asked
    cookie = request.cookies.get(LANG_COOKIE)
    if cookie in spoken:
        return cookie
    return preference if preference in spoken else DEFAULT
