"""Durable intake: an update accepted (200 to Telegram, or confirmed by the next
getUpdates) survives a crash before its handlers ran and is handled after the restart,
once, in order; the group commit; forgetting old update ids."""

from __future__ import annotations

import asyncio
import copy
import re
from datetime import timedelta

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError, ProgrammingError, SQLAlchemyError
from sqlmodel import select

from chat import inbox, store
from chat.models import SeenMessage
from chat.web import STUBBORN_ATTEMPTS
from core.cases.models import Case
from core.platform.clock import utcnow
from core.platform.db import session_scope
from core.platform.models import ChannelState, Job, JobStatus
from tests.support.waiting import until

USER = 9401


def _inbox(engine) -> list[str]:
    return sorted(str(update_id) for update_id in inbox.pending_ids(engine))


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
    later = h.fake.make_text_update(USER, "跳过")  # queued after the redelivery, if that were kept
    await h.send(later)
    await until(lambda: len(dropped) == 2)
    assert dropped == [update["update_id"], later["update_id"]]
    assert _inbox(h.engine) == sorted(str(u["update_id"]) for u in (update, later))


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


async def test_a_batch_the_database_pool_refuses_is_answered_to_every_caller_and_the_next_batch_runs(engine):
    """The bot's database pool refuses work when too much waits (DatabaseBusy, not a
    database error): each caller of the refused batch hears it (the bot's retry policies
    then decide), instead of the group commit's task dying with them waiting for ever."""
    from core.errors import DatabaseBusy

    refusing = [True]

    async def run(func, *args):  # noqa: ANN001, ANN202
        if refusing[0]:
            refusing[0] = False
            raise DatabaseBusy("64 database calls are already waiting for one of 15 threads")
        return await asyncio.to_thread(func, engine, *args)

    commits = inbox.GroupCommit(engine, run=run)
    refused = await asyncio.wait_for(asyncio.gather(
        commits.run(inbox.accept_op(1, {"update_id": 1})),
        commits.run(inbox.accept_op(2, {"update_id": 2})),
        return_exceptions=True), 30)  # on the old code: never answered
    assert all(isinstance(r, DatabaseBusy) for r in refused), refused
    assert _inbox(engine) == [] and _seen(engine) == set()  # nothing was written
    assert await asyncio.wait_for(commits.run(inbox.accept_op(1, {"update_id": 1})), 30) is True
    assert _inbox(engine) == ["1"]


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


# ---------------------------------------------------------------- handled again after a failure


def _lost_connection() -> OperationalError:
    return OperationalError("SELECT 1", {}, psycopg.OperationalError("server closed the connection unexpectedly"))


class Faulty:
    """A store function that fails while ``broken`` (or for its first ``times`` calls),
    noting each time whether the update being handled was still in the inbox."""

    def __init__(self, real, engine, *, times: int | None = None, error=_lost_connection):
        self.real, self.engine, self.times, self.error = real, engine, times, error
        self.broken = times is None
        self.calls = 0
        self.inbox_while_failing: list[list[str]] = []

    def __call__(self, *args, **kw):
        self.calls += 1
        failing = self.broken if self.times is None else self.calls <= self.times
        if failing:
            self.inbox_while_failing.append(_inbox(self.engine))
            raise self.error()
        return self.real(*args, **kw)


async def _to_confirm(h, user: int, problem: str = "楼道灯坏了") -> None:
    await h.say(user, problem)
    await h.reply(user, "问题发生在哪里")
    await h.say(user, "跳过")
    await h.reply(user, "哪一类问题")
    await h.press(user, "其他 / 不确定")
    await h.reply(user, "请确认")


def _cases(engine) -> list[str]:
    with session_scope(engine) as session:
        return list(session.exec(select(Case.number)).all())


def _number(text: str) -> str:
    return re.search(r"\d{10,}", text).group(0)


