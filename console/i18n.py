"""The console's words: ``console/locales/<lang>.toml`` (Mandarin first, English second),
looked up by dotted key. The language of a page: ``?lang=`` (remembered in a cookie), else
the cookie, else the account's preference, else Mandarin."""

from __future__ import annotations

import tomllib
from functools import lru_cache
from pathlib import Path

from aiohttp import web

LOCALES = Path(__file__).resolve().parent / "locales"
DEFAULT = "zh"
LANGUAGES = ("zh", "en")
LANG_COOKIE = "gridline_lang"


@lru_cache
def catalogue(language: str) -> dict:
    return tomllib.loads((LOCALES / f"{language}.toml").read_text("utf-8"))


def t(language: str, key: str, **values: object) -> str:
    table: object = catalogue(language if language in LANGUAGES else DEFAULT)
    for part in key.split("."):
        table = table[part]  # a missing key is a bug: the catalogue test finds it
    text = str(table)
    return text.format(**values) if values else text


def has(language: str, key: str) -> bool:
    table: object = catalogue(language if language in LANGUAGES else DEFAULT)
    for part in key.split("."):
        if not isinstance(table, dict) or part not in table:
            return False
        table = table[part]
    return True


def language_of(request: web.Request, preference: str | None = None) -> str:
    asked = request.query.get("lang")
    if asked in LANGUAGES:
        return asked
    cookie = request.cookies.get(LANG_COOKIE)
    if cookie in LANGUAGES:
        return cookie
    return preference if preference in LANGUAGES else DEFAULT
