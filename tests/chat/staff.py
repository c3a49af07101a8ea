"""Helpers for the worker-side chat tests: link staff chats the way staff do (an
invitation opened in the chat), find who owns and checks a case, drive the job runner."""

from __future__ import annotations

import asyncio

from sqlmodel import select

from chat import worker_store
from core import actions
from core.actions import Petition
from core.cases.models import Case, CaseEvent, Channel
from core.people import staff
from core.people.models import Worker
from core.people.owners import grid_at_level
from core.places.models import Grid, GridLevel
from core.platform.db import session_scope

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 4 + b"\xff\xd9"


async def drain(h, *, rounds: int = 50) -> int:
    """Run due jobs until none is left."""
    total = 0
    for _ in range(rounds):
        ran = await h.run_jobs()
        if not ran:
            return total
        total += ran
    raise AssertionError("jobs keep coming")


def invite(h, code: str, *, department: bool = False) -> str:
    key = worker_store.invite_key(h.services.settings)
    with session_scope(h.engine) as session:
        who = staff.staff_by_code(session, code, department=department)
        token, _ = staff.issue_invite(session, who, key, actor="test")
    return token


async def accept(h, user: int) -> None:
    """签收 on the latest task message."""
    await h.press(user, "签收")
    await h.reply(user, "已签收")


async def report(h, user: int, note: str, photos: int = 1) -> None:
    """办结上报 on the latest task message: a note, photos, submit."""
    await h.press(user, "办结上报")
    await h.reply(user, "请上报")
    await h.say(user, note)
    await h.reply(user, "说明已收到")
    for _ in range(photos):
        photo = h.fake.add_file(JPEG, kind="photo")
        await h.send(h.fake.make_photo_update(photo.file_id, user_id=user))
        await h.reply(user, "照片")
    await h.press(user, "提交上报")
    await h.reply(user, "已办结上报")


async def link(h, user: int, code: str, *, department: bool = False, name: str = "Staff") -> None:
    h.fake.add_user(user, name, language_code="zh-hans")
    await h.command(user, "start", f"w-{invite(h, code, department=department)}")
    await h.reply(user, "绑定成功")


def worker_code(engine, worker_id: int) -> str:
    with session_scope(engine) as session:
        return session.get(Worker, worker_id).code


def owner_of(engine, grid_id: int) -> str:
    with session_scope(engine) as session:
        return actions.responsible_worker(session, grid_id).code


def leader_at(engine, grid_id: int, level: GridLevel) -> str:
    with session_scope(engine) as session:
        grid = grid_at_level(session, session.get(Grid, grid_id), level)
        return staff._leaders(session, grid.id)[0].code


def file_case(engine, grid_id: int, *, description: str = "9幢门口的路灯坏了", channel: Channel = Channel.chat,
              files: tuple = (), category: str = "streetlight", dispatch: bool = True,
              confidential: bool = False, contact_phone: str | None = None) -> str:
    with session_scope(engine) as session:
        case, _ = actions.submit_petition(session, Petition(channel=channel, description=description,
                                                            category_code=category, files=files,
                                                            confidential=confidential, contact_phone=contact_phone))
        if dispatch:
            actions.dispatch(session, case, actor="operator", grid_id=grid_id)
        return case.number


def case_of(engine, number: str) -> Case:
    with session_scope(engine) as session:
        return session.exec(select(Case).where(Case.number == number)).one()


def events_of(engine, number: str) -> list[CaseEvent]:
    with session_scope(engine) as session:
        case = session.exec(select(Case).where(Case.number == number)).one()
        return list(session.exec(select(CaseEvent).where(CaseEvent.case_id == case.id)
                                 .order_by(CaseEvent.id)).all())


def message_with(h, user: int, contains: str) -> dict:
    """The bot's latest message to ``user`` containing ``contains`` (as it is now, after edits)."""
    for msg in reversed(h.fake.sent_messages(user)):
        if contains in (msg.get("text") or msg.get("caption") or ""):
            return h.fake.message(user, msg["message_id"]) or msg
    raise AssertionError(f"no message to {user} containing {contains!r}")


def button_data(message: dict, label: str) -> str:
    for row in (message.get("reply_markup") or {}).get("inline_keyboard", []):
        for button in row:
            if button["text"] == label:
                return button["callback_data"]
    raise AssertionError(f"no button {label!r} on {message.get('text')!r}")


async def press_on(h, user: int, message: dict, label: str, *, chat_id: int | None = None) -> str:
    """Press ``label`` on this very message; returns the callback query id."""
    update = h.fake.make_callback_query(user, button_data(message, label), message, chat_id=chat_id)
    await h.send(update)
    return update["callback_query"]["id"]


async def answer_of(h, query_id: str, timeout: float = 10) -> dict:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while query_id not in h.fake.answered_callback_queries:
        if loop.time() > end:
            raise AssertionError(f"callback query {query_id} was never answered")
        await asyncio.sleep(0.02)
    return h.fake.answered_callback_queries[query_id]
