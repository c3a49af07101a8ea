"""The worker side of the bot end to end: the real PTB application against the fake Bot
API, on SQLite and PostgreSQL. Three (and more) chats: a resident, the grid worker who
owns the case, the leader who checks it."""

from __future__ import annotations

import re

from sqlmodel import select

from core import actions
from core.cases.models import Attachment, CaseStatus
from core.people import staff
from core.people.models import AuditEntry, Resident, StaffChat
from core.places.models import GridLevel
from core.platform.db import session_scope
from tests.chat.staff import (
    JPEG,
    accept,
    answer_of,
    button_data,
    case_of,
    drain,
    events_of,
    file_case,
    leader_at,
    link,
    message_with,
    owner_of,
    press_on,
    report,
)

RESIDENT, WORKER, LEADER, OTHER = 7101, 7102, 7103, 7104
NOT_YOURS = "这个任务已经不归您处理"


def _number(text: str) -> str:
    return re.search(r"\d{10,}", text).group(0)


async def test_the_whole_loop_in_three_chats(harness):
    h = harness
    demo = h.extra["demo"]
    worker, leader = owner_of(h.engine, demo.micro_id), leader_at(h.engine, demo.micro_id, GridLevel.community)
    await link(h, WORKER, worker, name="Wang")
    await link(h, LEADER, leader, name="Zhou")

    # the resident files by text, with a photo
    h.fake.add_user(RESIDENT, "Li", language_code="zh-hans")
    photo = h.fake.add_file(JPEG, kind="photo")
    await h.send(h.fake.make_photo_update(photo.file_id, caption="小区门口的路灯坏了，晚上一片漆黑",
                                          user_id=RESIDENT))
    await h.reply(RESIDENT, "问题发生在哪里")
    lat, lon = demo.point
    await h.send(h.fake.make_location_update(lat, lon, user_id=RESIDENT))
    await h.reply(RESIDENT, "哪一类问题")
    await h.press(RESIDENT, "路灯故障")
    await h.reply(RESIDENT, "请确认您的诉求")
    await h.press(RESIDENT, "✅ 确认提交")
    number = _number((await h.reply(RESIDENT, "诉求已受理"))["text"])
    assert case_of(h.engine, number).status == CaseStatus.dispatched

    # the worker gets the dispatch: the photo, then the task with its buttons
    await drain(h)
    sent_photo = await h.fake.wait_for("sendPhoto", lambda p: int(p["chat_id"]) == WORKER)
    assert sent_photo.params["photo"].data == JPEG and number in sent_photo.params["caption"]
    card = await h.reply(WORKER, f"新派单 {number}")
    for part in ("路灯故障", demo.micro_name, "小区门口的路灯坏了", "签收时限", "办结时限"):
        assert part in card["text"]
    labels = [b["text"] for row in card["reply_markup"]["inline_keyboard"] for b in row]
    assert labels == ["签收", "退回…"]
    assert all(len(b["callback_data"].encode()) <= 64 for row in card["reply_markup"]["inline_keyboard"] for b in row)

    await h.press(WORKER, "签收")
    await h.reply(WORKER, f"已签收 {number}")
    await h.press(WORKER, "开始处理")
    await h.reply(WORKER, "已开始处理")
    await report(h, WORKER, "已更换灯泡，晚上亮了")

    # the leader checks it: the worker's photo and note, [通过] [不通过…]
    await drain(h)
    check_photo = await h.fake.wait_for("sendPhoto", lambda p: int(p["chat_id"]) == LEADER)
    assert check_photo.params["photo"].data == JPEG
    check = await h.reply(LEADER, f"待核查 {number}")
    assert "已更换灯泡，晚上亮了" in check["text"] and "现场照片 1 张" in check["text"]
    await h.press(LEADER, "通过")
    await h.reply(LEADER, "核查通过")

    # the resident is asked, answers, the case closes
    await drain(h)
    await h.reply(RESIDENT, "问题解决了吗")
    await h.press(RESIDENT, "已解决")
    await h.press(RESIDENT, "满意")
    await h.press(RESIDENT, "不用了")
    await h.reply(RESIDENT, "感谢您的评价")

    events = events_of(h.engine, number)
    assert [e.action for e in events] == [
        "submit", "locate", "dispatch", "accept", "start", "attach", "report_done", "verify",
        "survey_attempt", "close"]
    by_action = {e.action: e for e in events}
    assert by_action["accept"].actor == f"worker:{worker}" and by_action["accept"].on_time is True
    assert by_action["report_done"].reason == "已更换灯泡，晚上亮了"
    assert by_action["verify"].actor == f"worker:{leader}"
    case = case_of(h.engine, number)
    assert case.status == CaseStatus.closed
    with session_scope(h.engine) as session:
        photos = session.exec(select(Attachment).where(Attachment.case_id == case.id,
                                                       Attachment.kind == "photo")).all()
        assert len(photos) == 2  # the resident's and the worker's
        assert by_action["report_done"].data["photos"] == [p.path for p in photos][1:]
        links = session.exec(select(AuditEntry).where(AuditEntry.action == "staff.link_chat")).all()
        assert sorted(a.target_id for a in links) == sorted([worker, leader])


