"""The intake dialog: problem -> where -> category -> confirm -> case number.

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
from chat.intake import (  # the channel-agnostic dialog: states, draft, words, the petition
    ACTIONS,
    ADDRESS_OK,
    CATEGORY,
    CONFIRM,
    MAX_PHOTOS,
    PROBLEM,
    SUMMARY_DESCRIPTION,
    VOICE_OK,
    WHERE,
    address_chosen,
    address_shown,
    filed_text,
    new_draft,
    petition,
    summary,
)
from chat.texts import clip, t
from chat.welcome import greet, link_contact
from core.cases import limits

NAME = "intake"
END = ConversationHandler.END


# ---------------------------------------------------------------- helpers


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


# ---------------------------------------------------------------- entry and problem


async def start_report(update: Update, context: Context) -> str:
    """"我要反映" / /new: a fresh draft, then ask for the problem."""
    await _new_draft(update, context)
    language = lang(update)
    await reply(update, t(language, "dialog.ask_problem"), language, reply_markup=ReplyKeyboardRemove())
    return PROBLEM


async def problem_text(update: Update, context: Context) -> str:
    draft = await _ensure_draft(update, context)
    text = (update.effective_message.text or "").strip()
    if not text:
        return await start_report(update, context)
    if not await _fits(update, text):
        return PROBLEM
    draft["description"] = text
    draft["transcript"] = None
    draft["confidence"] = None
    return await ask_where(update, context)


async def _fits(update: Update, text: str) -> bool:
    """A typed description within ``[limits] description``; if not, the resident is told how
    long it may be (their text is still in their own chat, to shorten and send again)."""
    if limits.fits("description", text):
        return True
    language = lang(update)
    await reply(update, t(language, "dialog.too_long_text", limit=limits.limit_of("description"), length=len(text)),
                language)
    return False


async def problem_voice(update: Update, context: Context) -> str:
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
    draft["voice"] = stored.path
    draft["attachments"].append(att)
    try:
        heard = await media.transcribe(d.speech, stored.path, d.media)
    except media.SpeechUnavailable:
        await reply(update, t(language, "dialog.voice_unavailable"), language)
        return PROBLEM
    except media.Unreadable as exc:
        log.info("unreadable voice note %s: %s", stored.path, exc)
        await reply(update, t(language, "dialog.voice_failed"), language)
        return PROBLEM
    if not heard.text:
        await reply(update, t(language, "dialog.voice_unclear"), language)
        return PROBLEM
    draft["description"] = heard.text  # heard, not typed: never refused (core keeps up to a cap)
    draft["transcript"] = heard.transcript
    draft["confidence"] = heard.confidence
    buttons = InlineKeyboardMarkup([[
        _button(context, draft, t(language, "dialog.voice_yes"), "vy"),
        _button(context, draft, t(language, "dialog.voice_retry"), "vn"),
    ]])
    await reply(update, t(language, "dialog.voice_heard", text=clip(heard.text, SUMMARY_DESCRIPTION)), language,
                reply_markup=buttons)
    return VOICE_OK


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
    if len(draft["photos"]) >= MAX_PHOTOS:
        await reply(update, t(language, "dialog.photo_too_many", max=MAX_PHOTOS), language)
        return PROBLEM
    largest = message.photo[-1]
    stored = await _fetch(update, context, largest, "photo", ".jpg", language)
    if stored is None:
        return PROBLEM
    att = await d.db(store.save_attachment, "photo", stored.path, stored.mime_type, stored.size, stored.sha256,
                     stored.waiting_in)
    draft["photos"].append(stored.path)
    draft["attachments"].append(att)
    caption = (message.caption or "").strip()
    if caption and await _fits(update, caption):
        draft["description"] = caption
    if draft["description"]:
        return await ask_where(update, context)
    await reply(update, t(language, "dialog.photo_saved"), language)
    return PROBLEM


async def _keep_location(update: Update, context: Context, language: str) -> str:
    """Store the shared point and its micro grid in the draft; returns the sentence
    telling the resident which grid that is (or that it lies outside every grid)."""
    draft = await _ensure_draft(update, context)
    loc = update.effective_message.location
    draft["lat"], draft["lon"] = loc.latitude, loc.longitude
    grid = await deps(context).db(store.grid_at, loc.latitude, loc.longitude)
    draft["place"] = grid
    return t(language, "dialog.location_in_grid", grid=grid) if grid else t(language, "dialog.location_outside")


async def location_first(update: Update, context: Context) -> str:
    """A location before any words (outside a dialog, or while we wait for the problem):
    keep it as the place and ask what the problem is; "where" is then not asked."""
    language = lang(update)
    where = await _keep_location(update, context, language)
    await reply(update, f"{where}\n{t(language, 'dialog.ask_problem_there')}", language,
                reply_markup=ReplyKeyboardRemove())
    return PROBLEM


async def voice_choice(update: Update, context: Context) -> str:
    choice = await _dialog_button(update, context)
    if choice is None:
        return VOICE_OK
    action, _ = choice
    if action == "vy":
        return await ask_where(update, context)
    if action == "vn":
        language = lang(update)
        await reply(update, t(language, "dialog.ask_problem"), language)
        return PROBLEM
    return VOICE_OK


# ---------------------------------------------------------------- where


async def ask_where(update: Update, context: Context) -> str:
    draft = _draft(context)
    if draft is not None and draft.get("lat") is not None:
        return await ask_category(update, context)  # the location came first
    language = lang(update)
    await reply(update, t(language, "dialog.ask_where"), language, reply_markup=where_keyboard(language))
    return WHERE


async def where_location(update: Update, context: Context) -> str:
    language = lang(update)
    text = await _keep_location(update, context, language)
    await reply(update, text, language, reply_markup=main_menu(language))
    return await ask_category(update, context)


async def where_text(update: Update, context: Context) -> str:
    d = deps(context)
    draft = await _ensure_draft(update, context)
    language = lang(update)
    text = (update.effective_message.text or "").strip()
    if text in labels("menu.skip"):
        if draft.get("household"):
            draft["place"] = draft["household"]
            note = t(language, "dialog.where_household", address=draft["household"])
        else:
            draft["address_text"] = draft.get("address_typed")
            draft["place"] = draft.get("address_typed")
            note = t(language, "dialog.where_skipped")
        await reply(update, note, language, reply_markup=main_menu(language))
        return await ask_category(update, context)
    text = text[:200]
    found = await d.db(store.match_address, text)
    if found is None:
        draft["address_typed"] = text
        await reply(update, t(language, "dialog.address_unknown", text=clip(text, 60)), language,
                    reply_markup=where_keyboard(language))
        return WHERE
    place, grid = found
    draft["candidate"] = {"typed": text, "place": place, "grid": grid}
    shown = address_shown(place, grid)
    buttons = InlineKeyboardMarkup([[
        _button(context, draft, t(language, "dialog.address_yes"), "ay"),
        _button(context, draft, t(language, "dialog.address_no"), "an"),
    ]])
    await reply(update, t(language, "dialog.address_confirm", place=shown), language, reply_markup=buttons)
    return ADDRESS_OK


async def address_choice(update: Update, context: Context) -> str:
    choice = await _dialog_button(update, context)
    if choice is None:
        return ADDRESS_OK
    draft = _draft(context)
    language = lang(update)
    candidate = draft.get("candidate")
    if choice[0] == "ay" and candidate:
        address_chosen(draft)  # the registered name first: routing then matches it exactly
        await reply(update, t(language, "dialog.place_chosen", place=candidate["place"]), language,
                    reply_markup=main_menu(language))
        return await ask_category(update, context)
    draft["candidate"] = None
    await reply(update, t(language, "dialog.address_retry"), language, reply_markup=where_keyboard(language))
    return WHERE


async def where_contact(update: Update, context: Context) -> str:
    draft = await _ensure_draft(update, context)
    address = await link_contact(update, context)
    if address:
        draft["household"] = address
        draft["place"] = address
        draft["phone"] = update.effective_message.contact.phone_number
        return await ask_category(update, context)
    return WHERE


# ---------------------------------------------------------------- category and confirm


async def ask_category(update: Update, context: Context) -> str:
    d = deps(context)
    draft = _draft(context)
    language = lang(update)
    text = " ".join(x for x in (draft.get("description"), draft.get("address_text")) if x)
    options = await d.db(store.category_options, text)
    draft["categories"] = [list(o) for o in options]
    rows = [[_button(context, draft, name, "c", str(i))] for i, (_, name) in enumerate(options)]
    rows.append([_button(context, draft, t(language, "dialog.category_other"), "c", "x")])
    await reply(update, t(language, "dialog.ask_category"), language, reply_markup=InlineKeyboardMarkup(rows))
    return CATEGORY


async def category_choice(update: Update, context: Context) -> str:
    choice = await _dialog_button(update, context)
    if choice is None or choice[0] != "c":
        return CATEGORY
    draft = _draft(context)
    value = choice[1] or ""
    options = draft.get("categories") or []
    if value == "x":
        draft["category"] = None
    elif value.isdigit() and int(value) < len(options):
        draft["category"] = options[int(value)][0]
    else:  # signed by us but not one of this draft's options: treat as stale
        return CATEGORY
    return await ask_confirm(update, context)


def _summary(draft: dict, language: str) -> str:
    return summary(draft, language)


def _confirm_buttons(context: Context, draft: dict, language: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[
        _button(context, draft, t(language, "dialog.submit"), "ok"),
        _button(context, draft, t(language, "dialog.cancel_button"), "no"),
    ]])


async def ask_confirm(update: Update, context: Context) -> str:
    draft = _draft(context)
    language = lang(update)
    await reply(update, _summary(draft, language), language, reply_markup=_confirm_buttons(context, draft, language))
    return CONFIRM


async def confirm_choice(update: Update, context: Context) -> str:
    choice = await _dialog_button(update, context)
    if choice is None:
        return CONFIRM
    language = lang(update)
    if choice[0] == "no":
        await reply(update, t(language, "dialog.cancelled"), language, reply_markup=main_menu(language))
        return _end(context)
    if choice[0] != "ok":
        return CONFIRM
    return await submit(update, context)


async def submit(update: Update, context: Context) -> str:
    d = deps(context)
    draft = _draft(context)
    language = lang(update)
    chat_id = update.effective_chat.id
    try:
        filed = await d.db(store.file, petition(draft, "chat", chat_id))
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
    await reply(update, filed_text(filed, language, store.local(filed.due, d.tz)), language,
                reply_markup=main_menu(language))
    return _end(context)


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
    language = lang(update)
    await reply(update, t(language, "dialog.cancelled"), language, reply_markup=main_menu(language))
    return _end(context)


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
            CATEGORY: [*lead, CallbackQueryHandler(category_choice), *with_buttons],
            CONFIRM: [*lead, CallbackQueryHandler(confirm_choice), *with_buttons],
        },
        fallbacks=lead,
    )
