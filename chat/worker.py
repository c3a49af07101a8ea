"""The worker side of the bot: grid workers, leaders and departments' contact persons
work their cases in their own chat (flows in ``chat/dialog.md``).

One handler (``entry``, group -3, before everything of the resident's) looks at every
update. A linked staff chat is handled here entirely and never reaches the resident
dialog; an unlinked chat may link itself by opening an invitation (``/start w-<token>``)
or by sharing its own contact when the number is a worker's — unless it has spoken as a
resident, which it then stays. Everything else goes on to the resident handlers.

In a staff chat:

* buttons on task messages: [签收] [退回…] → [开始处理] [办结上报] → (the checker)
  [通过] [不通过…]. Each press is checked at the moment of the press against the case's
  current owner (or checker) and the dispatch (or report) the button was made for
  (``worker_store.act``); anything else is answered "这个任务已经不归您处理";
* 退回… and 不通过… ask for a reason; 办结上报 collects a note (text, or a voice note that
  is transcribed) and photos (at least the number rules.toml asks for) until [提交上报];
  what was given so far lives in ``chat_data`` and survives a restart;
* 我的任务 / ``/tasks``: open cases, most urgent first; 帮助 / ``/help``; ``/cancel``.

Button data (signed like the resident's): ``w:<case id>:<act>:<stamp>``, where the stamp
is the case's dispatch (or report) moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from typing import Any

from telegram import (
    BotCommand,
    BotCommandScopeChat,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    ReplyKeyboardMarkup,
    Update,
)
from telegram.error import TelegramError
from telegram.ext import Application, ApplicationHandlerStop, TypeHandler

from chat import media, store, worker_store
from chat.common import Context, Deps, answer, deps, drop_buttons, lang, log, reply
from chat.texts import BOT, clip, t
from core.cases import limits
from core.cases.texts import status_name
from core.people.staff import LinkRefused
from core.platform.i18n import case_routing_text, error_text

GROUP = -3
DIRECTORY_KEY = "gridline_staff_directory"
INPUT_KEY = "staff_input"
MAX_REPORT_PHOTOS = 10
INVITE = re.compile(r"^/start(?:@\w+)?\s+w-([A-Za-z0-9_]{8,64})\s*$")
MARKS = {"green": "🟢", "yellow": "🟡", "red": "🔴"}

# button act -> worker_store action (None: handled here)
ACTS = {"acc": "accept", "sta": "start", "ret": "return", "rep": "report", "ok": "pass", "no": "fail",
        "sub": None, "can": None, "card": None}
_STAMP = re.compile(r"^[0-9a-z]{1,16}$")


# ---------------------------------------------------------------- directory of staff chats


class StaffDirectory:
    """Which chats are staff chats, in memory so that a resident's update costs no query.
    Loaded on first use, updated when this process links a chat, and reloaded every minute
    (``chat.worker_jobs``) so an unlink from the command line is seen."""

    # A chat linked here stays known across a reload that started before its link committed.
    KEEP_ADDED_S = 120.0

    def __init__(self) -> None:
        self.chats: dict[str, str] = {}
        self.loaded = False
        self._lock = asyncio.Lock()
        self._added: dict[str, float] = {}

    async def ensure(self, d: Deps) -> None:
        if self.loaded:
            return
        async with self._lock:
            if not self.loaded:
                await self.reload(d)

    async def reload(self, d: Deps) -> None:
        fresh = await d.db(worker_store.directory)
        now = time.monotonic()
        self._added = {c: at for c, at in self._added.items() if now - at < self.KEEP_ADDED_S}
        fresh.update({c: self.chats[c] for c in self._added if c in self.chats and c not in fresh})
        self.chats = fresh
        self.loaded = True

    def __contains__(self, chat_id: object) -> bool:
        return str(chat_id) in self.chats

    def add(self, chat_id: object, key: str) -> None:
        self.chats[str(chat_id)] = key
        self._added[str(chat_id)] = time.monotonic()

    def drop(self, chat_id: object) -> None:
        self.chats.pop(str(chat_id), None)
        self._added.pop(str(chat_id), None)


def directory_of(app: Application) -> StaffDirectory:
    return app.bot_data.setdefault(DIRECTORY_KEY, StaffDirectory())


def add_handlers(app: Application) -> None:
    """Register the worker side before the resident's handlers."""
    directory_of(app)
    app.add_handler(TypeHandler(Update, entry), group=GROUP)


# ---------------------------------------------------------------- rendering


