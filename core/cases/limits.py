"""How much text a person may give Gridline, by kind of field (rules.toml ``[limits]``).

Typed text (a petition's description, a note, a reason, a comment, a name) longer than its
limit is refused with :class:`core.errors.TextTooLong`, which names the field and the
limit, so each channel can say so in the person's language; nothing is cut silently.

Words a machine wrote down from someone's voice (a hotline transcript, a voice note) are
never refused: a caller cannot shorten what they said. Up to ``[limits] transcript``
characters are kept; beyond it the text is cut (:func:`keep_words`) and the case says so
(flag ``text_cut``), while the recording keeps every word.
"""

from __future__ import annotations

from core.errors import TextTooLong
from core.platform.rules import COLUMN_SIZES, load_rules

# The kinds of text and what each covers; rules.toml [limits] gives the numbers.
FIELDS = {
    "description": "a petition's words as typed (chat, Open311, an operator's correction)",
    "address": "a typed or spoken address",
    "note": "a note on a case, a report of work done, the check's note",
    "reason": "why a case is returned, reopened, closed, escalated, merged, dispatched or placed",
    "comment": "a resident's comment in a follow-up survey",
    "name": "a person's name (resident, account)",
}
# The flag of a case whose machine-written words were longer than [limits] transcript.
TEXT_CUT = "text_cut"


def limits() -> dict:
    return load_rules()["limits"]


def limit_of(field: str) -> int:
    return int(limits()[field])


def check_text(field: str, value: str | None) -> str | None:
    """``value`` unchanged if it fits ``field``'s limit; :class:`TextTooLong` if not."""
    if value is None:
        return None
    limit = limit_of(field)
    if len(value) > limit:
        raise TextTooLong(field, limit, len(value))
    return value


def fits(field: str, value: str | None) -> bool:
    return value is None or len(value) <= limit_of(field)


def keep_words(value: str | None) -> tuple[str | None, bool]:
    """Machine-written words, kept up to ``[limits] transcript`` characters: (text, cut)."""
    if value is None:
        return None, False
    limit = int(limits()["transcript"])
    return (value[:limit], True) if len(value) > limit else (value, False)


def clip_name(value: str | None) -> str | None:
    """A name we did not ask for (a chat profile's name), shortened to what the column holds."""
    if not value:
        return None
    return value[:min(limit_of("name"), COLUMN_SIZES["name"])]
