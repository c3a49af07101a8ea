"""``gridline workers invite|unlink|list`` (staff chats) and ``gridline report scores``."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from gridline.commands.common import console, fail, open_database

workers_app = typer.Typer(help="Workers' and departments' chats with the bot.", no_args_is_help=True)
report_app = typer.Typer(help="Reports.", no_args_is_help=True)

DASH = "—"


def _bot_username(settings) -> str:  # noqa: ANN001
    """The bot's username, asked from the Bot API with the configured token."""
    from telegram import Bot

    from chat.web import api_urls

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
    from chat.worker_store import invite_key
    from core import staff
    from core.db import session_scope
    from core.errors import DomainError
    from core.settings import get_settings

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
                  f"{expires:%Y-%m-%d %H:%M} UTC, single use:")
    console.print(f"https://t.me/{username}?start=w-{token}", soft_wrap=True, highlight=False)


@workers_app.command("unlink")
def unlink(
    code: str = typer.Argument(..., help="a worker's code, or a department's code"),
    department: bool = typer.Option(False, "--department", help="CODE is a department's code"),
) -> None:
    """Unlink the worker's (or department's) chat: it gets no more tasks and its buttons stop working."""
    from core import staff
    from core.db import session_scope
    from core.errors import DomainError

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
    from sqlmodel import select

    from core import staff
    from core.db import session_scope
    from core.models import StaffChat

    table = Table("kind", "code", "name", "chat", "via", "linked (UTC)")
    with session_scope(open_database()) as session:
        for link in session.exec(select(StaffChat).order_by(StaffChat.linked_at)).all():
            who = staff.staff_of_chat(session, link.chat_id)
            if who is not None:
                table.add_row(who.kind, who.code, who.name, link.chat_id, link.via, f"{link.linked_at:%Y-%m-%d %H:%M}")
    console.print(table)


def _pct(value: float | None) -> str:
    return DASH if value is None else f"{value * 100:.1f}%"


def _num(value: float | None) -> str:
    return DASH if value is None else f"{value:.2f}"


@report_app.command("scores")
def scores(
    quarter: str = typer.Option(..., "--quarter", help="e.g. 2026Q4 (local time of the district)"),
    csv_file: Path = typer.Option(None, "--csv", dir_okay=False, help="also write the table as CSV"),
) -> None:
    """Quarterly worker scores (70 % work, 30 % residents' evaluation) with their inputs."""
    from core.db import session_scope
    from core.errors import DomainError
    from core.rules import load_rules
    from core.scores import quarter_scores
    from core.settings import get_settings

    try:
        with session_scope(open_database()) as session:
            rows = quarter_scores(session, quarter, tz=get_settings().timezone)
    except DomainError as exc:
        fail(exc.message)
    rules = load_rules().get("scores", {})
    header = ["code", "name", "assignments", "response_on_time", "response_counted", "response_rate",
              "resolution_on_time", "resolution_counted", "resolution_rate", "closed", "closure_rate",
              "work_score", "evaluated", "evaluation_points", "evaluation_score", "score"]
    lines = [[r.code, r.name, r.assignments, r.response_on_time, r.response_counted, _pct(r.response_rate),
              r.resolution_on_time, r.resolution_counted, _pct(r.resolution_rate), r.closed, _pct(r.closure_rate),
              _num(r.work_score), r.evaluated, f"{r.points:g}", _num(r.evaluation_score), _num(r.score)]
             for r in rows]
    table = Table("worker", "cases", "on-time response", "on-time resolution", "closed", "work",
                  "evaluated", "evaluation", "score", title=f"worker scores {quarter.strip().upper()}")
    for r in rows:
        table.add_row(f"{r.code} {r.name}", str(r.assignments),
                      f"{r.response_on_time}/{r.response_counted} {_pct(r.response_rate)}",
                      f"{r.resolution_on_time}/{r.resolution_counted} {_pct(r.resolution_rate)}",
                      f"{r.closed}/{r.assignments} {_pct(r.closure_rate)}", _num(r.work_score),
                      str(r.evaluated), f"{r.points:g}/{r.evaluated} = {_num(r.evaluation_score)}",
                      _num(r.score))
    # Wide enough for every column whatever the terminal says: a report is read whole.
    Console(width=max(console.width, 150)).print(table)
    work = rules.get("work", {})
    console.print(
        f"score = {rules.get('work_weight', 0.7)} × work + {rules.get('evaluation_weight', 0.3)} × evaluation; "
        f"work = weighted mean of on-time response ({work.get('response_on_time')}), on-time resolution "
        f"({work.get('resolution_on_time')}) and closure ({work.get('closure')}) over the rates that have cases; "
        f"evaluation = mean points per survey answer {rules.get('points', {})}; {DASH} = no evaluated case",
        soft_wrap=True, highlight=False)
    if csv_file is not None:
        with csv_file.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(lines)
        console.print(f"wrote {len(lines)} worker(s) to {csv_file}")