def keyboard(language: str) -> ReplyKeyboardMarkup:
    return ReplyKeyboardMarkup([[t(language, "staff.menu_tasks"), t(language, "staff.menu_help")]],
                               resize_keyboard=True, is_persistent=True)


def _labels(key: str) -> set[str]:
    return {t("zh", key), t("en", key)}


def role_name(kind: str, language: str) -> str:
    return t(language, f"staff.role_{kind}")


def _button(d: Deps, language: str, label: str, case_id: int, act: str, stamp: str) -> InlineKeyboardButton:
    return InlineKeyboardButton(t(language, f"staff.button_{label}"),
                                callback_data=d.codec.encode("w", case_id, act, stamp))


def buttons(d: Deps, language: str, case: worker_store.Card, role: str) -> InlineKeyboardMarkup | None:
    """The buttons a case's message carries for its owner or checker, by its status now."""
    rows: list[list[InlineKeyboardButton]] = []
    s, c = case.dispatch_stamp, case.case_id
    if role == "owner":
        if case.status == "dispatched":
            rows = [[_button(d, language, "accept", c, "acc", s), _button(d, language, "return", c, "ret", s)]]
        elif case.status == "accepted":
            rows = [[_button(d, language, "start", c, "sta", s), _button(d, language, "report", c, "rep", s)],
                    [_button(d, language, "return", c, "ret", s)]]
        elif case.status == "in_progress":
            rows = [[_button(d, language, "report", c, "rep", s)]]
    elif role == "checker" and case.status == "reported_done":
        r = case.report_stamp
        rows = [[_button(d, language, "pass", c, "ok", r), _button(d, language, "fail", c, "no", r)]]
    return InlineKeyboardMarkup(rows) if rows else None


def card_text(language: str, tz: str, case: worker_store.Card, header: str, *, extra: list[str] = ()) -> str:
    unknown = t(language, "staff.unknown")
    place = "".join(x for x in (case.grid and f"{case.grid}", case.address and f" {case.address}") if x)
    body = t(language, "staff.card_body",
             category=case.category or unknown,
             urgency=t(language, f"staff.urgency_{case.urgency}"),
             place=place.strip() or unknown,
             description=clip(case.description or unknown, 1500),
             response_due=store.local(case.response_due, tz) or "—",
             resolution_due=store.local(case.resolution_due, tz) or "—")
    lines = [t(language, header, number=case.number), body]
    if case.confidential:
        lines.insert(1, t(language, "staff.card_confidential"))
    routing = case_routing_text(language, case.routing_trace, case.routing_reason, catalogue=BOT)
    if routing:
        lines.append(t(language, "staff.card_routing", routing=routing))
    media_line = []
    if case.photos:
        media_line.append(t(language, "staff.card_photos", count=len(case.photos)))
    if case.recordings:
        media_line.append(t(language, "staff.card_recording"))
    if media_line:
        lines.append("，".join(media_line) if language == "zh" else ", ".join(media_line))
    lines.extend(x for x in extra if x)
    return "\n".join(lines)


def report_lines(language: str, case: worker_store.Card) -> list[str]:
    return [t(language, "staff.card_handler", worker=case.worker or t(language, "staff.unknown")),
            t(language, "staff.card_note", note=clip(case.report_note or t(language, "staff.unknown"), 1500)),
            t(language, "staff.card_report_photos", count=len(case.report_photos))]


def task_lines(language: str, tz: str, tasks: list[Any]) -> list[str]:
    lines = []
    for task in tasks:
        mark = "🔍" if task.clock == "check" else MARKS[task.colour]
        due = store.local(task.due, tz) or "—"
        lines.append(t(language, "staff.task_line", mark=mark, number=task.number,
                       status=status_name(task.status, language),
                       clock=t(language, f"staff.clock_{task.clock}", due=due),
                       category=task.category or t(language, "staff.unknown"),
                       description=clip(task.description or "", 30)))
    return lines


def task_buttons(d: Deps, tasks: list[Any], limit: int = 12) -> InlineKeyboardMarkup | None:
    row: list[InlineKeyboardButton] = []
    rows: list[list[InlineKeyboardButton]] = []
    for task in tasks[:limit]:
        row.append(InlineKeyboardButton(f"📋 {task.number}", callback_data=d.codec.encode("w", task.case_id, "card", "0")))
        if len(row) == 3:
            rows.append(row)
            row = []
    if row:
        rows.append(row)
    return InlineKeyboardMarkup(rows) if rows else None


# ---------------------------------------------------------------- the entry point