async def test_return_then_redispatch(harness):
    h = harness
    demo = h.extra["demo"]
    worker = owner_of(h.engine, demo.micro_id)
    await link(h, WORKER, worker)
    number = file_case(h.engine, demo.micro_id)
    await drain(h)
    first = message_with(h, WORKER, f"新派单 {number}")
    await press_on(h, WORKER, first, "退回…")
    await h.reply(WORKER, "退回")
    await h.say(WORKER, "这是隔壁网格的路灯")
    await h.reply(WORKER, "已退回")
    case = case_of(h.engine, number)
    assert case.status == CaseStatus.returned and case.worker_id is None
    assert events_of(h.engine, number)[-1].reason == "这是隔壁网格的路灯"

    # the operator dispatches it again: a new task message, the old buttons are dead
    with session_scope(h.engine) as session:
        actions.dispatch(session, actions.get_case(session, number), actor="operator", grid_id=demo.micro_id)
    await drain(h)
    await h.reply(WORKER, f"新派单 {number}")
    old = await press_on(h, WORKER, first, "签收")
    assert (await answer_of(h, old)).get("text") == NOT_YOURS
    assert case_of(h.engine, number).status == CaseStatus.dispatched
    second = message_with(h, WORKER, f"新派单 {number}")
    assert second["message_id"] != first["message_id"]
    await press_on(h, WORKER, second, "签收")
    await h.reply(WORKER, f"已签收 {number}")
    assert [e.action for e in events_of(h.engine, number)] == ["submit", "dispatch", "return", "dispatch", "accept"]


async def test_failed_check_then_a_second_report(harness):
    h = harness
    demo = h.extra["demo"]
    worker, leader = owner_of(h.engine, demo.micro_id), leader_at(h.engine, demo.micro_id, GridLevel.community)
    await link(h, WORKER, worker)
    await link(h, LEADER, leader)
    number = file_case(h.engine, demo.micro_id)
    await drain(h)
    await accept(h, WORKER)
    await report(h, WORKER, "换了灯泡")
    await drain(h)
    await h.reply(LEADER, f"待核查 {number}")
    await h.press(LEADER, "不通过…")
    await h.reply(LEADER, "不通过的原因")
    await h.say(LEADER, "照片里的灯还是灭的")
    await h.reply(LEADER, "核查不通过")
    assert case_of(h.engine, number).status == CaseStatus.in_progress

    await drain(h)
    back = await h.reply(WORKER, f"核查未通过 {number}")
    assert "照片里的灯还是灭的" in back["text"]
    assert [b["text"] for row in back["reply_markup"]["inline_keyboard"] for b in row] == ["办结上报"]
    await report(h, WORKER, "重新接线，灯亮了", photos=2)
    await drain(h)
    second = await h.reply(LEADER, f"待核查 {number}")
    assert "重新接线，灯亮了" in second["text"] and "现场照片 2 张" in second["text"]
    # the first check message's buttons belong to the first report: dead now
    first = [m for m in h.fake.sent_messages(LEADER) if f"待核查 {number}" in (m.get("text") or "")][0]
    stale = h.fake.make_callback_query(LEADER, button_data(first, "通过"), first)
    await h.send(stale)
    assert (await answer_of(h, stale["callback_query"]["id"])).get("text") == NOT_YOURS
    assert case_of(h.engine, number).status == CaseStatus.reported_done
    await h.press(LEADER, "通过")
    await h.reply(LEADER, "核查通过")
    assert [e.action for e in events_of(h.engine, number)] == [
        "submit", "dispatch", "accept", "attach", "report_done", "verify", "attach", "report_done", "verify"]
    verifies = [e for e in events_of(h.engine, number) if e.action == "verify"]
    assert [v.to_status for v in verifies] == [CaseStatus.in_progress, CaseStatus.verified]
    assert verifies[0].reason == "照片里的灯还是灭的"


