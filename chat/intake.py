"""The intake dialog without a channel: problem -> where -> category -> confirm -> case number.

The states, the draft, the transitions and the words (``chat/locales``) live here; the state
diagram is in ``chat/dialog.md``. A channel adapter turns what the resident did into an
``Event``, calls ``step`` and shows the ``Reply`` list it gets back in its own way (Telegram:
``chat/dialog.py``, inline buttons; the web: ``chat/resident_web.py``, buttons in the page).

Buttons here are plain action strings (``"vy"``, ``"c:2"``, ``"ok"``); each adapter protects
them its own way (Telegram: signed callback data carrying the dialog id; the web: the CSRF
token and the dialog id in the post). Filing is idempotent per dialog (``petition``'s key).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from chat.texts import BOT, clip, t
from core.actions import Petition, idempotency_key
from core.actions.transcription import TRANSCRIPT_PENDING
from core.cases import limits
from core.cases.models import Channel
from core.platform.rules import load_rules

PROBLEM, VOICE_OK, WHERE, ADDRESS_OK, CATEGORY, CONFIRM = (
    "problem", "voice_ok", "where", "address_ok", "category", "confirm",
)
ADDRESS_PICK = "address_pick"  # two or more close places offered as buttons
STATES = (PROBLEM, VOICE_OK, WHERE, ADDRESS_OK, ADDRESS_PICK, CATEGORY, CONFIRM)
IDLE = None  # no dialog: the next words start one

MAX_PHOTOS = 5
SUMMARY_DESCRIPTION = 600  # characters echoed back in the confirmation

# dialog button actions -> whether they carry a value
ACTIONS = {"vy": False, "vn": False, "ay": False, "an": False, "c": True, "ok": False, "no": False,
           "ap": True, "ax": False, "oks": False}  # oks: submit, confidential (保密提交)  # ap:<n>: the n-th close place chosen; ax: none of them


def new_draft(resident: int | None, phone: str | None, household: str | None) -> dict:
    """A fresh unfinished petition. Its ``id`` names the dialog: buttons and the filing's
    idempotency key carry it."""
    return {
        "id": secrets.token_hex(4),
        "resident": resident,
        "phone": phone,
        "household": household,
        "description": None,
        "transcript": None,
        "confidence": None,
        "voice": None,
        "photos": [],
        "attachments": [],
        "lat": None,
        "lon": None,
        "place": None,
        "address_text": None,
        "address_typed": None,
        "candidate": None,
        "categories": [],
        "category": None,
    }


def say(language: str, key: str, channel: str = "telegram", **values: object) -> str:
    """``dialog.<name>`` in the resident's language; a channel may word a step its own way
    under ``<channel>.<name>`` (the web has no /commands and no reply keyboard)."""
    section, _, name = key.partition(".")
    if channel != "telegram" and section == "dialog" and BOT.has(language, f"{channel}.{name}"):
        return t(language, f"{channel}.{name}", **values)
    return t(language, key, **values)


def summary(draft: dict, language: str, channel: str = "telegram") -> str:
    """What is about to be filed, as the confirmation shows it."""
    names = dict(tuple(o) for o in draft.get("categories") or [])
    extras = ""
    if draft["photos"]:
        extras += t(language, "dialog.confirm_photos", count=len(draft["photos"]))
    if draft["voice"]:
        extras += t(language, "dialog.confirm_voice")
    return say(
        language,
        "dialog.confirm",
        channel,
        description=clip(draft.get("description") or "", SUMMARY_DESCRIPTION),
        place=draft.get("place") or t(language, "dialog.place_unknown"),
        category=names.get(draft.get("category")) or t(language, "dialog.category_unknown"),
        extras=extras,
    ) + "\n" + t(language, "dialog.confirm_confidential")


def confidential_words() -> frozenset[str]:
    """What a resident types at the confirmation to file in confidence (rules.toml
    ``[chat] confidential_words``), normalised as ``_plain`` reads the reply."""
    return frozenset(_plain(w) for w in load_rules()["chat"]["confidential_words"])


def _plain(text: str) -> str:
    """A typed reply without spaces, punctuation and case: 「保密！」 and ``保 密`` read as 保密."""
    return "".join(ch for ch in text.lower() if ch.isalnum())


def asks_confidential(text: str) -> bool:
    return bool(text.strip()) and _plain(text) in confidential_words()


def petition(draft: dict, source: str, conversation: object, *, channel: Channel = Channel.chat,
             flags: tuple[str, ...] = (), confidential: bool = False) -> Petition:
    """The petition a confirmed draft files; the key is ``<source>|<conversation>|<dialog id>``,
    so pressing submit again (or a retry after a crash) never makes a second case."""
    return Petition(
        channel=channel,
        description=draft.get("description") or "",
        idempotency_key=idempotency_key(source, conversation, draft["id"]),
        contact_phone=draft.get("phone"),
        resident_id=draft.get("resident"),
        transcript=draft.get("transcript"),
        transcript_confidence=draft.get("confidence"),
        attachment_ids=tuple(draft["attachments"]),
        latitude=draft.get("lat"),
        longitude=draft.get("lon"),
        address_text=draft.get("address_text"),
        category_code=draft.get("category"),
        flags=flags,
        confidential=confidential,
    )


def filed_text(filed: Any, language: str, due_text: str, channel: str = "telegram") -> str:
    """The answer with the case number, and what happens next."""
    if filed.held == "duplicate" and filed.duplicate_of:
        routing = t(language, "dialog.filed_duplicate", earlier=filed.duplicate_of)
    elif filed.held:
        routing = t(language, "dialog.filed_held")
    elif filed.dispatched and filed.grid:
        routing = t(language, "dialog.filed_dispatched", grid=filed.grid, due=due_text or "—")
    else:
        routing = t(language, "dialog.filed_triage")
    return say(language, "dialog.filed", channel, number=filed.number, routing=routing)


def address_shown(place: str, grid: str | None) -> str:
    return place if not grid or grid in place else f"{place}（{grid}）"


def address_chosen(draft: dict) -> None:
    """The resident said yes to the matched address: the registered name first (routing
    then matches it exactly), what they typed after it."""
    candidate = draft["candidate"]
    typed = candidate["typed"]
    draft["address_text"] = candidate["place"] if typed == candidate["place"] else f"{candidate['place']}（{typed}）"
    draft["place"] = candidate["place"]


# ---------------------------------------------------------------- the engine for adapters


@dataclass
class Reply:
    """One message to the resident. ``buttons``: (label, action) in a row; ``controls``
    names the channel's own inputs the step wants shown ("where": location and skip)."""

    text: str
    buttons: list[tuple[str, str]] = field(default_factory=list)
    controls: str | None = None
    case: str | None = None  # the case number, on the answer that filed it
    # What a channel with a keyboard of its own shows with it: "remove" it while the problem
    # is asked, "menu" again once the place is settled or the dialog ends.
    keyboard: str | None = None