async def test_failed_filing_gives_the_button_back_and_the_number_follows(harness, monkeypatch):
    """The database fails as 确认提交 is pressed: the resident gets the confirm button back
    at once, the update stays in the inbox and is handled again, and the number arrives."""
    h = harness
    h.fake.add_user(USER, "Fu", language_code="zh-hans")
    await _to_confirm(h, USER)
    faulty = Faulty(store.file, h.engine, times=1)
    monkeypatch.setattr(store, "file", faulty)
    press = await h.press(USER, "✅ 确认提交")
    failed = await h.reply(USER, "提交暂时没有成功")
    labels = [b["text"] for row in failed["reply_markup"]["inline_keyboard"] for b in row]
    assert labels == ["✅ 确认提交", "🔒 保密提交", "取消"]  # the confirmation offered again, 保密 included
    assert faulty.inbox_while_failing == [[str(press["update_id"])]]
    filed = await h.reply(USER, "诉求已受理")
    assert _cases(h.engine) == [_number(filed["text"])]
    await until(lambda: _inbox(h.engine) == [])
    # told once that it would be handled: no second "busy" note on top of the button
    assert not any("系统有点忙" in m["text"] for m in h.fake.sent_messages(USER))


async def test_stubborn_filing_failure_lets_the_resident_press_again(harness, monkeypatch):
    """A database error that does not go away: after a few tries the chat moves on (the
    press stays in the inbox); the resident presses the button they were given again once
    the database is back: one case, their number, and the parked press then finds the
    dialog finished and changes nothing."""
    h = harness
    h.fake.add_user(USER, "Fu", language_code="zh-hans")
    await _to_confirm(h, USER)
    faulty = Faulty(store.file, h.engine, error=lambda: ProgrammingError("INSERT", {}, Exception("refused")))
    monkeypatch.setattr(store, "file", faulty)
    h.bot.stubborn_again = 3.0  # the parked press comes back well after the resident's own
    first = await h.press(USER, "✅ 确认提交")
    await h.reply(USER, "提交暂时没有成功")
    await until(lambda: faulty.calls >= STUBBORN_ATTEMPTS)
    await until(lambda: first["update_id"] in h.bot._later)  # parked: the chat moved on
    assert str(first["update_id"]) in _inbox(h.engine)
    faulty.broken = False
    await h.press(USER, "✅ 确认提交")  # the button that came back with the apology
    filed = await h.reply(USER, "诉求已受理")
    assert str(first["update_id"]) in _inbox(h.engine)  # filed by the resident's press, not the parked one
    number = _number(filed["text"])
    await until(lambda: _inbox(h.engine) == [])  # the parked press, handled at last
    assert _cases(h.engine) == [number]
    assert sum("诉求已受理" in m["text"] for m in h.fake.sent_messages(USER)) == 1


async def test_number_reaches_the_resident_when_its_message_failed(harness):
    """The case is committed but Telegram fails the answer that carries the number: the
    press is handled again, filing finds the same case, and the number is sent."""
    h = harness
    h.fake.add_user(USER, "Fu", language_code="zh-hans")
    await _to_confirm(h, USER)
    h.fake.fail_next("sendMessage", error_code=500)
    await h.press(USER, "✅ 确认提交")
    filed = await h.reply(USER, "诉求已受理")
    failed = [r for r in h.fake.calls("sendMessage") if not r.ok]
    assert len(failed) == 1 and "诉求已受理" in failed[0].params["text"]
    assert _cases(h.engine) == [_number(filed["text"])]
    await until(lambda: _inbox(h.engine) == [])


async def test_database_error_in_a_step_keeps_the_update_and_handles_it_again(harness, monkeypatch):
    """Any step, not only filing: the category lookup fails twice. The resident hears once
    that the message is saved, the update stays in the inbox, and the dialog goes on where
    it was (the draft is as the update found it)."""
    h = harness
    h.fake.add_user(USER, "Fu", language_code="zh-hans")
    faulty = Faulty(store.category_options, h.engine, times=2)
    monkeypatch.setattr(store, "category_options", faulty)
    await h.say(USER, "井盖丢了，晚上很危险")
    await h.reply(USER, "问题发生在哪里")
    update = h.fake.make_text_update(USER, "跳过")
    await h.send(update)
    await h.reply(USER, "系统有点忙")
    await h.reply(USER, "哪一类问题")
    assert faulty.inbox_while_failing == [[str(update["update_id"])]] * 2
    await h.press(USER, "其他 / 不确定")
    await h.reply(USER, "请确认")
    await h.press(USER, "✅ 确认提交")
    filed = await h.reply(USER, "诉求已受理")
    assert _cases(h.engine) == [_number(filed["text"])]
    with session_scope(h.engine) as session:
        assert session.exec(select(Case)).one().description == "井盖丢了，晚上很危险"
    texts = [m["text"] for m in h.fake.sent_messages(USER)]
    assert sum("系统有点忙" in t for t in texts) == 1
    assert not any("出了点问题" in t for t in texts)