async def test_a_press_by_another_worker_or_a_replay_is_refused(harness):
    h = harness
    demo = h.extra["demo"]
    worker = owner_of(h.engine, demo.micro_id)
    other = leader_at(h.engine, demo.micro_id, GridLevel.street)
    await link(h, WORKER, worker)
    await link(h, OTHER, other)
    number = file_case(h.engine, demo.micro_id)
    await drain(h)
    card = message_with(h, WORKER, f"新派单 {number}")
    data = button_data(card, "签收")

    # another worker sends the owner's (validly signed) button from their own chat
    forged = h.fake.make_callback_query(OTHER, data, card, chat_id=WORKER)
    forged["callback_query"]["message"]["chat"] = {"id": OTHER, "type": "private", "first_name": "Other"}
    await h.send(forged)
    assert (await answer_of(h, forged["callback_query"]["id"])).get("text") == NOT_YOURS
    assert case_of(h.engine, number).status == CaseStatus.dispatched

    # a tampered button is just expired
    tampered = h.fake.make_callback_query(WORKER, data[:-1] + ("a" if data[-1] != "a" else "b"), card)
    await h.send(tampered)
    assert (await answer_of(h, tampered["callback_query"]["id"])).get("text") == "这个按钮已失效。"

    # the owner's press works once; replayed, it changes nothing
    first = await press_on(h, WORKER, card, "签收")
    await answer_of(h, first)
    replay = h.fake.make_callback_query(WORKER, data, card)
    await h.send(replay)
    assert (await answer_of(h, replay["callback_query"]["id"])).get("text") == NOT_YOURS
    assert [e.action for e in events_of(h.engine, number)].count("accept") == 1


async def test_partial_report_survives_a_restart(harness):
    h = harness
    demo = h.extra["demo"]
    await link(h, WORKER, owner_of(h.engine, demo.micro_id))
    number = file_case(h.engine, demo.micro_id)
    await drain(h)
    await accept(h, WORKER)
    await h.press(WORKER, "办结上报")
    await h.reply(WORKER, "请上报")
    await h.say(WORKER, "清理了线路")
    await h.reply(WORKER, "说明已收到")
    await h.press(WORKER, "提交上报")  # no photo yet: refused, says what is missing
    missing = await h.reply(WORKER, "还需要 1 张照片")
    assert "可以点" not in missing["text"]

    await h.restart()
    photo = h.fake.add_file(JPEG, kind="photo")
    await h.send(h.fake.make_photo_update(photo.file_id, user_id=WORKER))
    status = await h.reply(WORKER, "照片 1 张")
    assert "说明已收到" in status["text"]  # the note from before the restart
    await h.press(WORKER, "提交上报")
    await h.reply(WORKER, "已办结上报")
    report = events_of(h.engine, number)[-1]
    assert report.action == "report_done" and report.reason == "清理了线路"


async def test_tasks_are_listed_most_urgent_first(harness):
    from datetime import timedelta

    from core.platform import clock
    from tests.core.shanghai import utc

    h = harness
    demo = h.extra["demo"]
    await link(h, WORKER, owner_of(h.engine, demo.micro_id))
    clock.freeze(utc(2026, 11, 17, 9, 0))  # a Tuesday morning
    early = file_case(h.engine, demo.micro_id, description="第一件")
    clock.freeze(utc(2026, 11, 17, 17, 0))
    late = file_case(h.engine, demo.micro_id, description="第二件")
    clock.freeze(utc(2026, 11, 17, 17, 0) + timedelta(minutes=10))
    await h.command(WORKER, "tasks")
    listing = await h.reply(WORKER, "您的待办任务（2 件）")
    lines = listing["text"].splitlines()[1:]
    # 8 working hours to accept the first: 09:30 the next day; 6 h 40 min (83 %) are used: yellow
    assert lines[0].startswith("🟡") and early in lines[0] and "2026-11-18 09:30 前签收" in lines[0]
    assert lines[1].startswith("🟢") and late in lines[1]
    await h.say(WORKER, "我的任务")
    await h.reply(WORKER, "您的待办任务")
    # a task's button brings its card back, with the buttons of its status
    await h.press(WORKER, f"📋 {late}")
    again = await h.reply(WORKER, f"任务 {late}")
    assert [b["text"] for b in again["reply_markup"]["inline_keyboard"][0]] == ["签收", "退回…"]


