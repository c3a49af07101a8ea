"""The intake dialog end to end: the real PTB application, HTTP to the fake Bot API."""

from __future__ import annotations

from sqlmodel import select

from core.cases.models import Attachment, Case, CaseStatus, Channel
from core.people.models import AuditEntry, Resident
from core.platform.db import session_scope

USER = 5213748891


def _case(engine, number: str) -> Case:
    with session_scope(engine) as session:
        return session.exec(select(Case).where(Case.number == number)).one()


def _number(text: str) -> str:
    import re

    return re.search(r"\d{10,}", text).group(0)


async def test_full_intake_by_text_and_location(any_mode):
    h = any_mode
    demo = h.extra["demo"]
    h.fake.add_user(USER, "Wei", "Li", language_code="zh-hans")
    await h.command(USER, "start")
    greeting = await h.reply(USER, "您好")
    keyboard = greeting["reply_markup"]["keyboard"]
    assert keyboard[0][0]["text"] == "我要反映"
    assert keyboard[1][0]["request_contact"] is True

    await h.say(USER, "我要反映")
    await h.reply(USER, "遇到了什么问题")
    await h.say(USER, "小区门口的路灯坏了，晚上一片漆黑")
    where = await h.reply(USER, "问题发生在哪里")
    assert where["reply_markup"]["keyboard"][0][0]["request_location"] is True

    lat, lon = demo.point
    await h.send(h.fake.make_location_update(lat, lon, user_id=USER))
    await h.reply(USER, demo.micro_name)
    category = await h.reply(USER, "哪一类问题")
    labels = [row[0]["text"] for row in category["reply_markup"]["inline_keyboard"]]
    assert labels[0] == "路灯故障"  # suggested from the text
    await h.press(USER, "路灯故障")
    summary = await h.reply(USER, "请确认您的诉求")
    assert "路灯坏了" in summary["text"] and demo.micro_name in summary["text"]
    await h.press(USER, "✅ 确认提交")
    filed = await h.reply(USER, "诉求已受理")
    number = _number(filed["text"])

    case = _case(h.engine, number)
    assert case.channel == Channel.chat
    assert case.description == "小区门口的路灯坏了，晚上一片漆黑"
    assert case.grid_id == demo.micro_id
    assert case.status == CaseStatus.dispatched
    assert (case.latitude, case.longitude) == (lat, lon)
    with session_scope(h.engine) as session:
        resident = session.get(Resident, case.resident_id)
        assert resident.chat_id == str(USER) and resident.language == "zh"
    # every callback query was answered
    assert len(h.fake.answered_callback_queries) == 2


async def test_typed_address_with_a_homophone_lands_right(harness):
    h = harness
    demo = h.extra["demo"]
    user = 7001
    h.fake.add_user(user, "Mei", language_code="zh-hans")
    await h.say(user, "楼道里有人飞线充电，很危险")  # free text starts the dialog
    await h.reply(user, "问题发生在哪里")
    # The building's estate name with its first character swapped for a homophone.
    typed = _homophone(demo.building)
    assert typed != demo.building
    await h.say(user, typed)
    ask = await h.reply(user, "您说的是")
    assert demo.building in ask["text"]
    await h.press(user, "是的")
    await h.reply(user, "哪一类问题")
    await h.press(user, "飞线充电")
    await h.reply(user, "请确认")
    await h.press(user, "✅ 确认提交")
    number = _number((await h.reply(user, "诉求已受理"))["text"])
    case = _case(h.engine, number)
    assert case.grid_id == demo.building_grid
    assert demo.building in case.address_text


def _homophone(name: str) -> str:
    swaps = {"洋": "羊", "罗": "萝", "布": "步", "坊": "芳", "新": "心", "村": "存", "清": "青", "溪": "西"}
    for i, ch in enumerate(name):
        if ch in swaps:
            return name[:i] + swaps[ch] + name[i + 1:]
    return name