async def test_later_messages_wait_behind_a_failing_one(harness, monkeypatch):
    """The chat's order holds while an update is handled again: "skip" sent while the
    problem is being retried still answers "where"."""
    h = harness
    h.fake.add_user(USER, "Fu", language_code="zh-hans")
    faulty = Faulty(store.resident_for_chat, h.engine)
    monkeypatch.setattr(store, "resident_for_chat", faulty)
    await h.say(USER, "垃圾桶满了")
    await h.reply(USER, "系统有点忙")
    await h.say(USER, "跳过")
    await until(lambda: faulty.calls >= 2)
    faulty.broken = False
    await h.reply(USER, "问题发生在哪里")
    await h.reply(USER, "哪一类问题")
    texts = [m["text"] for m in h.fake.sent_messages(USER)]
    assert texts.index(next(t for t in texts if "问题发生在哪里" in t)) < texts.index(
        next(t for t in texts if "哪一类问题" in t))


async def test_update_failing_at_shutdown_is_handled_after_restart(harness, monkeypatch):
    h = harness
    h.fake.add_user(USER, "Fu", language_code="zh-hans")
    faulty = Faulty(store.resident_for_chat, h.engine)
    monkeypatch.setattr(store, "resident_for_chat", faulty)
    update = h.fake.make_text_update(USER, "路灯坏了")
    await h.send(update)
    await h.reply(USER, "系统有点忙")
    await h.stop()  # stops while the update waits to be handled again
    assert _inbox(h.engine) == [str(update["update_id"])]
    monkeypatch.setattr(store, "resident_for_chat", faulty.real)
    await h.start()
    await h.reply(USER, "问题发生在哪里")
    await until(lambda: _inbox(h.engine) == [])


async def test_a_retry_policy_made_only_after_a_failure_counts_that_failure_as_its_first_attempt():
    """``chat.web`` tries an update's work once before building its retry policy; the policy
    must still see that try as attempt 1 (no extra attempt, none lost)."""
    from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

    from chat.web import _retried_after_a_failure

    class Flaky(Exception):
        pass

    def policy(attempts: int):  # noqa: ANN202
        made = []

        def make() -> AsyncRetrying:
            made.append(attempts)
            return AsyncRetrying(retry=retry_if_exception_type(Flaky), stop=stop_after_attempt(attempts),
                                 sleep=lambda _: asyncio.sleep(0), reraise=True)

        return made, make

    def failing(times: int, error: type[Exception] = Flaky):  # noqa: ANN202
        calls: list[int] = []

        async def work(value: str) -> str:
            calls.append(1)
            if len(calls) <= times:
                raise error(f"failure {len(calls)}")
            return value

        return calls, work

    made, make = policy(3)
    calls, work = failing(0)
    assert await _retried_after_a_failure(make, work, "ok") == "ok"
    assert (len(calls), made) == (1, [])  # no failure: no policy made at all

    made, make = policy(3)
    calls, work = failing(2)
    assert await _retried_after_a_failure(make, work, "ok") == "ok"
    assert len(calls) == 3 and made == [3]  # the third attempt, as the policy allows

    made, make = policy(3)
    calls, work = failing(3)
    with pytest.raises(Flaky, match="failure 3"):
        await _retried_after_a_failure(make, work, "ok")
    assert len(calls) == 3  # no fourth

    made, make = policy(3)
    calls, work = failing(1, ValueError)  # not one the policy retries: raised after the one try
    with pytest.raises(ValueError, match="failure 1"):
        await _retried_after_a_failure(make, work, "ok")
    assert len(calls) == 1
