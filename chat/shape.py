"""Telegram updates checked at the edge, before they are kept or handled.

PTB builds its objects from whatever JSON arrives and checks no types: a message with its
text as a list, a location whose longitude is a string, or a message without its chat
reaches the handlers (and PTB's own filters) and fails there. Telegram never sends such an
update, so one that comes anyway (a forged or broken sender) is ignored with a WARNING line:
``problem`` names what is wrong with it, for the fields the bot and PTB's handlers read.
The whole update is also checked for what the inbox cannot store: a NUL character or a lone
surrogate in a string, a number that is not finite, an integer beyond 64 bits.
"""

from __future__ import annotations

import math
import re
from typing import Any

INT64 = 2**63
UNSTORABLE_CHARACTER = re.compile("[\x00\ud800-\udfff]")

# A field's kind: "int", "bool", "str", "number", a schema (dict), ("list", kind),
# ("number", low, high) or ("one of", values). A name ending in "!" is required.
USER = {"id!": "int", "is_bot!": "bool", "first_name!": "str", "last_name": "str", "username": "str",
        "language_code": "str"}
CHAT = {"id!": "int", "type!": ("one of", {"private", "group", "supergroup", "channel"}), "title": "str", "username": "str", "first_name": "str", "last_name": "str"}
ENTITY = {"type!": "str", "offset!": "int", "length!": "int"}
FILE = {"file_id!": "str", "file_unique_id!": "str", "file_size": "int", "mime_type": "str", "duration": "int",
        "width": "int", "height": "int", "file_name": "str"}
LOCATION = {"latitude!": ("number", -90, 90), "longitude!": ("number", -180, 180), "horizontal_accuracy": "number"}
CONTACT = {"phone_number!": "str", "first_name!": "str", "last_name": "str", "user_id": "int"}
MESSAGE = {
    "message_id!": "int", "date!": "int", "chat!": CHAT, "from": USER, "sender_chat": CHAT,
    "text": "str", "caption": "str", "entities": ("list", ENTITY), "caption_entities": ("list", ENTITY),
    "location": LOCATION, "contact": CONTACT, "voice": FILE, "audio": FILE, "photo": ("list", FILE),
    "document": FILE, "sticker": FILE, "video": FILE, "video_note": FILE, "animation": FILE,
}
# A resident's message names its sender; a channel's post need not (the bot ignores those).
RESIDENT_MESSAGE = {**{k: v for k, v in MESSAGE.items() if k != "from"}, "from!": USER}
CALLBACK_QUERY = {"id!": "str", "from!": USER, "chat_instance!": "str", "data": "str", "message": MESSAGE,
                  "inline_message_id": "str"}
KINDS = {"message": RESIDENT_MESSAGE, "edited_message": MESSAGE, "channel_post": MESSAGE,
         "edited_channel_post": MESSAGE, "callback_query": CALLBACK_QUERY}


def problem(data: dict) -> str | None:
    """What is wrong with the update ``data`` (already a dict with an integer update_id), or None."""
    stored = _unstorable(data)
    if stored:
        return stored
    if not -INT64 <= data["update_id"] < INT64 or isinstance(data["update_id"], bool):
        return "update_id is not a 64-bit integer"
    kinds = [kind for kind in KINDS if kind in data]
    if len(kinds) != 1:
        return "not one message or button press" if kinds else "a kind of update the bot does not ask for"
    return _check(data[kinds[0]], KINDS[kinds[0]], kinds[0])


def _check(value: Any, kind: Any, where: str) -> str | None:
    if isinstance(kind, dict):
        if not isinstance(value, dict):
            return f"{where} is not an object"
        for name, field_kind in kind.items():
            key = name.rstrip("!")
            if key not in value or value[key] is None:
                if name.endswith("!"):
                    return f"{where}.{key} is missing"
                continue
            found = _check(value[key], field_kind, f"{where}.{key}")
            if found:
                return found
        return None
    if isinstance(kind, tuple) and kind[0] == "list":
        if not isinstance(value, list):
            return f"{where} is not a list"
        for i, item in enumerate(value):
            found = _check(item, kind[1], f"{where}[{i}]")
            if found:
                return found
        return None
    if isinstance(kind, tuple) and kind[0] == "one of":
        return None if isinstance(value, str) and value in kind[1] else f"{where} is not one of {sorted(kind[1])}"
    if isinstance(kind, tuple):  # ("number", low, high)
        _, low, high = kind
        if not _number(value) or not low <= value <= high:
            return f"{where} is not a number between {low} and {high}"
        return None
    ok = {"int": lambda v: isinstance(v, int) and not isinstance(v, bool) and -INT64 <= v < INT64,
          "bool": lambda v: isinstance(v, bool),
          "str": lambda v: isinstance(v, str),
          "number": _number}[kind](value)
    return None if ok else f"{where} is not a {kind}"


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _unstorable(data: Any) -> str | None:
    """A value the inbox (JSON in SQLite or PostgreSQL) cannot keep, anywhere in the update."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            if UNSTORABLE_CHARACTER.search(item):
                return "a string with a NUL character or a lone surrogate"
        elif isinstance(item, float) and not math.isfinite(item):
            return "a number that is not finite"
        elif isinstance(item, int) and not isinstance(item, bool) and not -INT64 <= item < INT64:
            return "an integer beyond 64 bits"
    return None