async def entry(update: Update, context: Context) -> None:
    """Every update passes here first (see the module docstring)."""
    if update.edited_message or update.channel_post or update.edited_channel_post:
        return  # the resident side ignores these for everyone
    chat = update.effective_chat
    if chat is None:
        return
    d = deps(context)
    staff_chats = directory_of(context.application)
    await staff_chats.ensure(d)
    message = update.effective_message
    if chat.id in staff_chats:
        try:
            await _staff_update(update, context)
        except ApplicationHandlerStop:
            raise
        except Exception:  # a staff update must never fall through to the resident dialog
            log.exception("staff chat %s: update %s failed", chat.id, update.update_id)
            language = lang(update)
            with contextlib.suppress(TelegramError):
                if update.callback_query is not None:
                    await answer(d, update.callback_query, t(language, "dialog.error"))
                elif message is not None:
                    await reply(update, t(language, "dialog.error"), language)
        raise ApplicationHandlerStop
    if message is not None and message.text:
        invite = INVITE.match(message.text.strip())
        if invite:
            await _invite(update, context, invite.group(1))
            raise ApplicationHandlerStop
    if message is not None and message.contact is not None and await _contact(update, context):
        raise ApplicationHandlerStop


# ---------------------------------------------------------------- linking


async def _linked(update: Update, context: Context, who: Any) -> None:
    language = lang(update)
    chat_id = update.effective_chat.id
    directory_of(context.application).add(chat_id, who.key)
    context.chat_data.pop(INPUT_KEY, None)
    await reply(update, t(language, "staff.linked", role=role_name(who.kind, language), name=who.name,
                          code=who.code), language, reply_markup=keyboard(language))
    with contextlib.suppress(TelegramError):
        await context.bot.set_my_commands(
            [BotCommand(c, t(language, f"staff_commands.{c}")) for c in ("tasks", "help", "cancel")],
            scope=BotCommandScopeChat(chat_id))
    log.info("chat %s linked to %s %s", chat_id, who.kind, who.code)


async def _invite(update: Update, context: Context, token: str) -> None:
    d = deps(context)
    language = lang(update)
    chat = update.effective_chat
    if chat.type != "private":
        await reply(update, t(language, "staff.invite_private"), language)
        return
    key = worker_store.invite_key(d.services.settings)
    try:
        who = await d.db(worker_store.link_by_invite, chat.id, token, key, language)
    except LinkRefused as refused:
        log.info("chat %s: invitation refused (%s)", chat.id, refused.why)
        await reply(update, t(language, f"staff.invite_{refused.why}"), language)
        return
    await _linked(update, context, who)


async def _contact(update: Update, context: Context) -> bool:
    """A shared contact links a staff member's own chat; False: not theirs to take."""
    d = deps(context)
    language = lang(update)
    message = update.effective_message
    user = update.effective_user
    contact = message.contact
    if update.effective_chat.type != "private" or user is None or contact.user_id != user.id:
        return False  # the resident side explains that only one's own number is taken
    try:
        who = await d.db(worker_store.link_by_contact, update.effective_chat.id, contact.phone_number, language)
    except LinkRefused:
        return False
    if who is None:
        return False
    await _linked(update, context, who)
    return True


# ---------------------------------------------------------------- a staff chat's update


async def _staff_update(update: Update, context: Context) -> None:
    d = deps(context)
    language = lang(update)
    chat_id = update.effective_chat.id
    me = await d.db(worker_store.me, chat_id)
    if me is None:  # unlinked since (the command line): back to being nobody's chat
        directory_of(context.application).drop(chat_id)
        context.chat_data.pop(INPUT_KEY, None)
        if update.callback_query is not None:
            await answer(d, update.callback_query, t(language, "staff.not_yours"))
        await reply(update, t(language, "staff.unlinked"), language)
        return
    if update.callback_query is not None:
        await _button_press(update, context, me)
        return
    message = update.effective_message
    if message is None:
        return
    text = (message.text or "").strip()
    if text.startswith("/"):
        await _command(update, context, me, text)
    elif text in _labels("staff.menu_tasks"):
        await show_tasks(update, context)
    elif text in _labels("staff.menu_help"):
        await reply(update, t(language, "staff.help"), language, reply_markup=keyboard(language))
    elif context.chat_data.get(INPUT_KEY):
        await _input(update, context, me)
    elif message.photo or message.voice:
        await reply(update, t(language, "staff.photo_without_report"), language, reply_markup=keyboard(language))
    elif message.contact:
        await reply(update, t(language, "staff.already_linked", role=role_name(me.staff.kind, language),
                              name=me.staff.name), language, reply_markup=keyboard(language))
    else:
        await reply(update, t(language, "staff.use_buttons"), language, reply_markup=keyboard(language))


