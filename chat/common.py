"""What every handler shares: the services, the callback codec, and small reply helpers."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.exc import (
    SQLAlchemyError,
)
from telegram import (
    CallbackQuery,
    KeyboardButton,
    Message,
    ReplyKeyboardMarkup,
    Update,
)
from telegram.error import TelegramError
from telegram.ext import ContextTypes

from chat.callbacks import CallbackCodec
from chat.texts import fit_message, language_of, t
from core.platform.retry import causes, transient

log = logging.getLogger("chat")

T = TypeVar("T")
Context = ContextTypes.DEFAULT_TYPE


@dataclass
class Deps:
    services: Any  # gridline.app.Services
    codec: CallbackCodec
    # Callback queries answered by some handler during this process; the catch-all answers
    # the rest, so every button press gets an answer.
    answered: set[str] = field(default_factory=set)
    # Updates whose handling failed and will be tried again, and whose resident has already
    # been told so (by the handler itself, e.g. with the confirm button re-sent).
    delayed: set[int] = field(default_factory=set)

    @property
    def engine(self):
        return self.services.engine

    @property
    def data_dir(self) -> Path:
        return Path(self.services.settings.data_dir)

    @property
    def media(self):  # noqa: ANN201 (core.platform.media.MediaStore)
        """Where residents' files are kept (core.platform.media); the spool is ``data_dir``."""
        return self.services.media

    @property
    def spool(self) -> str:
        return self.services.spool

    @property
    def tz(self) -> str:
        return self.services.settings.timezone

    @property
    def speech(self):
        return self.services.speech

    @property
    def local_mode(self) -> bool:
        """A local Bot API server (``--local``) hands out files as paths on its own disk;
        only then may a file be read from a local path."""
        return bool(getattr(self.services.settings, "telegram_local_mode", False))

    async def db(self, func: Callable[..., T], *args: Any, **kw: Any) -> T:
        """Run a database function ``func(engine, *args)`` in the app's database threads
        (raises core.errors.DatabaseBusy when none frees up in time). Every database call of
        the bot goes through here."""
        return await self.services.db.run(func, self.engine, *args, **kw)


def retryable(exc: BaseException) -> bool:
    """Worth handling the update again: a transient failure (``core.platform.retry.transient``), or any
    database error (a constraint race, a statement the database refused this time)."""
    return transient(exc) or any(isinstance(e, SQLAlchemyError) for e in causes(exc))


DEPS_KEY = "gridline_deps"


def deps(context: Context) -> Deps:
    return context.application.bot_data[DEPS_KEY]


def lang(update: Update) -> str:
    user = update.effective_user
    return language_of(user.language_code if user else None)


def main_menu(language: str) -> ReplyKeyboardMarkup:
    return ReplyKeyboardMarkup(
        [
            [t(language, "menu.report"), t(language, "menu.mine")],
            [KeyboardButton(t(language, "menu.share_contact"), request_contact=True)],
        ],
        resize_keyboard=True,
        is_persistent=True,
    )


def where_keyboard(language: str) -> ReplyKeyboardMarkup:
    return ReplyKeyboardMarkup(
        [
            [KeyboardButton(t(language, "menu.share_location"), request_location=True)],
            [t(language, "menu.skip")],
        ],
        resize_keyboard=True,
        one_time_keyboard=True,
    )


def labels(key: str) -> set[str]:
    """A button's label in every language (a resident may switch their app's language)."""
    return {t("zh", key), t("en", key)}


async def reply(update: Update, text: str, language: str, **kw: Any) -> Message | None:
    message = update.effective_message
    if message is None:
        return None
    return await message.reply_text(fit_message(text, language), **kw)


async def answer(d: Deps, query: CallbackQuery, text: str | None = None) -> None:
    """Answer a button press once (Telegram shows a spinner until it is answered)."""
    if query.id in d.answered:
        return
    d.answered.add(query.id)
    if len(d.answered) > 10_000:
        d.answered.clear()
        d.answered.add(query.id)
    try:
        await query.answer(text[:200] if text else None)
    except TelegramError as exc:  # too old to answer, network: nothing to do
        log.info("answerCallbackQuery failed: %s", exc)


async def drop_buttons(query: CallbackQuery) -> None:
    """Take the keyboard off a message whose question has been answered."""
    with contextlib.suppress(TelegramError):
        await query.edit_message_reply_markup(reply_markup=None)


def unsupported_key(message: Message | None) -> str:
    if message is None:
        return "unsupported.other"
    if message.sticker:
        return "unsupported.sticker"
    if message.video or message.video_note or message.animation:
        return "unsupported.video"
    if message.document or message.audio:
        return "unsupported.document"
    return "unsupported.other"
