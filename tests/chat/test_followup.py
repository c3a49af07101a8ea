"""Follow-up: /status, /mine, status notifications, the survey buttons, contact linking."""

from __future__ import annotations

from sqlmodel import select

from core import actions
from core.actions import Petition
from core.cases.models import Case, CaseStatus, Channel
from core.followup.models import Survey, SurveyStatus
from core.people.models import Resident
from core.platform.db import session_scope
from tests.support.waiting import until

USER = 9201


def _file_case(engine, demo, chat_id: int, description: str = "楼下路灯不亮") -> str:
    with session_scope(engine) as session:
        resident = Resident(chat_id=str(chat_id), language="zh")
        session.add(resident)
        session.flush()
        case, _ = actions.submit_petition(session, Petition(channel=Channel.chat, description=description,
                                                            resident_id=resident.id))
        actions.dispatch(session, case, actor="operator", grid_id=demo.micro_id)
        return case.number


def _advance(engine, number: str, *steps: str) -> None:
    with session_scope(engine) as session:
        case = actions.get_case(session, number)
        for step in steps:
            if step == "accept":
                actions.accept(session, case, actor="worker")
            elif step == "start":
                actions.start(session, case, actor="worker")
            elif step == "report_done":
                actions.report_done(session, case, actor="worker", note="换了灯泡")
            elif step == "verify":
                actions.verify(session, case, actor="leader")


async def _survey_sent(h, description: str = "楼下路灯不亮") -> str:
    """A chat resident's case, handled and verified: the survey's first question is sent."""
    h.fake.add_user(USER, "Hua", language_code="zh-hans")
    number = _file_case(h.engine, h.extra["demo"], USER, description)
    _advance(h.engine, number, "accept", "start", "report_done", "verify")
    await h.run_jobs()
    return number


async def test_status_and_mine(harness):
    h = harness
    demo = h.extra["demo"]
    h.fake.add_user(USER, "Hua", language_code="zh-hans")
    number = _file_case(h.engine, demo, USER)
    await h.command(USER, "status", number)
    detail = await h.reply(USER, f"诉求 {number}")
    assert "已派遣" in detail["text"] and "预计办结" in detail["text"]
    await h.command(USER, "mine")
    listing = await h.reply(USER, "您反映的问题")
    assert number in listing["text"] and "楼下路灯不亮" in listing["text"]
    await h.say(USER, "我的诉求")  # the menu button does the same
    await h.reply(USER, "您反映的问题")
    # somebody else sees the status only
    other = 9202
    h.fake.add_user(other, "Guo", language_code="zh-hans")
    await h.command(other, "status", number)
    line = await h.reply(other, number)
    assert line["text"] == f"诉求 {number}：已派遣"
    await h.command(other, "status", "9999999999")
    await h.reply(other, "没有找到编号为 9999999999")
    await h.command(other, "status", "'; drop table case; --")
    await h.reply(other, "不像是诉求编号")
    await h.command(other, "status")
    await h.reply(other, "请在 /status 后面写诉求编号")
    await h.command(other, "mine")
    await h.reply(other, "还没有通过这里反映过问题")


async def test_status_works_in_the_middle_of_a_dialog(harness):
    h = harness
    demo = h.extra["demo"]
    h.fake.add_user(USER, "Hua", language_code="zh-hans")
    number = _file_case(h.engine, demo, USER)
    await h.say(USER, "井盖丢了")
    await h.reply(USER, "问题发生在哪里")
    await h.command(USER, "status", number)
    await h.reply(USER, "已派遣")
    await h.say(USER, "跳过")  # the dialog is still at "where"
    await h.reply(USER, "哪一类问题")


async def test_notification_on_status_change(harness):
    h = harness
    demo = h.extra["demo"]
    h.fake.add_user(USER, "Hua", language_code="zh-hans")
    number = _file_case(h.engine, demo, USER)
    await h.run_jobs()
    await h.reply(USER, f"您的诉求 {number} 有新进展：已派遣")
    _advance(h.engine, number, "accept")
    await h.run_jobs()
    await h.reply(USER, "已签收")