async def _command(update: Update, context: Context, me: worker_store.Me, text: str) -> None:
    language = lang(update)
    command = text.split()[0][1:].split("@")[0].lower()
    if command == "tasks":
        await show_tasks(update, context)
    elif command == "cancel":
        key = "staff.input_cancelled" if context.chat_data.pop(INPUT_KEY, None) else "staff.nothing_pending"
        await reply(update, t(language, key), language, reply_markup=keyboard(language))
    elif command == "start" and INVITE.match(text):
        await reply(update, t(language, "staff.already_linked", role=role_name(me.staff.kind, language),
                              name=me.staff.name), language, reply_markup=keyboard(language))
    elif command == "start":
        await reply(update, t(language, "staff.greeting", role=role_name(me.staff.kind, language),
                              name=me.staff.name), language, reply_markup=keyboard(language))
    else:  # /help and anything the resident side would have answered
        await reply(update, t(language, "staff.help"), language, reply_markup=keyboard(language))


async def show_tasks(update: Update, context: Context) -> None:
    d = deps(context)
    language = lang(update)
    found = await d.db(worker_store.tasks, update.effective_chat.id)
    tasks = found[1] if found else []
    if not tasks:
        await reply(update, t(language, "staff.tasks_empty"), language, reply_markup=keyboard(language))
        return
    text = "\n".join([t(language, "staff.tasks_header", count=len(tasks)), *task_lines(language, d.tz, tasks)])
    await reply(update, text, language, reply_markup=task_buttons(d, tasks))


# ---------------------------------------------------------------- buttons


def parse(fields: list[str] | None) -> tuple[int, str, str] | None:
    if not fields or len(fields) != 4 or fields[0] != "w":
        return None
    case_id, act, stamp = fields[1], fields[2], fields[3]
    if not case_id.isdigit() or len(case_id) > 12 or act not in ACTS or not _STAMP.match(stamp):
        return None
    return int(case_id), act, stamp


def refusal_text(language: str, refused: worker_store.Refused) -> str:
    if refused.why == "unlinked":
        return t(language, "staff.unlinked")
    if refused.why == "refused" and refused.error is not None:
        return error_text(language, refused.error, catalogue=BOT)  # core's code in the worker's words
    return t(language, "staff.not_yours")


async def _refused(update: Update, context: Context, refused: worker_store.Refused) -> None:
    d = deps(context)
    language = lang(update)
    query = update.callback_query
    text = refusal_text(language, refused)
    if query is not None:
        await answer(d, query, text)
        if refused.why == "not_yours":
            await drop_buttons(query)
    else:
        await reply(update, text, language, reply_markup=keyboard(language))


async def _button_press(update: Update, context: Context, me: worker_store.Me) -> None:
    d = deps(context)
    language = lang(update)
    query = update.callback_query
    parsed = parse(d.codec.decode(query.data))
    if parsed is None:
        await answer(d, query, t(language, "staff.expired"))
        return
    case_id, act, stamp = parsed
    chat_id = update.effective_chat.id
    try:
        if act == "card":
            await _show_card(update, context, case_id)
        elif act in ("acc", "sta", "ok"):
            done = await d.db(worker_store.act, chat_id, case_id, ACTS[act], stamp)
            await answer(d, query, t(language, f"staff.answer_{act}", number=done.number))
            view = await d.db(worker_store.card, done.case_id)
            markup = buttons(d, language, view, "owner") if view and act != "ok" else None
            with contextlib.suppress(TelegramError):
                await query.edit_message_reply_markup(reply_markup=markup)
            await reply(update, t(language, f"staff.done_{act}", number=done.number), language)
        elif act in ("ret", "rep", "no"):
            await _ask_input(update, context, case_id, act, stamp)
        elif act == "sub":
            await _submit(update, context, case_id, stamp)
        elif act == "can":
            pending = context.chat_data.get(INPUT_KEY)
            if pending and pending.get("case_id") == case_id:
                context.chat_data.pop(INPUT_KEY, None)
                await answer(d, query, t(language, "staff.input_cancelled"))
                await drop_buttons(query)
                await reply(update, t(language, "staff.input_cancelled"), language, reply_markup=keyboard(language))
            else:
                await answer(d, query, t(language, "staff.expired"))
                await drop_buttons(query)
    except worker_store.Refused as refused:
        await _refused(update, context, refused)