async def test_a_department_contact_gets_the_same_flow(harness):
    h = harness
    demo = h.extra["demo"]
    await link(h, WORKER, owner_of(h.engine, demo.micro_id))
    await link(h, OTHER, "housing", department=True)  # 路灯 → 区住房和城乡建设局
    number = file_case(h.engine, demo.micro_id)
    await drain(h)
    await h.reply(WORKER, f"新派单 {number}")
    await h.reply(OTHER, f"新派单 {number}")
    await h.press(OTHER, "签收")
    await h.reply(OTHER, f"已签收 {number}")
    accept = events_of(h.engine, number)[-1]
    assert accept.action == "accept" and accept.actor == "department:housing"
    late = await press_on(h, WORKER, message_with(h, WORKER, f"新派单 {number}"), "签收")
    assert (await answer_of(h, late)).get("text") == NOT_YOURS


async def test_a_staff_chat_never_reaches_the_resident_dialog(harness):
    h = harness
    demo = h.extra["demo"]
    await link(h, WORKER, owner_of(h.engine, demo.micro_id))
    await h.say(WORKER, "楼道灯坏了")
    await h.reply(WORKER, "请在任务消息上点按钮")
    await h.command(WORKER, "start")
    greeting = await h.reply(WORKER, "本聊天已绑定为网格员")
    assert greeting["reply_markup"]["keyboard"][0] == [{"text": "我的任务"}, {"text": "帮助"}]
    await h.say(WORKER, "帮助")
    await h.reply(WORKER, "工作人员使用说明")
    with session_scope(h.engine) as session:
        assert session.exec(select(Resident).where(Resident.chat_id == str(WORKER))).first() is None


async def test_linking_by_own_contact_and_never_from_a_resident_chat(harness):
    h = harness
    demo = h.extra["demo"]
    with session_scope(h.engine) as session:
        owner = actions.responsible_worker(session, demo.micro_id)
        code, phone = owner.code, owner.phone
    # someone else's contact links nothing (the resident side explains)
    h.fake.add_user(WORKER, "Wang", language_code="zh-hans")
    await h.send(h.fake.make_contact_update(phone.lstrip("+"), user_id=WORKER, contact_user_id=WORKER + 1))
    await h.reply(WORKER, "只能绑定您本人的手机号")
    # the worker's own contact, sent as Telegram sends it (no "+")
    await h.send(h.fake.make_contact_update(phone.lstrip("+"), user_id=WORKER))
    await h.reply(WORKER, "绑定成功")
    with session_scope(h.engine) as session:
        link_row = session.get(StaffChat, str(WORKER))
        assert link_row.via == "contact" and staff.staff_of_chat(session, WORKER).code == code

    # a resident who has reported a problem cannot become a worker by any message
    h.fake.add_user(RESIDENT, "Li", language_code="zh-hans")
    await h.say(RESIDENT, "井盖丢了")
    await h.reply(RESIDENT, "问题发生在哪里")
    await h.send(h.fake.make_contact_update(phone.lstrip("+"), user_id=RESIDENT))
    assert "绑定成功" not in (await h.reply(RESIDENT))["text"]
    from tests.chat.staff import invite

    await h.command(RESIDENT, "start", f"w-{invite(h, code)}")
    await h.reply(RESIDENT, "不能再绑定为工作人员")
    with session_scope(h.engine) as session:
        assert session.get(StaffChat, str(RESIDENT)) is None


async def test_invitation_expired_reused_or_forged(harness):
    from datetime import timedelta

    from core.platform import clock
    from core.platform.clock import utcnow
    from tests.chat.staff import invite

    h = harness
    demo = h.extra["demo"]
    code = owner_of(h.engine, demo.micro_id)
    for user in (WORKER, OTHER, LEADER):
        h.fake.add_user(user, "Staff", language_code="zh-hans")

    # forged: a token signed with another key, and a tampered one
    with session_scope(h.engine) as session:
        foreign, _ = staff.issue_invite(session, staff.staff_by_code(session, code), b"not our key", actor="test")
    await h.command(WORKER, "start", f"w-{foreign}")
    await h.reply(WORKER, "这个邀请链接无效")
    good = invite(h, code)
    tampered = good[:-1] + ("a" if good[-1] != "a" else "b")
    await h.command(WORKER, "start", f"w-{tampered}")
    await h.reply(WORKER, "这个邀请链接无效")

    # expired: 7 days and a minute later
    clock.freeze(utcnow() + timedelta(days=7, minutes=1))
    await h.command(WORKER, "start", f"w-{good}")
    await h.reply(WORKER, "已过期")
    clock.freeze(None)

    # used: once by the worker, refused for anyone after
    await h.command(WORKER, "start", f"w-{good}")
    await h.reply(WORKER, "绑定成功")
    await h.command(OTHER, "start", f"w-{good}")
    await h.reply(OTHER, "已经用过了")
    with session_scope(h.engine) as session:
        assert session.get(StaffChat, str(OTHER)) is None
        assert session.get(StaffChat, str(WORKER)) is not None
    # nothing above made OTHER a resident or a worker; a plain /start greets a resident
    await h.command(OTHER, "start")
    await h.reply(OTHER, "您好")


