"""Everything after (and around) the intake dialog: /start, /help, /status, /mine, status
notifications, the satisfaction survey with inline buttons, and the catch-alls that make
sure every message and every button press gets an answer.

Survey flow (answers recorded with ``core.actions.record_survey``)::

    job survey_chat ──▶ "solved?" [solved|partly|not]
        ──▶ "satisfied?" [satisfied|basically|not]
        ──▶ "anything to add?" text or voice note │ [no thanks] │ nothing within the wait
            (rules.toml [chat] survey_comment_wait_minutes)
        ──▶ recorded: satisfied closes the case, not satisfied reopens it

A merged duplicate's caller (``Survey.caller_case_id``) gets the same buttons about their own
case; their satisfied answer is recorded and leaves the case to its own caller's answer
("survey.thanks_noted"), their "not" reopens it.
"""

from __future__ import annotations

import re
from datetime import timedelta

from sqlmodel import select
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import BadRequest, Forbidden, TelegramError
from telegram.ext import ApplicationHandlerStop

from chat import media, store
from chat.callbacks import SATISFIED_CODES, SOLVED_CODES, parse_survey
from chat.common import (
    Context,
    Deps,
    answer,
    deps,
    drop_buttons,
    lang,
    log,
    main_menu,
    reply,
    unsupported_key,
)
from chat.texts import clip, fit_message, language_of, t
from chat.welcome import link_contact
from core.actions import FileRef
from core.cases import limits
from core.cases.models import Case, CaseEvent, CaseStatus
from core.cases.texts import status_name
from core.people.models import Resident
from core.platform import jobs
from core.platform.clock import utcnow
from core.platform.db import session_scope
from core.platform.models import Job
from core.platform.rules import load_rules
from core.platform.runner import RetryLater

CASE_NUMBER = re.compile(r"^\d{6,14}$")
SURVEY_FINISH_JOB = jobs.declare("chat_survey_finish", "chat/followup.py: records chat survey answers when no comment came")
SOLVED_KEYS = {"solved": "survey.solved", "partly": "survey.partly", "not": "survey.not_solved"}
SATISFIED_KEYS = {"satisfied": "survey.satisfied", "basically": "survey.basically", "not": "survey.not_satisfied"}
_CODE_OF_SOLVED = {v: k for k, v in SOLVED_CODES.items()}
_CODE_OF_SATISFIED = {v: k for k, v in SATISFIED_CODES.items()}


# ---------------------------------------------------------------- commands


async def help_(update: Update, context: Context) -> None:
    language = lang(update)
    await reply(update, t(language, "start.help"), language, reply_markup=main_menu(language))
    raise ApplicationHandlerStop


def _due(view: store.CaseView, language: str, tz: str, key: str) -> str:
    return t(language, key, due=store.local(view.due, tz)) if view.due else ""


async def status(update: Update, context: Context) -> None:
    d = deps(context)
    language = lang(update)
    args = context.args or []
    if not args:
        await reply(update, t(language, "follow.status_usage"), language)
        raise ApplicationHandlerStop
    number = re.sub(r"[\s\-]", "", " ".join(args))[:32]
    if not CASE_NUMBER.match(number):
        await reply(update, t(language, "follow.status_bad_number", number=clip(number, 32)), language)
        raise ApplicationHandlerStop
    view = await d.db(store.case_view, number, update.effective_chat.id)
    if view is None:
        await reply(update, t(language, "follow.not_found", number=number), language)
    elif view.own:
        await reply(update, t(language, "follow.status_detail", number=view.number,
                              status=status_name(view.status, language),
                              category=view.category or t(language, "dialog.category_unknown"),
                              created=store.local(view.created, d.tz),
                              due=_due(view, language, d.tz, "follow.due_line")), language)
    else:  # somebody else's case: its status only, nothing personal
        await reply(update, t(language, "follow.status_line", number=view.number,
                              status=status_name(view.status, language)), language)
    raise ApplicationHandlerStop


