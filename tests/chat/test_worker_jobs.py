"""The worker side's jobs with a controllable clock: reminders at yellow and red (once per
case, threshold and dispatch, across restarts), the daily digest, messages that are no
longer news, a chat unlinked from the command line, a report note by voice."""

from __future__ import annotations

import math

from sqlmodel import select

from core import actions
from core.cases.models import Attachment
from core.deadlines import reminders
from core.people import staff
from core.people.models import Worker
from core.places.models import GridLevel
from core.platform import clock
from core.platform.db import session_scope
from core.platform.models import Job, JobStatus
from tests.chat.staff import (
    JPEG,
    accept,
    answer_of,
    case_of,
    drain,
    events_of,
    file_case,
    leader_at,
    link,
    message_with,
    owner_of,
    press_on,
)
from tests.chat.voice import ogg_opus
from tests.core.shanghai import utc

WORKER, LEADER, RESIDENT = 7201, 7202, 7203
TUESDAY_9 = utc(2026, 11, 17, 9, 0)


def _texts(h, user: int) -> list[str]:
    return [m.get("text") or "" for m in h.fake.sent_messages(user)]


async def _sweep(h, at) -> None:
    clock.freeze(at)
    reminders.schedule_sweep(h.engine)
    await drain(h)


async def test_reminders_at_yellow_and_red_once_each(harness):
    h = harness
    demo = h.extra["demo"]
    worker = owner_of(h.engine, demo.micro_id)
    area = leader_at(h.engine, demo.micro_id, GridLevel.area)
    await link(h, WORKER, worker)
    await link(h, LEADER, area)
    clock.freeze(TUESDAY_9)
    number = file_case(h.engine, demo.micro_id)
    await drain(h)
    await h.reply(WORKER, f"新派单 {number}")
    with session_scope(h.engine) as session:
        owner_name = session.exec(select(Worker).where(Worker.code == worker)).one().name

    # 8 working hours to accept (due 09:30 tomorrow): at 16:00 5.5 h are used, still green
    await _sweep(h, utc(2026, 11, 17, 16, 0))
    assert not any("时限提醒" in t for t in _texts(h, WORKER))
    # 16:35: over 75 % used: yellow, to the owner only, with the task's buttons
    await _sweep(h, utc(2026, 11, 17, 16, 35))
    yellow = await h.reply(WORKER, "⏰ 时限提醒")
    assert number in yellow["text"] and "2026-11-18 09:30 前签收" in yellow["text"]
    assert [b["text"] for b in yellow["reply_markup"]["inline_keyboard"][0]] == ["签收", "退回…"]
    # later sweeps, a restart, another sweep: no second yellow
    await _sweep(h, utc(2026, 11, 17, 17, 0))
    await h.restart()
    await _sweep(h, utc(2026, 11, 17, 17, 20))
    assert sum("时限提醒" in t for t in _texts(h, WORKER)) == 1
    assert not any("督办" in t for t in _texts(h, LEADER))

    # red once the deadline passed: the owner and the leader above
    await _sweep(h, utc(2026, 11, 18, 9, 31))
    red = await h.reply(WORKER, "🔴 已超时")
    assert number in red["text"]
    leader = await h.reply(LEADER, "督办提醒")
    assert owner_name in leader["text"] and number in leader["text"] and "reply_markup" not in leader
    await _sweep(h, utc(2026, 11, 18, 10, 0))
    assert sum("已超时" in t for t in _texts(h, WORKER)) == 1
    assert sum("督办提醒" in t for t in _texts(h, LEADER)) == 1
    with session_scope(h.engine) as session:
        keys = sorted(j.dedupe_key for j in session.exec(select(Job).where(Job.kind == reminders.REMIND_JOB)))
    case = case_of(h.engine, number)
    assert keys == [f"remind:{case.id}:response-red:{staff.stamp(case.dispatched_at)}",
                    f"remind:{case.id}:response-yellow:{staff.stamp(case.dispatched_at)}"]

    # accepted: the resolution clock (40 working hours) is green; nothing more
    await accept(h, WORKER)
    await _sweep(h, utc(2026, 11, 18, 11, 0))
    assert sum("提醒" in t or "超时" in t for t in _texts(h, WORKER)) == 2


async def test_a_reminder_that_is_no_longer_due_is_dropped(harness):
    h = harness
    demo = h.extra["demo"]
    await link(h, WORKER, owner_of(h.engine, demo.micro_id))
    clock.freeze(TUESDAY_9)
    number = file_case(h.engine, demo.micro_id)
    await drain(h)
    clock.freeze(utc(2026, 11, 17, 16, 35))
    assert len(reminders.queue_reminders(h.engine)) == 1
    # accepted before the reminder job ran
    with session_scope(h.engine) as session:
        actions.accept(session, actions.get_case(session, number), actor="console")
    await drain(h)
    assert not any("时限提醒" in t for t in _texts(h, WORKER))
    with session_scope(h.engine) as session:
        job = session.exec(select(Job).where(Job.kind == reminders.REMIND_JOB)).one()
        assert job.status == JobStatus.done