async def _show_card(update: Update, context: Context, case_id: int) -> None:
    d = deps(context)
    language = lang(update)
    found = await d.db(worker_store.view, update.effective_chat.id, case_id)
    await answer(d, update.callback_query)
    view, role = found
    extra = [t(language, "staff.card_status", status=status_name(view.status, language))]
    if role == "checker":
        extra += report_lines(language, view)
    text = card_text(language, d.tz, view, "staff.card_case", extra=extra)
    await update.effective_message.reply_text(text, reply_markup=buttons(d, language, view, role))
    if view.confidential:
        await d.db(worker_store.card_shown, view.case_id, f"chat:{update.effective_chat.id}", "case")


async def _ask_input(update: Update, context: Context, case_id: int, act: str, stamp: str) -> None:
    """退回… / 不通过… ask a reason; 办结上报 opens the report (note and photos)."""
    d = deps(context)
    language = lang(update)
    query = update.callback_query
    number, photos = await d.db(worker_store.may, update.effective_chat.id, case_id, ACTS[act], stamp)
    await answer(d, query)
    pending = context.chat_data.get(INPUT_KEY)
    if pending and pending.get("case_id") == case_id and pending.get("act") == act:
        pass  # the same button again: keep what was given so far
    else:
        pending = {"act": act, "case_id": case_id, "stamp": stamp, "number": number, "photos_needed": photos,
                   "note": None, "photos": [], "attachments": []}
        context.chat_data[INPUT_KEY] = pending
    cancel = InlineKeyboardMarkup([[_button(d, language, "cancel", case_id, "can", stamp)]])
    if act == "rep":
        key = "staff.ask_report" if photos else "staff.ask_report_no_photos"
        await update.effective_message.reply_text(t(language, key, number=number, photos=photos),
                                                  reply_markup=_report_buttons(d, language, pending))
    else:
        key = "staff.ask_return_reason" if act == "ret" else "staff.ask_fail_reason"
        await update.effective_message.reply_text(t(language, key, number=number), reply_markup=cancel)


def _report_buttons(d: Deps, language: str, pending: dict) -> InlineKeyboardMarkup:
    case_id, stamp = pending["case_id"], pending["stamp"]
    return InlineKeyboardMarkup([[_button(d, language, "submit", case_id, "sub", stamp),
                                  _button(d, language, "cancel", case_id, "can", stamp)]])


def _report_status(language: str, pending: dict) -> str:
    missing = []
    if not pending.get("note"):
        missing.append(t(language, "staff.report_missing_note"))
    short = pending["photos_needed"] - len(pending["photos"])
    if short > 0:
        missing.append(t(language, "staff.report_missing_photos", count=short))
    return t(language, "staff.report_status", number=pending["number"],
             note=t(language, "staff.report_note_yes" if pending.get("note") else "staff.report_note_no"),
             photos=len(pending["photos"]),
             missing=" ".join(missing) if missing else t(language, "staff.report_ready"))


async def _submit(update: Update, context: Context, case_id: int, stamp: str) -> None:
    d = deps(context)
    language = lang(update)
    query = update.callback_query
    pending = context.chat_data.get(INPUT_KEY)
    if not pending or pending.get("act") != "rep" or pending.get("case_id") != case_id:
        await answer(d, query, t(language, "staff.expired"))
        await drop_buttons(query)
        return
    if not pending.get("note") or len(pending["photos"]) < pending["photos_needed"]:
        await answer(d, query, t(language, "staff.report_incomplete"))
        await update.effective_message.reply_text(_report_status(language, pending),
                                                  reply_markup=_report_buttons(d, language, pending))
        return
    try:
        done = await d.db(worker_store.act, update.effective_chat.id, case_id, "report", stamp,
                          text=pending["note"], attachment_ids=tuple(pending["attachments"]))
    except worker_store.Refused as refused:
        if refused.why in ("note", "photos"):  # the rules changed meanwhile: ask for what is missing
            pending["photos_needed"] = max(refused.needed, pending["photos_needed"])
            await answer(d, query, t(language, "staff.report_incomplete"))
            await update.effective_message.reply_text(_report_status(language, pending),
                                                      reply_markup=_report_buttons(d, language, pending))
            return
        context.chat_data.pop(INPUT_KEY, None)
        raise
    context.chat_data.pop(INPUT_KEY, None)
    await answer(d, query, t(language, "staff.answer_sub", number=done.number))
    await drop_buttons(query)
    await reply(update, t(language, "staff.done_sub", number=done.number), language, reply_markup=keyboard(language))