async def mine(update: Update, context: Context) -> None:
    d = deps(context)
    language = lang(update)
    views = await d.db(store.my_cases, update.effective_chat.id)
    if not views:
        await reply(update, t(language, "follow.mine_empty"), language, reply_markup=main_menu(language))
        raise ApplicationHandlerStop
    lines = [t(language, "follow.mine_header", count=len(views))]
    for v in views:
        lines.append(t(language, "follow.mine_line", number=v.number, status=status_name(v.status, language),
                       due=_due(v, language, d.tz, "follow.mine_due"), description=clip(v.description, 40)))
    await reply(update, "\n".join(lines), language, reply_markup=main_menu(language))
    raise ApplicationHandlerStop


async def contact(update: Update, context: Context) -> None:
    await link_contact(update, context)


async def unsupported(update: Update, context: Context) -> None:
    """Anything no other handler took: a polite note on what the bot accepts."""
    language = lang(update)
    if update.effective_message is None:
        return
    await reply(update, t(language, unsupported_key(update.effective_message)), language)


async def unanswered_button(update: Update, context: Context) -> None:
    """Runs after all other groups: a press nobody answered is answered as expired."""
    d = deps(context)
    query = update.callback_query
    if query.id not in d.answered:
        await answer(d, query, t(lang(update), "unsupported.callback"))


# ---------------------------------------------------------------- survey


def _survey_buttons(d: Deps, survey_id: int, language: str, solved: str | None = None) -> InlineKeyboardMarkup:
    if solved is None:
        row = [InlineKeyboardButton(t(language, SOLVED_KEYS[v]), callback_data=d.codec.encode("sv", survey_id, c))
               for c, v in SOLVED_CODES.items()]
    else:
        s = _CODE_OF_SOLVED[solved]
        row = [InlineKeyboardButton(t(language, SATISFIED_KEYS[v]),
                                    callback_data=d.codec.encode("sv", survey_id, s + c))
               for c, v in SATISFIED_CODES.items()]
    return InlineKeyboardMarkup([row])


async def survey_button(update: Update, context: Context) -> None:
    """A press on a survey button: validated (signature, values, pending, ownership)."""
    d = deps(context)
    query = update.callback_query
    language = lang(update)
    parsed = parse_survey(d.codec.decode(query.data))
    if parsed is None:
        return  # not a survey button: another group's handler (or the catch-all) answers it
    survey_id, solved, satisfied, no_comment = parsed
    view = await d.db(store.survey_view, survey_id)
    chat_id = update.effective_chat.id if update.effective_chat else None
    if view is None or view.chat_id != str(chat_id):
        await answer(d, query, t(language, "survey.not_yours" if view else "survey.expired"))
        raise ApplicationHandlerStop
    if not view.pending:
        await answer(d, query, t(language, "survey.already"))
        await drop_buttons(query)
        raise ApplicationHandlerStop
    await answer(d, query)
    if satisfied is None:
        await _edit(query, f"{query.message.text if query.message else ''}\n"
                    f"{t(language, 'survey.answer_solved', answer=t(language, SOLVED_KEYS[solved]))}")
        await query.message.reply_text(t(language, "survey.ask_satisfied"),
                                       reply_markup=_survey_buttons(d, survey_id, language, solved))
        raise ApplicationHandlerStop
    await drop_buttons(query)
    if no_comment:
        context.chat_data.pop("survey_comment", None)
        await _record(update, context, survey_id, solved, satisfied, None)
        raise ApplicationHandlerStop
    # Ask for an optional comment; record without one if none comes.
    context.chat_data["survey_comment"] = {"id": survey_id, "solved": solved, "satisfied": satisfied}
    await d.db(_schedule_finish, survey_id, solved, satisfied, chat_id)
    skip = InlineKeyboardMarkup([[InlineKeyboardButton(
        t(language, "survey.no_comment"),
        callback_data=d.codec.encode("sv", survey_id, _CODE_OF_SOLVED[solved] + _CODE_OF_SATISFIED[satisfied], "-"),
    )]])
    await query.message.reply_text(
        f"{t(language, 'survey.answer_satisfied', answer=t(language, SATISFIED_KEYS[satisfied]))}\n"
        f"{t(language, 'survey.ask_comment')}", reply_markup=skip)
    raise ApplicationHandlerStop