async def test_daily_digest_on_working_days_at_its_time(harness):
    h = harness
    demo = h.extra["demo"]
    await link(h, WORKER, owner_of(h.engine, demo.micro_id))
    await link(h, LEADER, leader_at(h.engine, demo.micro_id, GridLevel.street))  # nothing to do
    clock.freeze(utc(2026, 11, 13, 9, 0))  # Friday: due to be accepted by Monday 09:30
    number = file_case(h.engine, demo.micro_id)
    await drain(h)

    clock.freeze(utc(2026, 11, 17, 7, 0))  # Tuesday 07:00: queued for 08:30, not due yet
    tz = h.services.settings.timezone
    assert str(reminders.schedule_digest(h.engine, tz)) == "2026-11-17"
    assert reminders.schedule_digest(h.engine, tz) is None  # once a day
    await drain(h)
    assert not any("早上好" in t for t in _texts(h, WORKER))
    clock.freeze(utc(2026, 11, 17, 8, 31))
    await drain(h)
    digest = await h.reply(WORKER, "早上好！今天的待办任务（1 件）")
    assert number in digest["text"] and digest["text"].splitlines()[1].startswith("🔴")
    assert not any("早上好" in t for t in _texts(h, LEADER))
    await h.press(WORKER, f"📋 {number}")
    await h.reply(WORKER, f"任务 {number}")

    # Saturday: no digest; a digest that could only go out hours late is skipped
    clock.freeze(utc(2026, 11, 21, 7, 0))
    assert reminders.schedule_digest(h.engine, tz) is None
    clock.freeze(utc(2026, 11, 18, 12, 0))
    assert str(reminders.schedule_digest(h.engine, tz)) == "2026-11-18"
    await drain(h)
    assert sum("早上好" in t for t in _texts(h, WORKER)) == 1


async def test_a_dispatch_message_that_is_no_longer_news_is_dropped(harness):
    h = harness
    demo = h.extra["demo"]
    await link(h, WORKER, owner_of(h.engine, demo.micro_id))
    number = file_case(h.engine, demo.micro_id)
    with session_scope(h.engine) as session:
        actions.accept(session, actions.get_case(session, number), actor="console")
    await drain(h)
    assert not any(number in t for t in _texts(h, WORKER))


async def test_a_blocked_chat_does_not_hold_the_job(harness):
    h = harness
    demo = h.extra["demo"]
    await link(h, WORKER, owner_of(h.engine, demo.micro_id))
    h.fake.block_chat(WORKER)
    file_case(h.engine, demo.micro_id)
    await drain(h)
    with session_scope(h.engine) as session:
        job = session.exec(select(Job).where(Job.kind == staff.MESSAGE_JOB)).one()
        assert job.status == JobStatus.done and job.attempts == 1


async def test_unlinked_from_the_command_line(harness):
    h = harness
    demo = h.extra["demo"]
    code = owner_of(h.engine, demo.micro_id)
    await link(h, WORKER, code)
    number = file_case(h.engine, demo.micro_id)
    await drain(h)
    card = message_with(h, WORKER, f"新派单 {number}")
    with session_scope(h.engine) as session:
        assert staff.unlink(session, staff.staff_by_code(session, code), actor="cli") == str(WORKER)
    # before the bot heard of it: a press is refused, nothing changes
    pressed = await press_on(h, WORKER, card, "签收")
    assert (await answer_of(h, pressed)).get("text") == "这个任务已经不归您处理"
    await h.reply(WORKER, "已解除工作人员绑定")
    await drain(h)  # the unlink notice job: the chat is told again, without the keyboard
    notice = await h.reply(WORKER, "已解除工作人员绑定")
    assert notice["reply_markup"] == {"remove_keyboard": True}
    assert case_of(h.engine, number).status.value == "dispatched"
    # from now on the chat is nobody's: it may speak as a resident
    await h.say(WORKER, "楼道灯坏了")
    await h.reply(WORKER, "问题发生在哪里")


