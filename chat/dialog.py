"""The intake dialog on Telegram: problem -> where -> category -> confirm -> case number.

The dialog itself (states, transitions, words) is ``chat.intake``; this is its Telegram
adapter: each handler turns an update into an ``Event`` for ``Dialog.step`` and sends the
answers with Telegram's keyboards; downloads, contacts and the filing's retries are its own.

A persistent ``ConversationHandler`` (state diagram in ``chat/dialog.md``). The resident's
unfinished petition (the "draft") lives in ``chat_data`` and is written to the database
with the conversation state after every update, so a restart continues the dialog.

Every state answers everything: unexpected message types get a note on what is
accepted, stale or forged buttons get "expired". Filing is idempotent per dialog
(key ``chat|<chat id>|<dialog id>``), so a repeated "submit" never makes a second case.
"""

from __future__ import annotations

import contextlib
import warnings

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, ReplyKeyboardRemove, Update
from telegram.constants import ChatAction
from telegram.error import TelegramError
from telegram.ext import (
    CallbackQueryHandler,
    CommandHandler,
    ConversationHandler,
    MessageHandler,
    filters,
)
from telegram.warnings import PTBUserWarning

from chat import media, store
from chat.callbacks import parse_dialog
from chat.common import (
    Context,
    answer,
    deps,
    drop_buttons,
    labels,
    lang,
    log,
    main_menu,
    reply,
    retryable,
    unsupported_key,
    where_keyboard,
)
from chat.intake import (  # the channel-agnostic dialog: states, transitions, words, the petition
    ACTIONS,
    ADDRESS_OK,
    ADDRESS_PICK,
    CATEGORY,
    CONFIRM,
    MAX_PHOTOS,
    PROBLEM,
    SKIP,
    VOICE_OK,
    WHERE,
    Dialog,
    Event,
    Reply,
    Turn,
    asks_confidential,
    new_draft,
    summary,
)
from chat.texts import t
from chat.welcome import greet, link_contact

NAME = "intake"
END = ConversationHandler.END


# ---------------------------------------------------------------- the adapter


def _draft(context: Context) -> dict | None:
    return context.chat_data.get("draft")


def _button(context: Context, draft: dict, text: str, action: str, value: str | None = None) -> InlineKeyboardButton:
    fields = ["d", draft["id"], action] + ([value] if value is not None else [])
    return InlineKeyboardButton(text, callback_data=deps(context).codec.encode(*fields))


async def _new_draft(update: Update, context: Context) -> dict:
    d = deps(context)
    language = lang(update)
    user = update.effective_user
    info = await d.db(store.resident_for_chat, update.effective_chat.id, language,
                      user.full_name if user else None)
    draft = new_draft(info.id, info.phone, info.household_address)
    context.chat_data["draft"] = draft
    return draft


async def _ensure_draft(update: Update, context: Context) -> dict:
    return _draft(context) or await _new_draft(update, context)


def _end(context: Context) -> str:
    context.chat_data.pop("draft", None)
    return END


class _Ports:
    """``chat.intake.Ports`` on the bot's database threads."""

    def __init__(self, context: Context):
        self.d = deps(context)

    async def grid_at(self, lat: float, lon: float) -> str | None:
        return await self.d.db(store.grid_at, lat, lon)

    async def match_address(self, text: str) -> tuple[str, str] | None:
        return await self.d.db(store.match_address, text)

    async def address_choices(self, text: str) -> list[tuple[int, str]]:
        return await self.d.db(store.address_choices, text)

    async def pick_address(self, text: str, choices: list[tuple[int, str]]) -> int | None:
        return await self.d.db(store.pick_address, text, choices)

    async def category_options(self, text: str) -> list[tuple[str, str]]:
        return await self.d.db(store.category_options, text)

    async def file(self, petition) -> store.Filed:  # noqa: ANN001
        return await self.d.db(store.file, petition)

    def due_text(self, due) -> str:  # noqa: ANN001
        return store.local(due, self.d.tz)


def _markup(context: Context, draft: dict | None, said: Reply, language: str):  # noqa: ANN202
    if said.buttons and draft is not None:
        row = []
        for label, action in said.buttons:
            name, _, value = action.partition(":")
            row.append(_button(context, draft, label, name, value or None))
        # Categories and places one to a row (long names); the two-choice questions side by side.
        one_a_row = said.buttons[0][1].startswith(("c:", "ap:"))
        return InlineKeyboardMarkup([[b] for b in row] if one_a_row else [row])
    if said.controls == "where":
        return where_keyboard(language)
    if said.keyboard == "menu":
        return main_menu(language)
    if said.keyboard == "remove":
        return ReplyKeyboardRemove()
    return None


