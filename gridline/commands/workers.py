"""``gridline workers invite|unlink|list``: staff chats."""

from __future__ import annotations

import asyncio

import typer
from sqlmodel import select
from telegram import Bot

from chat.web import api_urls
from chat.worker_store import invite_key
from core.errors import DomainError
from core.people import staff
from core.people.models import StaffChat
from core.platform.clock import local_text, zone_label
from core.platform.db import session_scope
from core.platform.settings import get_settings
from gridline.commands import terminal
from gridline.commands.common import console, fail, open_database

workers_app = typer.Typer(help="Workers' and departments' chats with the bot.", no_args_is_help=True)


def _bot_username(settings) -> str:  # noqa: ANN001
    """The bot's username, asked from the Bot API with the configured token."""
    base_url, base_file_url = api_urls(settings.telegram_api_url)

    async def ask() -> str:
        async with Bot(settings.telegram_token, base_url=base_url, base_file_url=base_file_url) as bot:
            return bot.username

    return asyncio.run(ask())


@workers_app.command("invite")
def invite(
    code: str = typer.Argument(..., help="a worker's code (W0001), or a department's code"),
    department: bool = typer.Option(False, "--department", help="CODE is a department's code"),
    bot: str = typer.Option("", help="the bot's username (default: asked from the Bot API)"),
    days: float = typer.Option(7, min=0.01, max=30, help="days the link stays valid"),
) -> None:
    """Print a single-use link that links the opener's chat to the worker (or department)."""
    settings = get_settings()
    if not settings.telegram_token:
        fail("GRIDLINE_TELEGRAM_TOKEN is not set: invitations are signed with the bot's token")
    username = bot.lstrip("@")
    if not username:
        try:
            username = _bot_username(settings)
        except Exception as exc:  # unreachable Bot API, bad token
            fail(f"could not ask the Bot API for the bot's username ({exc}); pass --bot USERNAME")
    try:
        with session_scope(open_database()) as session:
            who = staff.staff_by_code(session, code, department=department)
            token, expires = staff.issue_invite(session, who, invite_key(settings), actor="cli", days=days)
    except DomainError as exc:
        fail(exc.message)
    console.print(f"invitation for {who.kind} {who.code} {who.name}, valid until "
                  f"{local_text(expires)}, single use:")
    console.print(f"https://t.me/{username}?start=w-{token}", soft_wrap=True, highlight=False)


@workers_app.command("unlink")
def unlink(
    code: str = typer.Argument(..., help="a worker's code, or a department's code"),
    department: bool = typer.Option(False, "--department", help="CODE is a department's code"),
) -> None:
    """Unlink the worker's (or department's) chat: it gets no more tasks and its buttons stop working."""
    try:
        with session_scope(open_database()) as session:
            who = staff.staff_by_code(session, code, department=department)
            chat_id = staff.unlink(session, who, actor="cli")
    except DomainError as exc:
        fail(exc.message)
    if chat_id is None:
        console.print(f"{who.kind} {who.code} has no linked chat")
    else:
        console.print(f"unlinked chat {chat_id} from {who.kind} {who.code} {who.name}")


@workers_app.command("list")
def list_links() -> None:
    """Linked staff chats."""
    table = terminal.table("kind", "code", "name", "chat", "via", f"linked ({zone_label()})")
    with session_scope(open_database()) as session:
        for link in session.exec(select(StaffChat).order_by(StaffChat.linked_at)).all():
            who = staff.staff_of_chat(session, link.chat_id)
            if who is not None:
                table.add_row(who.kind, who.code, who.name, link.chat_id, link.via, local_text(link.linked_at, label=False))
    console.print(table)