async def test_a_report_note_by_voice(harness):
    h = harness
    demo = h.extra["demo"]
    await link(h, WORKER, owner_of(h.engine, demo.micro_id))
    number = file_case(h.engine, demo.micro_id)
    await drain(h)
    await accept(h, WORKER)
    await h.press(WORKER, "办结上报")
    await h.reply(WORKER, "请上报")
    h.speech.say("已经换了新灯泡")
    tone = b"".join(int(3000 * math.sin(i / 5)).to_bytes(2, "little", signed=True) for i in range(16000))
    note = h.fake.add_file(ogg_opus(tone, 16000), kind="voice")
    await h.send(h.fake.make_voice_update(note.file_id, user_id=WORKER))
    await h.reply(WORKER, "语音识别为：「已经换了新灯泡」")
    await h.reply(WORKER, "说明已收到")
    photo = h.fake.add_file(JPEG, kind="photo")
    await h.send(h.fake.make_photo_update(photo.file_id, user_id=WORKER))
    await h.reply(WORKER, "可以点「提交上报」了")
    await h.press(WORKER, "提交上报")
    await h.reply(WORKER, "已办结上报")
    events = events_of(h.engine, number)
    assert events[-1].action == "report_done" and events[-1].reason == "已经换了新灯泡"
    with session_scope(h.engine) as session:
        kinds = sorted(a.kind for a in session.exec(
            select(Attachment).where(Attachment.case_id == case_of(h.engine, number).id)))
    assert kinds == ["photo", "voice"]


async def test_a_category_that_needs_no_photo(harness):
    h = harness
    demo = h.extra["demo"]
    await link(h, WORKER, owner_of(h.engine, demo.micro_id))
    number = file_case(h.engine, demo.micro_id, description="邻居噪音吵架", category="neighbour_dispute")
    await drain(h)
    await accept(h, WORKER)
    await h.press(WORKER, "办结上报")
    await h.reply(WORKER, "照片也可以发（可选）")
    await h.say(WORKER, "已上门调解，双方和解")
    await h.reply(WORKER, "可以点「提交上报」了")
    await h.press(WORKER, "提交上报")
    await h.reply(WORKER, "已办结上报")
    assert events_of(h.engine, number)[-1].action == "report_done"


async def test_the_job_runner_is_woken_when_a_job_commits(engine):
    import asyncio

    from chat.worker_jobs import wake_on_commit
    from core.platform import jobs
    from core.platform.models import Job as JobRow

    class Runner:
        wakes = 0

        def wake(self) -> None:
            Runner.wakes += 1

    jobs.declare("x", "tests/chat/test_worker_jobs.py")
    loop = asyncio.get_running_loop()
    remove = wake_on_commit(engine, Runner(), loop)
    try:
        def queue(nested: bool, fail: bool = False) -> None:
            try:
                with session_scope(engine) as session:
                    if nested:
                        with session.begin_nested():
                            jobs.enqueue(session, "x", {})
                    else:
                        jobs.enqueue(session, "x", {})
                    if fail:
                        raise RuntimeError("rolled back")
            except RuntimeError:
                pass

        # the wake is scheduled on the loop during the commit, before to_thread's result
        await asyncio.to_thread(queue, False)
        assert Runner.wakes == 1
        await asyncio.to_thread(queue, True)  # inside a savepoint: one wake, at the real commit
        assert Runner.wakes == 2
        await asyncio.to_thread(queue, False, True)  # rolled back: nothing to run
        assert Runner.wakes == 2
        with session_scope(engine) as session:
            assert len(session.exec(select(JobRow)).all()) == 2
    finally:
        remove()


async def test_the_served_app_schedules_the_staff_sweep_and_the_daily_digest(fake, engine, demo, tmp_path):
    """``gridline serve`` builds the app with the bot and runs jobs: its staff ticker queues
    the reminder sweep and the day's digest (it once looked for a runner attribute that did
    not exist, and never did)."""
    from aiohttp.test_utils import TestClient, TestServer

    from core.platform.settings import Settings
    from gridline.app import build_app
    from tests.chat.conftest import SECRET
    from tests.support.waiting import until

    clock.freeze(TUESDAY_9)  # a working day, before the digest's hour
    settings = Settings(data_dir=tmp_path / "data", public_url="http://127.0.0.1:9", telegram_token=fake.token,
                        telegram_secret=SECRET, telegram_api_url=fake.root_url, telegram_mode="webhook")
    app = build_app(settings, engine=engine, channels=("chat",), run_jobs=True)

    def scheduled() -> set[str]:
        with session_scope(engine) as session:
            return set(session.exec(select(Job.kind).where(Job.kind.in_([reminders.SWEEP_JOB,
                                                                          reminders.DIGEST_JOB]))).all())

    assert scheduled() == set()
    async with TestClient(TestServer(app)):
        await until(lambda: scheduled() == {reminders.SWEEP_JOB, reminders.DIGEST_JOB}, timeout=30,
                    message="the staff sweep and the digest queued by the served app")
    with session_scope(engine) as session:
        digest = session.exec(select(Job).where(Job.kind == reminders.DIGEST_JOB)).one()
    assert digest.payload["day"] == "2026-11-17"
