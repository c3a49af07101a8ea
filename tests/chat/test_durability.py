"""Durable intake: an update accepted (200 to Telegram, or confirmed by the next
getUpdates) survives a crash before its handlers ran and is handled after the restart,
once, in order; the group commit; forgetting old update ids."""

from __future__ import annotations

import asyncio
import copy
from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import select

from chat import inbox
from core.clock import utcnow
from core.db import session_scope
from core.models import ChannelState, Job, JobStatus, SeenMessage
from tests.support.waiting import until

USER = 9401


def _inbox(engine) -> list[str]:
    with session_scope(engine) as session:
        rows = session.exec(select(ChannelState).where(ChannelState.namespace == inbox.INBOX)).all()
        return sorted(r.key for r in rows)


def _seen(engine) -> set[str]:
    with session_scope(engine) as session:
        return {r.external_id for r in session.exec(select(SeenMessage)).all()}


def _crash_before_handling(h) -> list[int]:
    """From now on this process accepts updates but dies before handling them: the
    coroutine that would run the handlers is dropped (as a killed process would)."""
    dropped: list[int] = []

    async def drop(update, coroutine) -> None:
        dropped.append(update.update_id)
        coroutine.close()

    h.bot.application.update_processor.do_process_update = drop
    return dropped


async def test_accepted_update_survives_a_crash_and_is_handled_once_after_restart(any_mode):
    h = any_mode
    h.fake.add_user(USER, "Fu", language_code="zh-hans")
    dropped = _crash_before_handling(h)
    first = h.fake.make_text_update(USER, "楼道灯坏了")
    second = h.fake.make_text_update(USER, "跳过")
    await h.send(first)
    await h.send(second)
    await until(lambda: len(dropped) == 2)
    if h.mode == "polling":  # the updater's next getUpdates confirmed both to Telegram
        await until(lambda: not h.fake.pending_updates)
    ids = sorted(str(u["update_id"]) for u in (first, second))
    assert _inbox(h.engine) == ids
    assert set(ids) <= _seen(h.engine)  # seen, yet never finished: must still be handled
    assert not h.fake.sent_messages(USER)

    await h.restart()  # a new process on the same database
    await h.reply(USER, "问题发生在哪里")
    await h.reply(USER, "哪一类问题")
    texts = [m["text"] for m in h.fake.sent_messages(USER)]
    assert "问题发生在哪里" in texts[0] and "哪一类问题" in texts[-1]  # in order: "skip" answered "where"
    await until(lambda: _inbox(h.engine) == [])

    # Telegram redelivers both (it never heard a 200, say): ignored
    await h.send(copy.deepcopy(first))
    await h.send(copy.deepcopy(second))
    await h.command(USER, "help")
    await h.reply(USER, "可以这样用")
    texts = [m["text"] for m in h.fake.sent_messages(USER)]
    assert sum("问题发生在哪里" in t for t in texts) == 1
    assert sum("哪一类问题" in t for t in texts) == 1


async def test_duplicate_delivery_is_not_kept_twice(harness):
    h = harness
    h.fake.add_user(USER, "Fu", language_code="zh-hans")
    dropped = _crash_before_handling(h)
    update = h.fake.make_text_update(USER, "楼道灯坏了")
    await h.send(update)
    await h.send(copy.deepcopy(update))
    await until(lambda: len(dropped) == 1)
    await asyncio.sleep(0.1)
    assert dropped == [update["update_id"]] and _inbox(h.engine) == [str(update["update_id"])]


async def test_group_commit_isolates_a_failing_operation(engine):
    commits = inbox.GroupCommit(engine)

    def broken(conn) -> None:
        conn.execute(text("SELECT * FROM no_such_table"))

    results = await asyncio.gather(
        commits.run(inbox.accept_op(1, {"update_id": 1})),
        commits.run(broken),
        commits.run(inbox.accept_op(1, {"update_id": 1})),  # the same id again: a redelivery
        commits.run(inbox.accept_op(2, {"update_id": 2})),
        return_exceptions=True,
    )
    assert results[0] is True and results[2] is False and results[3] is True
    assert isinstance(results[1], SQLAlchemyError)
    assert _inbox(engine) == ["1", "2"] and _seen(engine) == {"1", "2"}
    await commits.run(inbox.finish_op(1, {("tg:chat", "5"): {"draft": {"id": "ab"}}}))
    assert _inbox(engine) == ["2"]
    with session_scope(engine) as session:
        assert session.get(ChannelState, ("tg:chat", "5")).data == {"draft": {"id": "ab"}}


async def test_old_update_ids_are_forgotten_daily(harness):
    h = harness
    days = 8
    now = utcnow()
    with session_scope(h.engine) as session:
        session.add(SeenMessage(channel="telegram", external_id="1", at=now - timedelta(days=days)))
        session.add(SeenMessage(channel="telegram", external_id="2", at=now - timedelta(days=1)))
        session.add(SeenMessage(channel="hotline", external_id="3", at=now - timedelta(days=days)))
    inbox.schedule_cleanup(h.engine)
    inbox.schedule_cleanup(h.engine)  # the hourly ticker, or another instance: one job a day
    with session_scope(h.engine) as session:
        queued = session.exec(select(Job).where(Job.kind == inbox.CLEANUP_JOB)).all()
        assert len(queued) == 1
    while await h.run_jobs():
        pass
    with session_scope(h.engine) as session:
        job = session.exec(select(Job).where(Job.kind == inbox.CLEANUP_JOB)).one()
        assert job.status == JobStatus.done
        left = {(r.channel, r.external_id) for r in session.exec(select(SeenMessage)).all()}
    assert left == {("telegram", "2"), ("hotline", "3")}