async def test_survey_buttons_not_satisfied_reopens_the_case(harness):
    h = harness
    demo = h.extra["demo"]
    h.fake.add_user(USER, "Hua", language_code="zh-hans")
    number = _file_case(h.engine, demo, USER)
    _advance(h.engine, number, "accept", "start", "report_done", "verify")
    await h.run_jobs()
    ask = await h.reply(USER, "问题解决了吗")
    assert number in ask["text"]
    datas = [b["callback_data"] for b in ask["reply_markup"]["inline_keyboard"][0]]
    assert all(len(d.encode()) <= 64 for d in datas)

    # a stranger pressing the resident's button is refused
    stranger = 9203
    h.fake.add_user(stranger, "Xu", language_code="zh-hans")
    forged = h.fake.make_callback_query(stranger, datas[0], chat_id=USER)
    forged["callback_query"]["message"]["chat"] = {"id": stranger, "type": "private", "first_name": "Xu"}
    await h.send(forged)
    # a tampered button is "expired"
    tampered = h.fake.make_callback_query(USER, datas[0][:-1] + ("a" if datas[0][-1] != "a" else "b"))
    await h.send(tampered)

    await h.press(USER, "没有解决")
    satisfied = await h.reply(USER, "您对这次办理满意吗")
    not_satisfied = satisfied["reply_markup"]["inline_keyboard"][0][2]["callback_data"]
    await h.press(USER, "不满意")
    await h.reply(USER, "还有什么想补充的吗")
    await h.say(USER, "灯还是不亮，晚上很危险")
    await h.reply(USER, "已重新办理")

    answers = h.fake.answered_callback_queries
    assert answers[forged["callback_query"]["id"]].get("text") == "这不是您的诉求。"
    assert answers[tampered["callback_query"]["id"]].get("text") == "这个按钮已失效。"
    with session_scope(h.engine) as session:
        survey = session.exec(select(Survey)).one()
        assert survey.status == SurveyStatus.answered
        assert (survey.solved, survey.satisfied) == ("not", "not")
        assert survey.comment == "灯还是不亮，晚上很危险"
        case = session.exec(select(Case).where(Case.number == number)).one()
        assert case.status == CaseStatus.reopened and case.reopen_count == 1

    # pressing an old button again: answered, nothing recorded twice
    again = h.fake.make_callback_query(USER, not_satisfied)
    await h.send(again)
    qid = again["callback_query"]["id"]
    await until(lambda: qid in h.fake.answered_callback_queries)
    assert h.fake.answered_callback_queries[qid].get("text") == "这次回访已经记录过了，谢谢！"


async def test_survey_satisfied_without_comment_closes(harness):
    h = harness
    number = await _survey_sent(h)
    await h.press(USER, "已解决")
    await h.press(USER, "满意")
    await h.press(USER, "不用了")
    await h.reply(USER, "感谢您的评价")
    with session_scope(h.engine) as session:
        case = session.exec(select(Case).where(Case.number == number)).one()
        assert case.status == CaseStatus.closed and case.close_reason == "survey:satisfied"


async def test_sharing_own_contact_links_the_household(harness):
    h = harness
    demo = h.extra["demo"]
    h.fake.add_user(USER, "Hua", language_code="zh-hans")
    await h.send(h.fake.make_contact_update("+86" + demo.household_phone, user_id=USER, contact_user_id=9999))
    await h.reply(USER, "只能绑定您本人的手机号")
    await h.send(h.fake.make_contact_update("86" + demo.household_phone, user_id=USER))
    linked = await h.reply(USER, "已绑定手机号")
    assert demo.household_address in linked["text"]
    with session_scope(h.engine) as session:
        resident = session.exec(select(Resident).where(Resident.chat_id == str(USER))).one()
        assert resident.household_id is not None
    # now "skip" at "where" uses the household
    await h.say(USER, "邻居家的狗天天半夜叫")
    await h.reply(USER, "问题发生在哪里")
    await h.say(USER, "跳过")
    await h.reply(USER, demo.household_address)


async def test_own_survey_answer_is_not_notified_again(harness):
    """The chat thanks the resident for the answer; the closed/reopened notification the
    status change queues would say the same again."""
    h = harness
    demo = h.extra["demo"]
    h.fake.add_user(USER, "Hua", language_code="zh-hans")
    closed = _file_case(h.engine, demo, USER, "路灯不亮")
    reopened = _file_case(h.engine, demo, USER, "井盖丢了")
    for number in (closed, reopened):
        _advance(h.engine, number, "accept", "start", "report_done", "verify")
    while await h.run_jobs():
        pass
    for number, solved, satisfied, thanks in ((closed, "已解决", "满意", "已结案"),
                                              (reopened, "没有解决", "不满意", "已重新办理")):
        await h.reply(USER, number)  # the survey's first question names the case
        ask = next(m for m in reversed(h.fake.sent_messages(USER)) if number in m["text"] and "解决了吗" in m["text"])
        data = ask["reply_markup"]["inline_keyboard"][0]
        button = next(b for b in data if b["text"] == solved)
        await h.send(h.fake.make_callback_query(USER, button["callback_data"], ask))
        await h.reply(USER, "您对这次办理满意吗")
        await h.press(USER, satisfied)
        await h.press(USER, "不用了")
        await h.reply(USER, f"诉求 {number} {thanks}")
    while await h.run_jobs():
        pass
    texts = [m["text"] for m in h.fake.sent_messages(USER)]
    assert not any(f"您的诉求 {closed} 已结案" in t for t in texts)
    assert not any(f"您的诉求 {reopened} 已重新办理" in t for t in texts)


