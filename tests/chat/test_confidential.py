"""Confidential petitions (保密处理) in the Telegram bot, end to end (the real PTB application
against the fake Bot API, on SQLite and PostgreSQL): the confirmation offers 🔒 保密提交 and
the typed word 保密; either files a confidential case. A grid worker's dispatch message of a
confidential case carries no name, phone or voice."""

from __future__ import annotations

import math
import re
import struct

from sqlmodel import select

from core.actions import FileRef
from core.cases.models import Channel
from core.people.models import AuditEntry
from core.platform.db import session_scope
from tests.chat.staff import case_of, drain, events_of, file_case, link, owner_of

RESIDENT, WORKER = 7301, 7302


def _card_views(engine, number: str) -> list[AuditEntry]:
    with session_scope(engine) as session:
        return list(session.exec(select(AuditEntry).where(AuditEntry.action == "case.view",
                                                          AuditEntry.target_id == number)).all())


def _number(text: str) -> str:
    return re.search(r"\d{10,}", text).group(0)


async def _to_the_confirmation(h, user: int) -> dict:
    h.fake.add_user(user, "Li", language_code="zh-hans")
    await h.say(user, "楼上邻居天天半夜装修，吵得睡不着")
    await h.reply(user, "问题发生在哪里")
    await h.say(user, "跳过")
    await h.reply(user, "工作人员核实")
    category = await h.reply(user, "哪一类问题")
    first = category["reply_markup"]["inline_keyboard"][0][0]["text"]
    await h.press(user, first)
    return await h.reply(user, "请确认您的诉求")


async def test_the_confirmation_offers_a_confidential_submit_and_it_files_a_confidential_case(harness):
    h = harness
    summary = await _to_the_confirmation(h, RESIDENT)
    labels = [b["text"] for row in summary["reply_markup"]["inline_keyboard"] for b in row]
    assert labels == ["✅ 确认提交", "🔒 保密提交", "取消"]
    assert "保密" in summary["text"]  # it says what the button does, and that 保密 may be typed
    await h.press(RESIDENT, "🔒 保密提交")
    filed = await h.reply(RESIDENT, "诉求已受理")
    assert "已按保密处理" in filed["text"]
    number = _number(filed["text"])
    assert case_of(h.engine, number).confidential is True
    (submit,) = [e for e in events_of(h.engine, number) if e.action == "submit"]
    assert submit.data["confidential"] is True


async def test_typing_baomi_at_the_confirmation_files_it_confidential_and_other_words_ask_for_the_buttons(harness):
    h = harness
    await _to_the_confirmation(h, RESIDENT + 10)
    await h.say(RESIDENT + 10, "好的吧")
    again = await h.reply(RESIDENT + 10, "请点上面消息里的按钮")
    assert "🔒 保密提交" in [b["text"] for row in again["reply_markup"]["inline_keyboard"] for b in row]
    await h.say(RESIDENT + 10, "保密！")
    number = _number((await h.reply(RESIDENT + 10, "诉求已受理"))["text"])
    assert case_of(h.engine, number).confidential is True


async def test_the_plain_submit_still_files_an_ordinary_case(harness):
    h = harness
    await _to_the_confirmation(h, RESIDENT + 20)
    await h.press(RESIDENT + 20, "✅ 确认提交")
    filed = await h.reply(RESIDENT + 20, "诉求已受理")
    assert "保密" not in filed["text"]
    assert case_of(h.engine, _number(filed["text"])).confidential is False


def _recording(h) -> FileRef:
    from speech_models.audio import write_wav

    rate = 8000
    pcm = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate))) for i in range(2 * rate))
    (h.services.settings.data_dir / "recordings").mkdir(parents=True, exist_ok=True)
    write_wav(h.services.settings.data_dir / "recordings" / "CA-secret.wav", pcm, rate)
    return FileRef("recording", "recordings/CA-secret.wav", "audio/wav")


async def test_the_dispatch_message_of_a_confidential_case_has_no_name_phone_or_voice(harness):
    h = harness
    demo = h.extra["demo"]
    await link(h, WORKER, owner_of(h.engine, demo.micro_id))
    said = "我叫王秀兰，电话13912345678，住9幢302室，楼下路灯坏了三天"
    number = file_case(h.engine, demo.micro_id, channel=Channel.hotline, description=said, confidential=True,
                       contact_phone="+8613912345678", files=(_recording(h),))
    await drain(h)
    card = await h.reply(WORKER, f"新派单 {number}")
    text = card["text"]
    assert "保密件" in text and "路灯坏了" in text
    for secret in ("王秀兰", "秀兰", "13912345678", "5678", "302", "来电录音"):
        assert secret not in text, secret
    assert [c for c in h.fake.calls("sendVoice") if int(c.params["chat_id"]) == WORKER] == []
    (seen,) = _card_views(h.engine, number)  # the card sent is a view of the case, on the record
    assert seen.actor.startswith("telegram:worker:") and seen.detail["via"] == "staff_chat"
    assert seen.detail["confidential"] is True and seen.detail["card"] == "dispatch"


async def test_an_ordinary_case_still_sends_its_recording(harness):
    """The same rig without the mark: the recording goes out (so the test above can fail)."""
    h = harness
    demo = h.extra["demo"]
    await link(h, WORKER, owner_of(h.engine, demo.micro_id))
    number = file_case(h.engine, demo.micro_id, channel=Channel.hotline, description="路灯坏了",
                       files=(_recording(h),))
    await drain(h)
    await h.fake.wait_for("sendVoice", lambda p: int(p["chat_id"]) == WORKER)
    card = await h.reply(WORKER, f"新派单 {number}")
    assert "保密件" not in card["text"]
    assert _card_views(h.engine, number) == []


async def test_the_task_list_masks_a_confidential_case_and_not_an_ordinary_one(harness):
    h = harness
    demo = h.extra["demo"]
    await link(h, WORKER, owner_of(h.engine, demo.micro_id))
    secret = file_case(h.engine, demo.micro_id, description="我叫王秀兰13912345678投诉", confidential=True)
    plain = file_case(h.engine, demo.micro_id, description="李桂英13812345678投诉")
    await h.command(WORKER, "tasks")
    listing = (await h.reply(WORKER, "您的待办任务（2 件）"))["text"]
    (secret_line,) = [line for line in listing.splitlines() if secret in line]
    (plain_line,) = [line for line in listing.splitlines() if plain in line]
    assert "王秀兰" not in secret_line and "13912345678" not in secret_line and "投诉" in secret_line
    assert "李桂英13812345678" in plain_line  # a worker sees an ordinary case's words as they are
