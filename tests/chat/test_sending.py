"""Telegram's limits kept by two real `gridline serve` processes together (chat/sending.py):
their message jobs take tokens from the same buckets in PostgreSQL, so what the fake Bot
API receives from both never goes over 30 messages in any second; a chat's notifications
arrive in order, each once; and a process killed with SIGKILL in the middle of a burst
loses nothing and doubles nothing.

The fake records every message the bot tried to send (``TelegramLimits(enforce=False)``:
nothing is refused, so a breach shows in the timestamps instead of being hidden by a 429).
Counting messages per one-second window is a property of what was sent, not a timing of
our speed."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from sqlmodel import select

from chat.notices import NOTIFY_JOB
from core.platform import jobs
from core.platform.db import session_scope
from core.platform.models import Job, JobStatus
from tests.support.chat_driver import bot_server, kill_server, start_server
from tests.support.fake_bot_api import FakeBotApi, TelegramLimits, counted_message
from tests.support.serve import database_url
from tests.support.waiting import until

pytestmark = pytest.mark.telegram_pace

TELEGRAM_PER_BOT = 30  # messages in any second
CHAT_BASE = 6_300_000_000
NUMBER = re.compile(r"T(\d+)-(\d+)")


def _short_lease(tmp_path: Path) -> str:
    rules = tmp_path / "rules.toml"
    rules.write_text("[instances]\nheartbeat_seconds = 1\nlease_seconds = 4\n", encoding="utf-8")
    return str(rules)


def _queue_burst(engine, chats: int, per_chat: int) -> None:
    """``per_chat`` status notices for each chat, queued round by round (as a burst of
    case changes would queue them): notice k of chat c names case ``T<c>-<k>``."""
    statuses = ["dispatched", "accepted", "reported_done", "closed"]
    with session_scope(engine) as session:
        for k in range(per_chat):
            for c in range(chats):
                jobs.enqueue(session, NOTIFY_JOB, {"case": f"T{c}-{k}", "status": statuses[k % len(statuses)],
                                                   "action": "bench", "chat_id": str(CHAT_BASE + c)})


def _jobs(engine, status: JobStatus | None = None) -> list[Job]:
    with session_scope(engine) as session:
        stmt = select(Job).where(Job.kind == NOTIFY_JOB)
        if status is not None:
            stmt = stmt.where(Job.status == status)
        return list(session.exec(stmt).all())


def _delivered(fake: FakeBotApi) -> list[tuple[int, int]]:
    """(chat, k) of every notice Telegram took, in the order it took them."""
    out = []
    for req in fake.calls("sendMessage"):
        if req.status == 200:
            found = NUMBER.search(req.params.get("text", ""))
            if found:
                out.append((int(found.group(1)), int(found.group(2))))
    return out


def _busiest_second(fake: FakeBotApi) -> int:
    """The most messages the bot tried to send (taken or not) within any one second."""
    times = sorted(r.at for r in fake.requests if counted_message(r.method) and "chat_id" in r.params)
    busiest, start = 0, 0
    for end, at in enumerate(times):
        while times[start] <= at - 1.0:
            start += 1
        busiest = max(busiest, end - start + 1)
    return busiest


@pytest.fixture
def pg(engine):
    if engine.dialect.name != "postgresql":
        pytest.skip("two processes share a PostgreSQL database (one process owns a SQLite file)")
    return engine


async def test_two_processes_share_the_limits_and_keep_each_chats_order(pg, tmp_path):
    chats, per_chat = 50, 3
    async with FakeBotApi(limits=TelegramLimits(enforce=False)) as fake:
        env = {"GRIDLINE_RULES": _short_lease(tmp_path)}
        a = bot_server(fake, tmp_path / "a", database_url(pg), env=env)
        b = bot_server(fake, tmp_path / "b", database_url(pg), env=env)
        try:
            await start_server(a, fake)
            await start_server(b, fake)
            _queue_burst(pg, chats, per_chat)
            await until(lambda: len(_jobs(pg, JobStatus.done)) == chats * per_chat, timeout=120,
                        message="every notice sent")
        finally:
            a.stop()
            b.stop()

    delivered = _delivered(fake)
    assert len(delivered) == chats * per_chat and len(set(delivered)) == len(delivered)  # each once
    for c in range(chats):
        assert [k for chat, k in delivered if chat == c] == list(range(per_chat))  # in order
    holders = {job.locked_by for job in _jobs(pg, JobStatus.done)}
    assert len(holders) == 2, holders  # both processes sent
    assert _busiest_second(fake) <= TELEGRAM_PER_BOT
    assert fake.limits.refused == 0  # nor over a chat's limit


async def test_sigkill_mid_burst_loses_and_doubles_no_notice(pg, tmp_path):
    chats, per_chat = 60, 2
    async with FakeBotApi(limits=TelegramLimits(enforce=False)) as fake:
        env = {"GRIDLINE_RULES": _short_lease(tmp_path)}
        a = bot_server(fake, tmp_path / "a", database_url(pg), env=env)
        b = bot_server(fake, tmp_path / "b", database_url(pg), env=env)
        try:
            await start_server(a, fake)
            await start_server(b, fake)
            _queue_burst(pg, chats, per_chat)
            await until(lambda: len(_delivered(fake)) >= 30, timeout=120, message="the burst under way")
            # From now on every message hangs on its way, as on a stalled network; once what
            # Telegram took is recorded as done, A dies with its messages in the air.
            hold = fake.hold("sendMessage")
            await hold.wait_arrived(60)
            await until(lambda: len(_jobs(pg, JobStatus.done)) == len(_delivered(fake)), timeout=60,
                        message="every message Telegram took is done in the database")
            await kill_server(a)
            hold.release(drop=True)  # the held messages never reached Telegram
            await start_server(a, fake)
            await until(lambda: len(_jobs(pg, JobStatus.done)) == chats * per_chat, timeout=180,
                        message="every notice sent after the crash")
        finally:
            a.stop()
            b.stop()

    delivered = _delivered(fake)
    counts = Counter(delivered)
    assert sorted(counts) == [(c, k) for c in range(chats) for k in range(per_chat)]  # none lost
    assert set(counts.values()) == {1}  # none twice
    assert not _jobs(pg, JobStatus.failed)


async def test_the_turn_goes_to_the_most_urgent_waiter_first():
    """``PriorityTurn``: while one sender holds the turn, waiters are let in by priority,
    then by arrival."""
    import asyncio

    from chat.sending import PriorityTurn

    turn = PriorityTurn()
    await turn.acquire(1)  # held
    order: list[str] = []

    async def waiter(name: str, priority: int) -> None:
        await turn.acquire(priority)
        order.append(name)
        turn.release()

    tasks = [asyncio.create_task(waiter(name, p)) for name, p in
             [("bulk", jobs.BULK), ("answer-1", jobs.PROMPT), ("dispatch", jobs.URGENT), ("answer-2", jobs.PROMPT)]]
    while turn.waiting < 4:
        await asyncio.sleep(0)
    turn.release()
    await asyncio.gather(*tasks)
    assert order == ["dispatch", "answer-1", "answer-2", "bulk"]