@dataclass
class Event:
    """What the resident did: ``kind`` is start, text, location, button, photo, voice or cancel."""

    kind: str
    text: str = ""  # the words, or a photo's caption
    action: str = ""
    lat: float | None = None
    lon: float | None = None
    attachment: int | None = None  # a stored photo or voice note
    path: str | None = None
    heard: Any = None  # chat.media.Heard of a voice note, when it was understood
    voice_problem: str | None = None  # "unavailable", "failed" or "unclear"


class Ports(Protocol):
    """What the engine asks of the database (each adapter runs these off its event loop)."""

    def grid_at(self, lat: float, lon: float) -> Awaitable[str | None]: ...
    def match_address(self, text: str) -> Awaitable[tuple[str, str] | None]: ...
    def address_choices(self, text: str) -> Awaitable[list[tuple[int, str]]]: ...
    def pick_address(self, text: str, choices: list[tuple[int, str]]) -> Awaitable[int | None]: ...
    def category_options(self, text: str) -> Awaitable[list[tuple[str, str]]]: ...
    def file(self, petition: Petition) -> Awaitable[Any]: ...
    def due_text(self, due: Any) -> str: ...


@dataclass
class Turn:
    state: str | None
    draft: dict | None
    replies: list[Reply]
    filed: Any = None


SKIP = "skip"  # the web's "skip" where; Telegram's is the reply keyboard's label


