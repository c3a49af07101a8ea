"""Compact, signed callback data for inline buttons.

Telegram hands ``callback_data`` back verbatim, but anyone can forge an update with any
string in it, so nothing in it is trusted: every button's data is
``<field>:<field>…:<signature>`` with an HMAC over the fields (key derived from the bot's
token and webhook secret), at most 64 bytes (the Bot API limit), and the handlers then
check each field against the allowed values and against the database (the dialog is the
current one, the survey is pending and belongs to this chat's resident).

Layouts::

    d:<dialog id>:<action>[:<value>]        intake dialog (voice ok/retry, address, category, submit)
    sv:<survey id>:<answers>[:-]             survey: "s"|"p"|"n" solved, then "s"|"b"|"n" satisfied;
                                             a trailing "-" is "no comment"
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

MAX_BYTES = 64
SIG_CHARS = 8
_FIELD = re.compile(r"^[A-Za-z0-9_\-.]{1,24}$")

# Survey answer letters -> the answer scales of rules.toml [survey] (core.followup.survey_policy).
SOLVED_CODES = {"s": "solved", "p": "partly", "n": "not"}
SATISFIED_CODES = {"s": "satisfied", "b": "basically", "n": "not"}


class CallbackCodec:
    def __init__(self, secret: str | bytes):
        raw = secret.encode() if isinstance(secret, str) else secret
        self._key = hashlib.sha256(b"gridline-chat-callbacks\0" + raw).digest()

    def _sig(self, payload: str) -> str:
        mac = hmac.new(self._key, payload.encode(), hashlib.sha256).digest()
        return base64.b32encode(mac).decode()[:SIG_CHARS].lower()

    def encode(self, *fields: object) -> str:
        parts = [str(f) for f in fields]
        for part in parts:
            if not _FIELD.match(part):
                raise ValueError(f"callback field {part!r} is not compact ascii")
        payload = ":".join(parts)
        data = f"{payload}:{self._sig(payload)}"
        if len(data.encode()) > MAX_BYTES:
            raise ValueError(f"callback data {data!r} exceeds {MAX_BYTES} bytes")
        return data

    def decode(self, data: str | None) -> list[str] | None:
        """The fields, or ``None`` for anything not made by ``encode`` with our key."""
        if not isinstance(data, str) or not data or len(data.encode()) > MAX_BYTES:
            return None
        payload, _, sig = data.rpartition(":")
        if not payload or not hmac.compare_digest(sig, self._sig(payload)):
            return None
        parts = payload.split(":")
        if not all(_FIELD.match(p) for p in parts):
            return None
        return parts


def parse_survey(fields: list[str] | None) -> tuple[int, str, str | None, bool] | None:
    """``sv`` fields -> (survey id, solved, satisfied or None, no_comment), or None."""
    if not fields or fields[0] != "sv" or len(fields) not in (3, 4):
        return None
    if not fields[1].isdigit() or len(fields[1]) > 12:
        return None
    answers = fields[2]
    if len(answers) not in (1, 2) or answers[0] not in SOLVED_CODES:
        return None
    if len(answers) == 2 and answers[1] not in SATISFIED_CODES:
        return None
    no_comment = len(fields) == 4
    if no_comment and (fields[3] != "-" or len(answers) != 2):
        return None
    satisfied = SATISFIED_CODES[answers[1]] if len(answers) == 2 else None
    return int(fields[1]), SOLVED_CODES[answers[0]], satisfied, no_comment


def parse_dialog(fields: list[str] | None, actions: dict[str, bool]) -> tuple[str, str, str | None] | None:
    """``d`` fields -> (dialog id, action, value) when the action is known; ``actions``
    maps each action to whether it takes a value."""
    if not fields or fields[0] != "d" or len(fields) not in (3, 4):
        return None
    dialog, action = fields[1], fields[2]
    if action not in actions or actions[action] != (len(fields) == 4):
        return None
    return dialog, action, fields[3] if len(fields) == 4 else None