async def test_a_hotline_recording_arrives_as_a_voice_message(harness):
    import io
    import math
    import struct

    import av

    from core.actions import FileRef
    from core.cases.models import Channel
    from speech_models.audio import write_wav

    h = harness
    demo = h.extra["demo"]
    await link(h, WORKER, owner_of(h.engine, demo.micro_id))
    data_dir = h.services.settings.data_dir
    seconds, rate = 3, 8000
    pcm = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
                   for i in range(seconds * rate))
    (data_dir / "recordings").mkdir(parents=True)
    write_wav(data_dir / "recordings" / "CA1-petition-1.wav", pcm, rate)
    number = file_case(h.engine, demo.micro_id, channel=Channel.hotline, files=(
        FileRef("recording", "recordings/CA1-petition-1.wav", "audio/wav"),))
    await drain(h)
    voice = await h.fake.wait_for("sendVoice", lambda p: int(p["chat_id"]) == WORKER)
    assert number in voice.params["caption"] and int(voice.params["duration"]) == seconds
    with av.open(io.BytesIO(voice.params["voice"].data)) as container:
        assert container.format.name == "ogg"
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "opus"
        decoded = sum(frame.samples for frame in container.decode(stream))
    assert abs(decoded / 48000 - seconds) < 0.1
    card = await h.reply(WORKER, f"新派单 {number}")
    assert "来电录音" in card["text"]


async def test_escalation_reaches_the_new_owner(harness):
    from datetime import timedelta

    from core.deadlines import sweeps
    from core.platform import clock
    from tests.core.shanghai import utc

    h = harness
    demo = h.extra["demo"]
    worker = owner_of(h.engine, demo.micro_id)
    area = leader_at(h.engine, demo.micro_id, GridLevel.area)
    await link(h, WORKER, worker)
    await link(h, LEADER, area)
    clock.freeze(utc(2026, 11, 17, 9, 0))
    number = file_case(h.engine, demo.micro_id)
    await drain(h)
    card = message_with(h, WORKER, f"新派单 {number}")
    # 8 working hours to accept (7 on the day, 7.5 a day): 09:30 the next morning; nobody did
    clock.freeze(utc(2026, 11, 18, 9, 30) + timedelta(minutes=1))
    assert sweeps.escalate_overdue(h.engine) == [number]
    await drain(h)
    escalated = await h.reply(LEADER, f"升级派单 {number}")
    assert "未在响应时限内签收" in escalated["text"]
    late = await press_on(h, WORKER, card, "签收")
    assert (await answer_of(h, late)).get("text") == NOT_YOURS
    await h.press(LEADER, "签收")
    await h.reply(LEADER, f"已签收 {number}")
    case = case_of(h.engine, number)
    assert case.status == CaseStatus.accepted and case.owner_level == GridLevel.area


async def test_a_core_refusal_is_said_in_the_workers_words(harness):
    """Core refuses a return without a reason: the worker hears why in their language,
    not "somebody else's case" and not core's English sentence."""
    import pytest

    from chat import worker, worker_store

    h = harness
    demo = h.extra["demo"]
    await link(h, WORKER, owner_of(h.engine, demo.micro_id))
    number = file_case(h.engine, demo.micro_id)
    case = case_of(h.engine, number)
    with pytest.raises(worker_store.Refused) as refused:
        worker_store.act(h.engine, WORKER, case.id, "return", staff.stamp(case.dispatched_at), text="")
    assert refused.value.why == "refused" and refused.value.error.code == "return.reason_required"
    assert worker.refusal_text("zh", refused.value) == "请填写退单原因。"
    assert worker.refusal_text("en", refused.value) == "Write why the case is returned."
    assert case_of(h.engine, number).status == CaseStatus.dispatched