async def test_photo_with_caption_is_stored_and_linked(harness):
    h = harness
    user = 7002
    h.fake.add_user(user, "Ming", language_code="zh-hans")
    jpeg = b"\xff\xd8\xff\xe0" + b"gridline-photo" * 200 + b"\xff\xd9"
    photo = h.fake.add_file(jpeg, kind="photo", mime_type="image/jpeg")
    await h.send(h.fake.make_photo_update(photo.file_id, caption="垃圾堆在路边好几天没人清运", user_id=user))
    await h.reply(user, "问题发生在哪里")
    await h.say(user, "跳过")
    await h.reply(user, "工作人员核实")
    await h.press(user, "垃圾清运")
    summary = await h.reply(user, "请确认")
    assert "照片：1 张" in summary["text"]
    await h.press(user, "✅ 确认提交")
    number = _number((await h.reply(user, "诉求已受理"))["text"])
    case = _case(h.engine, number)
    with session_scope(h.engine) as session:
        att = session.exec(select(Attachment).where(Attachment.case_id == case.id)).one()
        assert att.kind == "photo" and att.size == len(jpeg)
    assert att.path.startswith("chat/")  # relative to the data directory
    assert (h.services.settings.data_dir / att.path).read_bytes() == jpeg


async def test_english_user_gets_english(harness):
    h = harness
    user = 7003
    h.fake.add_user(user, "Ann", language_code="en-GB")
    await h.command(user, "start")
    greeting = await h.reply(user, "Hello, Ann")
    assert greeting["reply_markup"]["keyboard"][0][0]["text"] == "Report a problem"
    await h.say(user, "Report a problem")
    await h.reply(user, "What is the problem")
    await h.command(user, "cancel")
    await h.reply(user, "Cancelled")


async def test_a_new_chat_resident_and_a_change_of_language_are_audited(harness):
    h = harness
    user = 7004
    h.fake.add_user(user, "Ann", language_code="en-GB")
    await h.say(user, "Report a problem")
    await h.reply(user, "What is the problem")
    await h.command(user, "cancel")
    await h.reply(user, "Cancelled")
    h.fake.add_user(user, "Ann", language_code="zh-hans")  # her phone now speaks Chinese
    await h.say(user, "我要反映")
    await h.reply(user, "遇到了什么问题")
    with session_scope(h.engine) as session:
        resident = session.exec(select(Resident).where(Resident.chat_id == str(user))).one()
        rows = session.exec(select(AuditEntry).where(AuditEntry.target_type == "resident",
                                                     AuditEntry.target_id == str(resident.id))
                            .order_by(AuditEntry.id)).all()
    assert resident.language == "zh"
    assert [(r.actor, r.action, r.detail) for r in rows] == [
        (f"resident:chat:{user}", "resident.create", {"chat_id": str(user), "language": "en"}),
        (f"resident:chat:{user}", "resident.set_language", {"language": "zh", "before": "en"}),
    ]


async def test_location_first_starts_a_report_there(harness):
    h = harness
    demo = h.extra["demo"]
    user = 7004
    h.fake.add_user(user, "Lan", language_code="zh-hans")
    lat, lon = demo.point
    await h.send(h.fake.make_location_update(lat, lon, user_id=user))
    ask = await h.reply(user, "这里遇到了什么问题")
    assert demo.micro_name in ask["text"]
    await h.say(user, "这里的垃圾桶满了好几天")
    await h.reply(user, "哪一类问题")  # "where" is not asked again
    await h.press(user, "其他 / 不确定")
    summary = await h.reply(user, "请确认")
    assert demo.micro_name in summary["text"]
    await h.press(user, "✅ 确认提交")
    number = _number((await h.reply(user, "诉求已受理"))["text"])
    case = _case(h.engine, number)
    assert (case.latitude, case.longitude) == (lat, lon) and case.grid_id == demo.micro_id
    assert not any("问题发生在哪里" in m["text"] for m in h.fake.sent_messages(user))