async def test_survey_recorded_after_the_comment_wait_is_notified(harness):
    """No comment and no "no thanks" within the wait: the answers are recorded by the job,
    nothing was said in the chat, so the closed notification is sent."""
    from datetime import timedelta

    from core.platform import clock
    from core.platform.clock import utcnow

    h = harness
    demo = h.extra["demo"]
    h.fake.add_user(USER, "Hua", language_code="zh-hans")
    number = _file_case(h.engine, demo, USER)
    _advance(h.engine, number, "accept", "start", "report_done", "verify")
    await h.run_jobs()
    await h.press(USER, "已解决")
    await h.press(USER, "满意")
    await h.reply(USER, "还有什么想补充的吗")
    clock.freeze(utcnow() + timedelta(minutes=16))
    while await h.run_jobs():
        pass
    await h.reply(USER, f"您的诉求 {number} 已结案")
    with session_scope(h.engine) as session:
        case = session.exec(select(Case).where(Case.number == number)).one()
        assert case.status == CaseStatus.closed
    assert "survey_comment" not in h.bot.application.chat_data.get(USER, {})


async def test_rules_decide_silent_statuses_and_the_comment_wait(harness, monkeypatch):
    """rules.toml [chat]: which [notify] statuses the bot leaves to the survey's first
    question, and how long it waits for a survey comment; not the channel's code."""
    import copy
    from datetime import timedelta

    from chat import followup
    from core.platform.clock import utcnow
    from core.platform.models import Job
    from core.platform.rules import load_rules

    h = harness
    demo = h.extra["demo"]
    h.fake.add_user(USER, "Hua", language_code="zh-hans")
    quiet = _file_case(h.engine, demo, USER, "路灯不亮")
    _advance(h.engine, quiet, "accept", "start", "report_done", "verify")
    while await h.run_jobs():
        pass
    await h.reply(USER, "问题解决了吗")
    assert not any("已核查待回访" in m["text"] for m in h.fake.sent_messages(USER))  # the packaged rules

    rules = copy.deepcopy(load_rules())
    rules["chat"]["notify_said_by_survey"] = []
    rules["chat"]["survey_comment_wait_minutes"] = 40
    monkeypatch.setattr(followup, "load_rules", lambda: rules)
    told = _file_case(h.engine, demo, USER, "井盖丢了")
    _advance(h.engine, told, "accept", "start", "report_done", "verify")
    while await h.run_jobs():
        pass
    await h.reply(USER, f"您的诉求 {told} 有新进展：已核查待回访")
    ask = next(m for m in reversed(h.fake.sent_messages(USER)) if told in m["text"] and "解决了吗" in m["text"])
    button = next(b for b in ask["reply_markup"]["inline_keyboard"][0] if b["text"] == "已解决")
    await h.send(h.fake.make_callback_query(USER, button["callback_data"], ask))
    before = utcnow()
    await h.press(USER, "满意")
    await h.reply(USER, "还有什么想补充的吗")
    after = utcnow()
    with session_scope(h.engine) as session:
        job = session.exec(select(Job).where(Job.kind == "chat_survey_finish")).one()
    wait = timedelta(minutes=40)
    assert before + wait <= job.run_at <= after + wait