async def _edit(query, text: str) -> None:
    try:
        await query.edit_message_text(fit_message(text), reply_markup=None)
    except TelegramError:
        await drop_buttons(query)


def comment_wait() -> timedelta:
    return timedelta(minutes=float(load_rules()["chat"]["survey_comment_wait_minutes"]))


def _schedule_finish(engine, survey_id: int, solved: str, satisfied: str, chat_id: int) -> None:
    with session_scope(engine) as session:
        jobs.enqueue(session, SURVEY_FINISH_JOB,
                     {"survey_id": survey_id, "solved": solved, "satisfied": satisfied, "chat_id": chat_id},
                     run_at=utcnow() + comment_wait(), dedupe_key=f"chat_survey_finish:{survey_id}")


async def survey_comment(update: Update, context: Context) -> None:
    """Text or a voice note right after the survey buttons is the survey's comment."""
    pending = context.chat_data.get("survey_comment")
    message = update.effective_message
    if not pending or message is None or not (message.text or message.voice):
        return
    if message.text and message.text.startswith("/"):
        return
    files: tuple[FileRef, ...] = ()
    if message.voice:
        comment, recording = await _voice_comment(update, context)
        files = (recording,)
    else:
        comment = message.text.strip()
        if not limits.fits("comment", comment):  # told how long it may be; the question stays open
            language = lang(update)
            await reply(update, t(language, "survey.comment_too_long", limit=limits.limit_of("comment"),
                                  length=len(comment)), language)
            raise ApplicationHandlerStop
    context.chat_data.pop("survey_comment", None)
    await _record(update, context, pending["id"], pending["solved"], pending["satisfied"], comment, files)
    raise ApplicationHandlerStop


async def _voice_comment(update: Update, context: Context) -> tuple[str, FileRef]:
    """The voice note kept on disk (it joins the case with the answers) and its words."""
    d = deps(context)
    language = lang(update)
    voice = update.effective_message.voice
    try:
        stored = await media.download(context.bot, voice.file_id, voice.file_size, "voice", ".oga", d.data_dir,
                                      local_mode=d.local_mode, store=d.media, spool=d.spool)
    except (media.TooBig, media.DownloadFailed):
        await reply(update, t(language, "dialog.download_failed"), language)
        raise ApplicationHandlerStop from None
    recording = FileRef("voice", stored.path, stored.mime_type, stored.size, stored.sha256,
                        waiting_in=stored.waiting_in)
    try:
        heard = await media.transcribe(d.speech, stored.path, d.media)
        text = heard.text
    except (media.SpeechUnavailable, media.Unreadable):
        text = ""
    return f"{text} [voice: {stored.path}]".strip(), recording


async def _record(update: Update, context: Context, survey_id: int, solved: str, satisfied: str,
                  comment: str | None, files: tuple[FileRef, ...] = ()) -> None:
    d = deps(context)
    language = lang(update)
    try:
        number, new_status = await d.db(store.record_survey, survey_id, update.effective_chat.id,
                                        solved, satisfied, comment, files=files)
    except store.SurveyRefused as refused:
        key = {"not_yours": "survey.not_yours", "answered": "survey.already"}.get(refused.why, "survey.expired")
        await reply(update, t(language, key), language)
        return
    key = {"closed": "survey.thanks", "answered": "survey.thanks_noted"}.get(new_status, "survey.thanks_reopen")
    await reply(update, t(language, key, number=number), language, reply_markup=main_menu(language))


# ---------------------------------------------------------------- jobs


