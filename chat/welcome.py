"""What the dialog and the follow-up commands share: the greeting (``/start``, and starting
over inside a report) and linking a chat to the resident whose own contact it shared."""

from __future__ import annotations

from telegram import Update

from chat import store
from chat.common import Context, deps, lang, main_menu, reply
from chat.texts import t


async def greet(update: Update, context: Context) -> None:
    language = lang(update)
    user = update.effective_user
    name = ""
    if user and user.first_name:
        name = f"，{user.first_name}" if language == "zh" else f", {user.first_name}"
    await reply(update, t(language, "start.greeting", name=name), language, reply_markup=main_menu(language))


async def link_contact(update: Update, context: Context) -> str | None:
    """Shared contact -> linked household (only the resident's own number)."""
    d = deps(context)
    language = lang(update)
    contact = update.effective_message.contact
    user = update.effective_user
    if contact.user_id is None or user is None or contact.user_id != user.id:
        await reply(update, t(language, "contact.not_yours"), language)
        return None
    address = await d.db(store.link_contact, update.effective_chat.id, contact.phone_number, language,
                         user.full_name)
    if address:
        await reply(update, t(language, "contact.linked", address=address), language, reply_markup=main_menu(language))
    else:
        await reply(update, t(language, "contact.saved"), language, reply_markup=main_menu(language))
    return address