class Dialog:
    """``step(state, draft, event)`` -> ``Turn``. ``fresh`` makes a draft for this resident."""

    def __init__(self, ports: Ports, language: str, channel: str, fresh: Callable[[], Awaitable[dict]],
                 source: str, conversation: object, *, file_unheard_voice: bool = False):
        self.ports, self.language, self.channel = ports, language, channel
        self.fresh, self.source, self.conversation = fresh, source, conversation
        # With no recogniser: file the voice note for an operator (the web, like the hotline),
        # or ask the resident to type (the bot, where typing is at hand).
        self.file_unheard_voice = file_unheard_voice

    def _say(self, key: str, **values: object) -> str:
        return say(self.language, key, self.channel, **values)

    def _b(self, key: str, action: str) -> tuple[str, str]:
        return (self._say(key), action)

    async def step(self, state: str | None, draft: dict | None, event: Event) -> Turn:
        replies: list[Reply] = []
        if event.kind == "cancel":
            return Turn(IDLE, None, [Reply(self._say("dialog.cancelled"), keyboard="menu")])
        if event.kind == "text" and not event.text.strip() and state in (IDLE, PROBLEM, VOICE_OK):
            event = Event("start")  # nothing said: begin again, asking for the problem
        if event.kind == "start":
            return Turn(PROBLEM, await self.fresh(), [Reply(self._say("dialog.ask_problem"), keyboard="remove")])
        if draft is None or state not in STATES:
            draft, state = await self.fresh(), PROBLEM
        if event.kind == "photo" and state not in (PROBLEM, VOICE_OK):
            # A photo later on joins the draft; the question asked stays open.
            if len(draft["photos"]) >= MAX_PHOTOS:
                return Turn(state, draft, [Reply(self._say("dialog.photo_too_many", max=MAX_PHOTOS))])
            draft["photos"].append(event.path)
            draft["attachments"].append(event.attachment)
            return Turn(state, draft, [Reply(self._say("web.photo_added", count=len(draft["photos"])))])
        handler = getattr(self, f"_{state}")
        state = await handler(draft, event, replies)
        if state is IDLE:
            return Turn(IDLE, None, replies, getattr(self, "_filed", None))
        return Turn(state, draft, replies)

    # ---- problem

    async def _problem(self, draft: dict, event: Event, replies: list[Reply]) -> str | None:
        if event.kind == "text":
            text = event.text.strip()
            if not text:
                replies.append(Reply(self._say("dialog.ask_problem")))
                return PROBLEM
            if not limits.fits("description", text):
                replies.append(Reply(self._say("dialog.too_long_text", limit=limits.limit_of("description"),
                                               length=len(text))))
                return PROBLEM
            draft.update(description=text, transcript=None, confidence=None)
            return await self._ask_where(draft, replies)
        if event.kind == "photo":
            if len(draft["photos"]) >= MAX_PHOTOS:
                replies.append(Reply(self._say("dialog.photo_too_many", max=MAX_PHOTOS)))
                return PROBLEM
            draft["photos"].append(event.path)
            draft["attachments"].append(event.attachment)
            caption = event.text.strip()
            if caption and limits.fits("description", caption):
                draft["description"] = caption
            elif caption:  # too long: said so; the photo is kept
                replies.append(Reply(self._say("dialog.too_long_text", limit=limits.limit_of("description"),
                                               length=len(caption))))
            if draft["description"]:  # a typed correction came before: go on
                return await self._ask_where(draft, replies)
            replies.append(Reply(self._say("dialog.photo_saved")))
            return PROBLEM
        if event.kind == "voice":
            if event.attachment is not None:
                draft["voice"] = event.path
                draft["attachments"].append(event.attachment)
            if event.voice_problem == "unavailable" and event.attachment is not None and self.file_unheard_voice:
                # No recogniser here: the note is kept and filed for an operator to write down.
                draft["pending_voice"] = True
                draft["description"] = draft["description"] or t(self.language, "web.voice_pending_description")
                replies.append(Reply(self._say("web.voice_kept")))
                return await self._ask_where(draft, replies)
            if event.voice_problem:
                replies.append(Reply(self._say(f"dialog.voice_{event.voice_problem}")))
                return PROBLEM
            heard = event.heard
            draft.update(description=heard.text, transcript=heard.transcript, confidence=heard.confidence)
            replies.append(Reply(self._say("dialog.voice_heard", text=clip(heard.text, SUMMARY_DESCRIPTION)),
                                 [self._b("dialog.voice_yes", "vy"), self._b("dialog.voice_retry", "vn")]))
            return VOICE_OK
        if event.kind == "location":
            where = await self._keep_location(draft, event)
            replies.append(Reply(f"{where}\n{self._say('dialog.ask_problem_there')}", keyboard="remove"))
            return PROBLEM
        replies.append(Reply(self._say("dialog.not_here")))
        return PROBLEM

    async def _voice_ok(self, draft: dict, event: Event, replies: list[Reply]) -> str | None:
        if event.kind == "button" and event.action == "vy":
            return await self._ask_where(draft, replies)
        if event.kind == "button" and event.action == "vn":
            replies.append(Reply(self._say("dialog.ask_problem")))
            return PROBLEM
        if event.kind in ("text", "voice", "photo"):  # a typed correction, another try
            return await self._problem(draft, event, replies)
        if event.kind != "button":
            replies.append(Reply(self._say("dialog.use_buttons")))
        return VOICE_OK

    # ---- where

    async def _keep_location(self, draft: dict, event: Event) -> str:
        draft["lat"], draft["lon"] = event.lat, event.lon
        grid = await self.ports.grid_at(event.lat, event.lon)
        draft["place"] = grid
        return t(self.language, "dialog.location_in_grid", grid=grid) if grid else t(
            self.language, "dialog.location_outside")

    async def _ask_where(self, draft: dict, replies: list[Reply]) -> str:
        if draft.get("lat") is not None:
            return await self._ask_category(draft, replies)  # the location came first
        replies.append(Reply(self._say("dialog.ask_where"), controls="where"))
        return WHERE

    async def _where(self, draft: dict, event: Event, replies: list[Reply]) -> str | None:
        if event.kind == "location":
            replies.append(Reply(await self._keep_location(draft, event), keyboard="menu"))
            return await self._ask_category(draft, replies)
        if event.kind == "button" and event.action == SKIP:
            if draft.get("household"):
                draft["place"] = draft["household"]
                replies.append(Reply(self._say("dialog.where_household", address=draft["household"]), keyboard="menu"))
            else:
                draft["address_text"] = draft.get("address_typed")
                draft["place"] = draft.get("address_typed")
                replies.append(Reply(self._say("dialog.where_skipped"), keyboard="menu"))
            return await self._ask_category(draft, replies)
        if event.kind != "text" or not event.text.strip():
            replies.append(Reply(self._say("dialog.ask_where"), controls="where"))
            return WHERE
        text = event.text.strip()[:200]
        found = await self.ports.match_address(text)
        if found is None:
            draft["address_typed"] = text
            replies.append(Reply(self._say("dialog.address_unknown", text=clip(text, 60)), controls="where"))
            return WHERE
        choices = await self.ports.address_choices(text)
        if choices:  # the matcher will not choose between close places: the resident does
            draft["offered"] = {"typed": text, "common": found[1], "choices": [list(c) for c in choices]}
            buttons = [(name, f"ap:{i}") for i, (_, name) in enumerate(choices)]
            buttons.append(self._b("dialog.address_none_of_them", "ax"))
            replies.append(Reply(self._say("dialog.address_which"), buttons))
            return ADDRESS_PICK
        place, grid = found
        draft["candidate"] = {"typed": text, "place": place, "grid": grid}
        replies.append(Reply(self._say("dialog.address_confirm", place=address_shown(place, grid)),
                             [self._b("dialog.address_yes", "ay"), self._b("dialog.address_no", "an")]))
        return ADDRESS_OK

    async def _address_ok(self, draft: dict, event: Event, replies: list[Reply]) -> str | None:
        if event.kind == "button" and event.action == "ay" and draft.get("candidate"):
            address_chosen(draft)
            replies.append(Reply(self._say("dialog.place_chosen", place=draft["place"]), keyboard="menu"))
            return await self._ask_category(draft, replies)
        if event.kind in ("text", "location") or (event.kind == "button" and event.action == SKIP):
            return await self._where(draft, event, replies)  # another address, a point, or skip
        if event.kind == "button":  # "no", or "yes" with nothing to say yes to
            draft["candidate"] = None
            replies.append(Reply(self._say("dialog.address_retry"), controls="where"))
            return WHERE
        replies.append(Reply(self._say("dialog.use_buttons")))
        return ADDRESS_OK

    async def _address_pick(self, draft: dict, event: Event, replies: list[Reply]) -> str | None:
        choices = (draft.get("offered") or {}).get("choices") or []
        if event.kind == "button":
            action, _, value = event.action.partition(":")
            if action == "ap" and value.isdigit() and int(value) < len(choices):
                return await self._place_picked(draft, int(value), replies)
            if action == "ax":
                return await self._place_picked(draft, None, replies)
            return ADDRESS_PICK  # stale or not this question's: nothing to say
        if event.kind == "location":
            draft.pop("offered", None)
            return await self._where(draft, event, replies)
        if event.kind != "text" or not choices:
            replies.append(Reply(self._say("dialog.use_buttons")))
            return ADDRESS_PICK
        # Typed instead of pressed: matched against the offered places only. Words naming
        # another place start over with that address; anything else is none of them.
        text = event.text.strip()[:200]
        index = await self.ports.pick_address(text, [(int(g), str(n)) for g, n in choices])
        if index is None and await self.ports.match_address(text) is not None:
            draft.pop("offered", None)
            return await self._where(draft, event, replies)
        return await self._place_picked(draft, index, replies)

    async def _place_picked(self, draft: dict, index: int | None, replies: list[Reply]) -> str:
        """One of the offered places (its registered name is the address: routing matches it
        exactly), or none (``None``): the typed words stay the address, which routing takes no
        deeper than the places' common grid; staff check it."""
        offered = draft.pop("offered", None) or {}
        choices = offered.get("choices") or []
        if index is not None and 0 <= index < len(choices):
            name = choices[index][1]
            draft["address_text"] = draft["place"] = name
            replies.append(Reply(self._say("dialog.place_chosen", place=name), keyboard="menu"))
        else:
            draft["address_text"] = offered.get("typed") or draft.get("address_text")
            draft["place"] = offered.get("common") or draft["address_text"]
            replies.append(Reply(self._say("dialog.address_not_chosen", place=draft["place"]), keyboard="menu"))
        return await self._ask_category(draft, replies)

    # ---- category and confirm

    async def _ask_category(self, draft: dict, replies: list[Reply]) -> str:
        text = " ".join(x for x in (draft.get("description"), draft.get("address_text")) if x)
        options = await self.ports.category_options(text)
        draft["categories"] = [list(o) for o in options]
        buttons = [(name, f"c:{i}") for i, (_, name) in enumerate(options)]
        buttons.append(self._b("dialog.category_other", "c:x"))
        replies.append(Reply(self._say("dialog.ask_category"), buttons))
        return CATEGORY

    async def _category(self, draft: dict, event: Event, replies: list[Reply]) -> str | None:
        action, _, value = event.action.partition(":")
        options = draft.get("categories") or []
        if event.kind == "button" and action == "c" and (value == "x" or (value.isdigit() and int(value) < len(options))):
            draft["category"] = None if value == "x" else options[int(value)][0]
            return self._ask_confirm(draft, replies)
        if event.kind == "button":  # ours but not one of this draft's options: stale, nothing to say
            return CATEGORY
        replies.append(Reply(self._say("dialog.use_buttons"),
                             [(name, f"c:{i}") for i, (_, name) in enumerate(options)]
                             + [self._b("dialog.category_other", "c:x")]))
        return CATEGORY

    def _confirm_buttons(self) -> list[tuple[str, str]]:
        return [self._b("dialog.submit", "ok"), self._b("dialog.submit_confidential", "oks"),
                self._b("dialog.cancel_button", "no")]

    def _ask_confirm(self, draft: dict, replies: list[Reply]) -> str:
        replies.append(Reply(summary(draft, self.language, self.channel), self._confirm_buttons()))
        return CONFIRM

    async def _confirm(self, draft: dict, event: Event, replies: list[Reply]) -> str | None:
        if event.kind == "button" and event.action == "no":
            replies.append(Reply(self._say("dialog.cancelled"), keyboard="menu"))
            return IDLE
        if event.kind == "button" and event.action not in ("ok", "oks"):
            return CONFIRM
        # The typed word 保密 (or another of rules.toml's) is the 保密提交 button in words.
        typed_confidential = event.kind == "text" and asks_confidential(event.text)
        if event.kind != "button" and not typed_confidential:
            replies.append(Reply(self._say("dialog.use_buttons"), self._confirm_buttons()))
            return CONFIRM
        confidential = typed_confidential or event.action == "oks"
        # A failure here is raised: the adapter keeps the draft (and the state) as it was,
        # and a press again files the same case at most once.
        flags = (TRANSCRIPT_PENDING,) if draft.get("pending_voice") else ()
        filed = await self.ports.file(petition(draft, self.source, self.conversation, flags=flags,
                                               confidential=confidential))
        self._filed = filed
        text = filed_text(filed, self.language, self.ports.due_text(filed.due), self.channel)
        if confidential:
            text += "\n" + self._say("dialog.filed_confidential")
        replies.append(Reply(text, case=filed.number, keyboard="menu"))
        return IDLE