class JobHandlers:
    """Handlers for the core's durable jobs; they need the running bot."""

    def __init__(self, chatbot):
        self.chatbot = chatbot

    def _bot(self):
        if not self.chatbot.ready.is_set():
            raise RetryLater(timedelta(seconds=15), "the Telegram bot is not running yet")
        return self.chatbot.application.bot

    async def notify_resident(self, job: Job) -> None:
        payload = job.payload or {}
        self._bot()
        chat_id = payload.get("chat_id")
        if not chat_id or not str(chat_id).lstrip("-").isdigit():
            return
        status = payload.get("status", "")
        number = payload.get("case", "")
        if status in load_rules()["chat"]["notify_said_by_survey"]:
            return  # the message that follows says it (rules.toml [chat])
        if payload.get("action") in ("close", "reopen") and await self.chatbot.deps.db(
                _answered_in_chat, number, payload["action"], status, str(chat_id)):
            return  # the resident's own survey answer: the chat has just thanked them for it
        language = await self.chatbot.deps.db(_language_of_chat, str(chat_id))
        if status == "closed":
            text = t(language, "follow.notify_closed", number=number)
        elif status == "reopened":
            text = t(language, "follow.notify_reopened", number=number)
        else:
            text = t(language, "follow.notify", number=number, status=status_name(status, language))
        await self._send(int(chat_id), text)

    async def _send(self, chat_id: int, text: str, **kw) -> bool:
        try:
            await self.chatbot.application.bot.send_message(chat_id, fit_message(text), **kw)
        except Forbidden:
            log.info("chat %s blocked the bot; message dropped", chat_id)
            return False
        except BadRequest as exc:
            if "chat not found" in str(exc).lower():
                return False
            raise
        return True

    async def survey_chat(self, job: Job) -> None:
        payload = job.payload or {}
        self._bot()
        d = self.chatbot.deps
        survey_id = int(payload.get("survey_id") or 0)
        view = await d.db(store.survey_view, survey_id)
        if view is None or not view.pending or not view.chat_id:
            return
        await d.db(store.count_attempt, survey_id)
        if not view.chat_id.lstrip("-").isdigit():
            return  # a web chat's (chat.resident_web): its page shows the survey under "my cases"
        language = language_of(view.language)
        text = t(language, "survey.ask_solved", number=view.case_number, description=clip(view.description, 60))
        delivered = await self._send(int(view.chat_id), text, reply_markup=_survey_buttons(d, survey_id, language))
        if not delivered:  # blocked the bot: the survey cannot happen on this channel
            await d.db(store.survey_unreachable, survey_id)

    async def chat_survey_finish(self, job: Job) -> None:
        """Nobody commented within the wait: record the answers without a comment."""
        payload = job.payload or {}
        d = self.chatbot.deps
        chat_id = int(payload["chat_id"])
        try:
            # Recorded by the system on the resident's behalf: the resident was not thanked
            # in the chat, so the "closed"/"reopened" notification is not suppressed.
            await d.db(store.record_survey, int(payload["survey_id"]), chat_id,
                       payload["solved"], payload["satisfied"], None, actor=f"system:chat-timeout:{chat_id}")
        except store.SurveyRefused:
            return  # answered meanwhile (with a comment or "no thanks")
        survey_id = int(payload["survey_id"])

        def no_longer_waiting(data: dict) -> bool:
            pending = data.get("survey_comment")
            if not isinstance(pending, dict) or pending.get("id") != survey_id:
                return False  # another survey's comment is awaited (or none)
            del data["survey_comment"]
            return True

        await self.chatbot.edit_chat(chat_id, no_longer_waiting)


def _answered_in_chat(engine, number: str, action: str, status: str, chat_id: str) -> bool:
    """Whether the case's latest ``action`` to ``status`` came from the resident answering
    the survey in this chat (``store.record_survey``'s actor). For a merged duplicate's
    caller, told under their own number, the step is the surviving case's; another caller's
    answer is news to them."""
    if status not in CaseStatus.__members__:
        return False
    with session_scope(engine) as session:
        case = session.exec(select(Case).where(Case.number == number)).first()
        if case is None:
            return False
        actor = session.exec(
            select(CaseEvent.actor)
            .where(CaseEvent.case_id == (case.merged_into_id or case.id), CaseEvent.action == action,
                   CaseEvent.to_status == CaseStatus(status))
            .order_by(CaseEvent.at.desc(), CaseEvent.id.desc()).limit(1)
        ).first()
    return actor == f"{store.CHAT_SURVEY_ACTOR}{chat_id}"


def _language_of_chat(engine, chat_id: str) -> str:
    with session_scope(engine) as session:
        resident = session.exec(select(Resident).where(Resident.chat_id == chat_id)).first()
        return resident.language if resident else "zh"