async def test_voice_comment_joins_the_case_with_the_answers(harness):
    """A voice note as the survey's comment: kept on disk, attached to the case in the
    transaction that records the answers (an ``attach`` event), its words in the comment."""
    from core.cases.models import Attachment, CaseEvent
    from speech_models.pool import SpeechPool
    from tests.chat.voice import voice_note
    from tests.support.fake_transcriber import FakeTranscriber

    h = harness
    note_bytes = voice_note("deng1 hai2 shi4 bu4 liang4")
    fake_asr = FakeTranscriber()
    fake_asr.script(note_bytes, "灯 还是 不 亮")
    h.services.speech = SpeechPool(fake_asr, workers=1)
    number = await _survey_sent(h)
    await h.press(USER, "没有解决")
    await h.press(USER, "不满意")
    await h.reply(USER, "还有什么想补充的吗")
    note = h.fake.add_file(note_bytes, kind="voice", mime_type="audio/ogg")
    await h.send(h.fake.make_voice_update(note.file_id, duration=2, user_id=USER))
    await h.reply(USER, "已重新办理")
    with session_scope(h.engine) as session:
        case = session.exec(select(Case).where(Case.number == number)).one()
        survey = session.exec(select(Survey).where(Survey.case_id == case.id)).one()
        attachment = session.exec(select(Attachment).where(Attachment.kind == "voice")).one()
        attach_event = session.exec(select(CaseEvent).where(CaseEvent.case_id == case.id,
                                                            CaseEvent.action == "attach")).one()
    assert attachment.case_id == case.id
    assert (h.services.settings.data_dir / attachment.path).read_bytes() == note_bytes
    assert attach_event.data["attachments"][0]["path"] == attachment.path
    assert survey.comment.startswith("灯还是不亮") and attachment.path in survey.comment


async def _two_callers_verified(h) -> tuple[int, str, str]:
    """A second chat resident's petition merged into the first one's, the case handled and
    verified, and the jobs run: both callers' progress notices, then both surveys."""
    other = USER + 1
    h.fake.add_user(USER, "Hua", language_code="zh-hans")
    h.fake.add_user(other, "Lin", language_code="zh-hans")
    number = _file_case(h.engine, h.extra["demo"], USER)
    duplicate = _file_case(h.engine, h.extra["demo"], other, "路灯坏了好几天")
    with session_scope(h.engine) as session:
        actions.merge(session, actions.get_case(session, duplicate), actions.get_case(session, number),
                      actor="console:op")
    _advance(h.engine, number, "accept", "start", "report_done", "verify")
    while await h.run_jobs():
        pass
    return other, number, duplicate


async def test_a_merged_duplicates_caller_gets_the_survey_in_their_chat(harness):
    """Issue 26: a second chat resident's petition was merged into the first one's; when the
    case is verified, both get the survey buttons, each about the case they reported. The
    second's answer is recorded (the case waits for its own caller: no "closed" said to
    them); the first's closes the case."""
    h = harness
    other, number, duplicate = await _two_callers_verified(h)
    await h.reply(other, f"您反映的诉求 {duplicate}（路灯坏了好几天）已处理完毕")
    await h.press(other, "已解决")
    await h.press(other, "基本满意")
    await h.press(other, "不用了")
    assert "感谢您的评价！您的意见已记录。" in (await h.reply(other, "感谢您的评价"))["text"]
    with session_scope(h.engine) as session:
        case = actions.get_case(session, number)
        assert case.status == CaseStatus.verified and case.surveys_answered == 1
        theirs = session.exec(select(Survey).where(Survey.caller_case_id == actions.get_case(session, duplicate).id)
                              ).one()
        assert (theirs.case_id, theirs.status, theirs.satisfied) == (case.id, SurveyStatus.answered, "basically")
    await h.reply(USER, f"您反映的诉求 {number}")
    await h.press(USER, "已解决")
    await h.press(USER, "满意")
    await h.press(USER, "不用了")
    assert "已结案" in (await h.reply(USER, "感谢您的评价"))["text"]
    with session_scope(h.engine) as session:
        case = actions.get_case(session, number)
        assert case.status == CaseStatus.closed and case.surveys_answered == 2


async def test_a_merged_duplicates_callers_not_satisfied_reopens_and_the_first_caller_hears_it(harness):
    """Issue 26: the second caller's 不满意 reopens the case they share. They are thanked for
    it once (no second "reopened" notice for their own answer); the first caller, whose
    survey has not been answered, is told the case is being handled again."""
    h = harness
    other, number, duplicate = await _two_callers_verified(h)
    await h.press(other, "没有解决")
    await h.press(other, "不满意")
    await h.press(other, "不用了")
    await h.reply(other, "感谢您的反馈")
    with session_scope(h.engine) as session:
        assert actions.get_case(session, number).status == CaseStatus.reopened
    while await h.run_jobs():
        pass
    told = await h.reply(USER, "已重新办理")
    assert told["text"] == f"您的诉求 {number} 已重新办理，我们会尽快处理。"
    texts = [m["text"] for m in h.fake.sent_messages(other)]
    assert sum("已重新办理" in t for t in texts) == 1, texts
