"""The bot's words: ``chat/locales/<lang>.toml`` (Mandarin first), looked up by dotted key.

The language of a resident comes from Telegram's ``language_code`` (``zh-hans`` → zh,
``en-GB`` → en, a language without a catalogue file → zh) and is stored on ``Resident.language`` for the
messages the bot sends on its own (notifications, surveys).
"""

from __future__ import annotations

from pathlib import Path

from core.platform.i18n import CORE, DEFAULT, Catalogue

LOCALES = Path(__file__).resolve().parent / "locales"
BOT = Catalogue("chat", LOCALES, fallback=CORE)

# Bot API limits (https://core.telegram.org/bots/api): counted in UTF-16 code units.
MAX_MESSAGE = 4096
MAX_CAPTION = 1024
MAX_CALLBACK_DATA = 64  # bytes
MAX_DOWNLOAD = 20 * 1024 * 1024  # getFile refuses bigger files


def __getattr__(name: str) -> object:  # ``LANGUAGES`` follows the files present
    if name == "LANGUAGES":
        return BOT.languages
    raise AttributeError(name)


def catalogue(language: str) -> dict:
    return BOT.table(language)


def language_of(code: str | None) -> str:
    """Telegram's IETF tag -> one of ours; Mandarin unless the user's app speaks a language
    we have words for (a ``chat/locales/<lang>.toml``)."""
    return BOT.language(code.lower().split("-")[0] if code else None)


def t(language: str, key: str, **values: object) -> str:
    return BOT.t(language, key, **values)  # a missing key is a bug: fail loudly in tests


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def clip(text: str, limit: int, marker: str = "…") -> str:
    """Cut ``text`` to at most ``limit`` UTF-16 code units (Telegram's count), adding
    ``marker`` when something was cut."""
    if utf16_len(text) <= limit:
        return text
    budget = limit - utf16_len(marker)
    out, used = [], 0
    for ch in text:
        n = 2 if ord(ch) > 0xFFFF else 1
        if used + n > budget:
            break
        out.append(ch)
        used += n
    return "".join(out) + marker


def fit_message(text: str, language: str = DEFAULT) -> str:
    """A message that Telegram accepts: long texts are cut with a clear note."""
    return clip(text, MAX_MESSAGE, "\n" + t(language, "dialog.truncated"))