async def _step(update: Update, context: Context, state: str | None, event: Event) -> str:
    """One turn of the channel-agnostic dialog (``chat.intake``): its answers sent with
    Telegram's keyboards, its draft kept in ``chat_data``; its state is the conversation's."""
    language = lang(update)
    dialog = Dialog(_Ports(context), language, "telegram", lambda: _new_draft(update, context), "chat",
                    update.effective_chat.id)
    turn = await dialog.step(state, _draft(context), event)
    await _say(update, context, turn, language)
    if turn.state is None:
        return _end(context)
    context.chat_data["draft"] = turn.draft
    return turn.state


async def _say(update: Update, context: Context, turn: Turn, language: str) -> None:
    for said in turn.replies:
        await reply(update, said.text, language, reply_markup=_markup(context, turn.draft, said, language))


# ---------------------------------------------------------------- entry and problem


async def start_report(update: Update, context: Context) -> str:
    """"我要反映" / /new: a fresh draft, then ask for the problem."""
    return await _step(update, context, None, Event("start"))


async def problem_text(update: Update, context: Context) -> str:
    return await _step(update, context, PROBLEM, Event("text", text=update.effective_message.text or ""))


async def problem_voice(update: Update, context: Context) -> str:
    """Telegram's part: the length, the download, the recogniser; the dialog's part: the rest."""
    d = deps(context)
    draft = await _ensure_draft(update, context)
    language = lang(update)
    voice = update.effective_message.voice or update.effective_message.audio
    if media.seconds(voice) > media.MAX_VOICE_SECONDS:
        await reply(update, t(language, "dialog.too_long_voice", minutes=media.MAX_VOICE_SECONDS // 60), language)
        return PROBLEM
    with contextlib.suppress(TelegramError):
        await update.effective_chat.send_action(ChatAction.TYPING)
    stored = await _fetch(update, context, voice, "voice", ".oga", language)
    if stored is None:
        return PROBLEM
    att = await d.db(store.save_attachment, "voice", stored.path, stored.mime_type, stored.size, stored.sha256,
                     stored.waiting_in)
    event = Event("voice", attachment=att, path=stored.path)
    try:
        heard = await media.transcribe(d.speech, stored.path, d.media)
    except media.SpeechUnavailable:
        event.voice_problem = "unavailable"
    except media.Unreadable as exc:
        log.info("unreadable voice note %s: %s", stored.path, exc)
        event.voice_problem = "failed"
    else:
        if heard.text:  # heard, not typed: never refused (core keeps up to a cap)
            event.heard = heard
        else:
            event.voice_problem = "unclear"
    context.chat_data["draft"] = draft
    return await _step(update, context, PROBLEM, event)


async def _fetch(update: Update, context: Context, file, kind: str, ext: str, language: str):  # noqa: ANN001, ANN202
    """Download a resident's file into the data directory; ``None`` once they have been
    told why it could not be (too big for the Bot API, or the download failed)."""
    try:
        d = deps(context)
        return await media.download(context.bot, file.file_id, file.file_size, kind, ext, d.data_dir,
                                    local_mode=d.local_mode, store=d.media, spool=d.spool)
    except media.TooBig:
        await reply(update, t(language, "dialog.file_too_big", mb=20), language)
    except media.DownloadFailed as exc:
        log.warning("%s download failed: %s", kind, exc)
        await reply(update, t(language, "dialog.download_failed"), language)
    return None


async def problem_photo(update: Update, context: Context) -> str:
    d = deps(context)
    draft = await _ensure_draft(update, context)
    language = lang(update)
    message = update.effective_message
    caption = message.caption or ""
    if len(draft["photos"]) >= MAX_PHOTOS:  # said by the dialog, nothing downloaded
        return await _step(update, context, PROBLEM, Event("photo", text=caption))
    stored = await _fetch(update, context, message.photo[-1], "photo", ".jpg", language)
    if stored is None:
        return PROBLEM
    att = await d.db(store.save_attachment, "photo", stored.path, stored.mime_type, stored.size, stored.sha256,
                     stored.waiting_in)
    return await _step(update, context, PROBLEM, Event("photo", text=caption, attachment=att, path=stored.path))


def _location(update: Update) -> Event:
    loc = update.effective_message.location
    return Event("location", lat=loc.latitude, lon=loc.longitude)


async def location_first(update: Update, context: Context) -> str:
    """A location before any words (outside a dialog, or while we wait for the problem):
    keep it as the place and ask what the problem is; "where" is then not asked."""
    return await _step(update, context, PROBLEM, _location(update))


async def voice_choice(update: Update, context: Context) -> str:
    return await _pressed(update, context, VOICE_OK)


# ---------------------------------------------------------------- where


async def where_location(update: Update, context: Context) -> str:
    return await _step(update, context, WHERE, _location(update))


async def where_text(update: Update, context: Context) -> str:
    text = (update.effective_message.text or "").strip()
    if text in labels("menu.skip"):  # the reply keyboard's 跳过
        return await _step(update, context, WHERE, Event("button", action=SKIP))
    return await _step(update, context, WHERE, Event("text", text=text))


async def address_choice(update: Update, context: Context) -> str:
    return await _pressed(update, context, ADDRESS_OK)


async def place_choice(update: Update, context: Context) -> str:
    return await _pressed(update, context, ADDRESS_PICK)


async def place_typed(update: Update, context: Context) -> str:
    return await _step(update, context, ADDRESS_PICK, Event("text", text=(update.effective_message.text or "")))


async def where_contact(update: Update, context: Context) -> str:
    draft = await _ensure_draft(update, context)
    address = await link_contact(update, context)
    if address:
        draft["household"] = address
        draft["place"] = address
        draft["phone"] = update.effective_message.contact.phone_number
        turn = Turn(CATEGORY, draft, [])
        dialog = Dialog(_Ports(context), lang(update), "telegram", lambda: _new_draft(update, context), "chat",
                        update.effective_chat.id)
        state = await dialog._ask_category(draft, turn.replies)
        await _say(update, context, turn, lang(update))
        return state
    return WHERE


# ---------------------------------------------------------------- category and confirm


async def category_choice(update: Update, context: Context) -> str:
    return await _pressed(update, context, CATEGORY)


def _summary(draft: dict, language: str) -> str:
    return summary(draft, language)


def _confirm_buttons(context: Context, draft: dict, language: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[
        _button(context, draft, t(language, "dialog.submit"), "ok"),
        _button(context, draft, t(language, "dialog.submit_confidential"), "oks"),
        _button(context, draft, t(language, "dialog.cancel_button"), "no"),
    ]])


async def confirm_choice(update: Update, context: Context) -> str:
    choice = await _dialog_button(update, context)
    if choice is None:
        return CONFIRM
    event = Event("button", action=choice[0])
    if choice[0] not in ("ok", "oks"):
        return await _step(update, context, CONFIRM, event)
    return await _file_confirmed(update, context, event)


async def confirm_text(update: Update, context: Context) -> str:
    """Typed at the confirmation: 保密 (rules.toml ``[chat] confidential_words``) files the
    petition in confidence, as the 🔒 保密提交 button does; other words get the buttons again."""
    text = (update.effective_message.text or "").strip()
    if not asks_confidential(text):
        return await _step(update, context, CONFIRM, Event("text", text=text))
    return await _file_confirmed(update, context, Event("text", text=text))


async def _file_confirmed(update: Update, context: Context, event: Event) -> str:
    d = deps(context)
    draft = _draft(context)
    language = lang(update)
    chat_id = update.effective_chat.id
    try:
        return await _step(update, context, CONFIRM, event)
    except Exception as exc:
        # The pressed button is gone: the answer carries the buttons again, so the resident
        # always has something to press. A failure worth waiting out is raised on: the update
        # stays in the inbox and is handled again (filing is idempotent per dialog), and the
        # number is sent when it is filed.
        again = retryable(exc)
        log.warning("filing the petition of chat %s failed (%s: %s)%s", chat_id, type(exc).__name__, exc,
                    "; it will be tried again" if again else "", exc_info=None if again else exc)
        key = "dialog.filing_failed" if again else "dialog.filing_refused"
        with contextlib.suppress(TelegramError):
            await reply(update, t(language, key), language, reply_markup=_confirm_buttons(context, draft, language))
            if again:
                d.delayed.add(update.update_id)  # told: no second "it will be handled"
        if again:
            raise
        return CONFIRM


async def _pressed(update: Update, context: Context, state: str) -> str:
    """A dialog button, checked (signature, this dialog), as the dialog's event."""
    choice = await _dialog_button(update, context)
    if choice is None:
        return state
    action, value = choice
    return await _step(update, context, state, Event("button", action=f"{action}:{value}" if value else action))


# ---------------------------------------------------------------- buttons, cancel, the rest


async def _dialog_button(update: Update, context: Context) -> tuple[str, str | None] | None:
    """Validate a dialog button: ours (signature), well-formed, of the current dialog.
    Answers the query in every case; None when the press must be ignored."""
    d = deps(context)
    query = update.callback_query
    parsed = parse_dialog(d.codec.decode(query.data), ACTIONS)
    draft = _draft(context)
    if parsed is None or draft is None or parsed[0] != draft["id"]:
        await answer(d, query, t(lang(update), "survey.expired"))
        return None
    await answer(d, query)
    await drop_buttons(query)
    return parsed[1], parsed[2]


async def stale_button(update: Update, context: Context) -> None:
    await _dialog_button(update, context)
    return None


async def use_buttons(update: Update, context: Context) -> None:
    language = lang(update)
    await reply(update, t(language, "dialog.use_buttons"), language)
    return None


async def not_here(update: Update, context: Context) -> None:
    language = lang(update)
    message = update.effective_message
    key = unsupported_key(message)
    text = t(language, "dialog.not_here") if key == "unsupported.other" else t(language, key)
    await reply(update, text, language)
    return None


async def cancel(update: Update, context: Context) -> str:
    return await _step(update, context, None, Event("cancel"))


async def restart(update: Update, context: Context) -> str:
    await greet(update, context)
    return _end(context)


async def contact_in_dialog(update: Update, context: Context) -> None:
    await link_contact(update, context)
    return None


def build() -> ConversationHandler:
    report_button = filters.Text(sorted(labels("menu.report")))
    free_text = filters.TEXT & ~filters.COMMAND & ~report_button
    voice = filters.VOICE | filters.AUDIO
    # First in every state: the resident can always cancel, start over or begin anew.
    lead = [
        CommandHandler("cancel", cancel),
        CommandHandler("start", restart),
        CommandHandler("new", start_report),
        MessageHandler(report_button, start_report),
    ]
    # Last in every state: contacts link, stray buttons expire, anything else is told
    # what is accepted here.
    common = [
        MessageHandler(filters.CONTACT, contact_in_dialog),
        CallbackQueryHandler(stale_button),
        MessageHandler(filters.ALL, not_here),
    ]
    with_buttons = [
        MessageHandler(filters.CONTACT, contact_in_dialog),
        CallbackQueryHandler(stale_button),
        MessageHandler(filters.ALL, use_buttons),
    ]
    with warnings.catch_warnings():
        # per_message=False is intended: buttons belong to the chat's one dialog, and their
        # data carries the dialog id, checked on every press.
        warnings.filterwarnings("ignore", message=".*per_message.*", category=PTBUserWarning)
        return _conversation(lead, common, with_buttons, report_button, free_text, voice)


def _conversation(lead, common, with_buttons, report_button, free_text, voice) -> ConversationHandler:
    return ConversationHandler(
        name=NAME,
        persistent=True,
        entry_points=[
            CommandHandler("new", start_report),
            MessageHandler(report_button, start_report),
            MessageHandler(free_text, problem_text),
            MessageHandler(voice, problem_voice),
            MessageHandler(filters.PHOTO, problem_photo),
            MessageHandler(filters.LOCATION, location_first),
        ],
        states={
            PROBLEM: [
                *lead,
                MessageHandler(free_text, problem_text),
                MessageHandler(voice, problem_voice),
                MessageHandler(filters.PHOTO, problem_photo),
                MessageHandler(filters.LOCATION, location_first),
                *common,
            ],
            VOICE_OK: [
                *lead,
                CallbackQueryHandler(voice_choice),
                MessageHandler(free_text, problem_text),  # a typed correction
                MessageHandler(voice, problem_voice),  # or another try
                MessageHandler(filters.PHOTO, problem_photo),
                *common,
            ],
            WHERE: [
                *lead,
                MessageHandler(filters.LOCATION, where_location),
                MessageHandler(filters.CONTACT, where_contact),
                MessageHandler(free_text, where_text),
                *common,
            ],
            ADDRESS_OK: [
                *lead,
                CallbackQueryHandler(address_choice),
                MessageHandler(filters.LOCATION, where_location),
                MessageHandler(free_text, where_text),  # another address
                *common,
            ],
            ADDRESS_PICK: [
                *lead,
                CallbackQueryHandler(place_choice),
                MessageHandler(filters.LOCATION, where_location),
                MessageHandler(free_text, place_typed),
                *common,
            ],
            CATEGORY: [*lead, CallbackQueryHandler(category_choice), *with_buttons],
            CONFIRM: [*lead, CallbackQueryHandler(confirm_choice), MessageHandler(free_text, confirm_text),
                      *with_buttons],
        },
        fallbacks=lead,
    )