# ---------------------------------------------------------------- typed input


async def _input(update: Update, context: Context, me: worker_store.Me) -> None:
    d = deps(context)
    language = lang(update)
    pending = context.chat_data[INPUT_KEY]
    message = update.effective_message
    if pending["act"] in ("ret", "no"):
        reason = (message.text or "").strip()
        if not reason:
            await reply(update, t(language, "staff.reason_needed"), language)
            return
        if not await _fits(update, "reason", reason):
            return
        action = ACTS[pending["act"]]
        try:
            done = await d.db(worker_store.act, update.effective_chat.id, pending["case_id"], action,
                              pending["stamp"], text=reason)
        except worker_store.Refused as refused:
            context.chat_data.pop(INPUT_KEY, None)
            await _refused(update, context, refused)
            return
        context.chat_data.pop(INPUT_KEY, None)
        key = "staff.done_ret" if pending["act"] == "ret" else "staff.done_no"
        await reply(update, t(language, key, number=done.number, reason=clip(reason, 200)), language,
                    reply_markup=keyboard(language))
        return
    # 办结上报: a note (text or voice) and photos, in any order
    if message.photo:
        if len(pending["photos"]) >= MAX_REPORT_PHOTOS:
            await reply(update, t(language, "staff.report_too_many_photos", max=MAX_REPORT_PHOTOS), language)
            return
        stored = await _download(update, context, message.photo[-1], "photo", ".jpg")
        if stored is None:
            return
        att = await d.db(store.save_attachment, "photo", stored.path, stored.mime_type, stored.size, stored.sha256,
                     stored.waiting_in)
        pending["photos"].append(stored.path)
        pending["attachments"].append(att)
        caption = (message.caption or "").strip()
        if caption and await _fits(update, "note", caption):
            pending["note"] = caption
    elif message.voice or message.audio:
        note = await _voice_note(update, context, pending)
        if note:  # heard, not typed: the voice note itself is attached with the report
            pending["note"] = note[:limits.limit_of("note")]
    elif message.text:
        if not await _fits(update, "note", message.text.strip()):
            return
        pending["note"] = message.text.strip()
    else:
        await reply(update, t(language, "staff.report_what"), language)
        return
    await update.effective_message.reply_text(_report_status(language, pending),
                                              reply_markup=_report_buttons(d, language, pending))


async def _fits(update: Update, field: str, text: str) -> bool:
    """Typed text within its ``[limits]``; if not, the worker is told how long it may be."""
    if limits.fits(field, text):
        return True
    language = lang(update)
    await reply(update, t(language, "staff.too_long", limit=limits.limit_of(field), length=len(text)), language)
    return False


async def _download(update: Update, context: Context, file: Any, kind: str, ext: str):  # noqa: ANN202
    d = deps(context)
    language = lang(update)
    try:
        return await media.download(context.bot, file.file_id, file.file_size, kind, ext, d.data_dir,
                                    store=d.media, spool=d.spool)
    except media.TooBig:
        await reply(update, t(language, "dialog.file_too_big", mb=20), language)
    except media.DownloadFailed as exc:
        log.warning("staff %s download failed: %s", kind, exc)
        await reply(update, t(language, "dialog.download_failed"), language)
    return None


async def _voice_note(update: Update, context: Context, pending: dict) -> str | None:
    """A voice note as the report's note: kept (attached with the report) and transcribed."""
    d = deps(context)
    language = lang(update)
    voice = update.effective_message.voice or update.effective_message.audio
    if media.seconds(voice) > media.MAX_VOICE_SECONDS:
        await reply(update, t(language, "dialog.too_long_voice", minutes=media.MAX_VOICE_SECONDS // 60), language)
        return None
    stored = await _download(update, context, voice, "voice", ".oga")
    if stored is None:
        return None
    att = await d.db(store.save_attachment, "voice", stored.path, stored.mime_type, stored.size, stored.sha256,
                     stored.waiting_in)
    pending["attachments"].append(att)
    try:
        heard = await media.transcribe(d.speech, stored.path, d.media)
    except (media.SpeechUnavailable, media.Unreadable):
        heard = None
    if heard is None or not heard.text:
        await reply(update, t(language, "staff.voice_unclear"), language)
        return None
    await reply(update, t(language, "staff.voice_heard", text=clip(heard.text, 600)), language)
    return heard.text
