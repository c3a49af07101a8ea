"""The follow-up call end to end: the job places the call with the real twilio client at the
fake REST server, which plays it against the follow-up webhooks (signed), keys pressed and
a comment streamed over Media Streams. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import select

from core.cases.models import Attachment, CaseStatus
from core.followup.models import SurveyStatus
from core.platform import clock
from core.platform.db import session_scope
from tests.support.fake_twilio import Callee

from .conftest import KNOWN_PHONE, silence, tone
from .survey_rig import MORNING, RESIDENT_E164, local


async def test_answered_and_satisfied_closes_the_case(srig, fake, fake_speech):
    case = srig.verified_case()
    survey = srig.survey(case.id)
    assert survey.channel == "phone" and survey.status == SurveyStatus.pending
    fake_speech.say("师傅 来 得 很 快 谢谢")
    fake.callee(RESIDENT_E164, Callee("human", digits=["1", "1"], speech=[tone(2) + silence(0.3)]))
    assert await srig.run_calls() == 1
    (call,) = fake.created_calls
    assert call["To"] == RESIDENT_E164 and call["From"] == fake.phone_number
    assert call["Timeout"] == "30" and call["MachineDetection"] == "Enable"
    row = await srig.call_over(survey.id, 1)
    assert row.outcome == "answered" and row.call_sid == fake.last_call["sid"]
    heard = fake.played[row.call_sid].heard
    # who calls and about which petition: the date and the category, never the description
    assert "您好，这里是幸福社区网格服务热线。" in heard
    assert "您在11月17日反映的路灯问题，我们来做个回访。" in heard
    assert not any("小区门口" in h for h in heard)
    assert heard[-1] == "谢谢您的评价。再见。"
    case = srig.case(case.id)
    assert case.status == CaseStatus.closed and case.close_reason == "survey:satisfied"
    survey = srig.survey(case.id)
    assert (survey.status, survey.solved, survey.satisfied, survey.attempts) == (SurveyStatus.answered, "solved",
                                                                                  "satisfied", 1)
    assert survey.comment == "师傅来得很快谢谢"
    actions_ = [e.action for e in srig.events(case.id)]
    assert actions_[actions_.index("verify"):] == ["verify", "survey_attempt", "survey_answer", "survey_answer",
                                                   "close", "attach", "survey_comment", "survey_call"]
    attempt = srig.events(case.id, "survey_attempt")[0]
    assert attempt.data["call_sid"] == row.call_sid and attempt.reason == "placed"
    with session_scope(srig.engine) as s:
        (audio,) = s.exec(select(Attachment).where(Attachment.case_id == case.id,
                                                   Attachment.kind == "survey_comment")).all()
    assert (srig.settings.data_dir / audio.path).stat().st_size > 2 * 8000 * 2


async def test_busy_then_answered_on_the_second_attempt(srig, fake):
    case = srig.verified_case()
    survey = srig.survey(case.id)
    fake.callee(RESIDENT_E164, Callee("busy"), Callee("human", digits=["2", "2"]))
    assert await srig.run_calls() == 1
    first = await srig.call_over(survey.id, 1)
    assert first.outcome == "busy"
    (retry,) = srig.queued()
    assert retry.payload["attempt"] == 2 and retry.run_at == MORNING + timedelta(minutes=120)
    assert await srig.run_calls() == 0  # not due before the wait
    clock.freeze(MORNING + timedelta(minutes=121))
    await srig.run_calls()
    assert len(fake.created_calls) == 2
    second = await srig.call_over(survey.id, 2)
    assert second.outcome == "answered"
    case = srig.case(case.id)
    assert case.status == CaseStatus.closed and case.close_reason == "survey:basically"
    assert [e.reason for e in srig.events(case.id, "survey_call")] == ["busy", "answered"]
    assert srig.survey(case.id).attempts == 2


async def test_no_answer_three_times_is_unreachable(srig, fake):
    case = srig.verified_case()
    survey = srig.survey(case.id)
    fake.callee(RESIDENT_E164, *[Callee("no-answer")] * 3)
    for attempt in (1, 2, 3):
        await srig.run_calls()
        assert len(fake.created_calls) == attempt
        assert (await srig.call_over(survey.id, attempt)).outcome == "no_answer"
        clock.freeze(clock.utcnow() + timedelta(hours=2, minutes=1))
    assert srig.queued() == []
    case = srig.case(case.id)
    assert case.status == CaseStatus.closed and case.close_reason == "not_evaluated"
    assert srig.survey(case.id).status == SurveyStatus.unreachable
    assert len(fake.calls_to(RESIDENT_E164)) == 3


async def test_answering_machine_is_no_answer_and_hears_nothing(srig, fake):
    case = srig.verified_case()
    survey = srig.survey(case.id)
    fake.callee(RESIDENT_E164, Callee("machine"))
    await srig.run_calls()
    row = await srig.call_over(survey.id, 1)
    assert row.outcome == "machine" and row.answered_by == "machine_start"
    assert fake.played[row.call_sid].heard == []  # no message left
    assert srig.case(case.id).status == CaseStatus.verified
    assert srig.queued()[0].payload["attempt"] == 2


async def test_wrong_person_ends_politely_and_goes_to_the_manual_list(srig, fake):
    case = srig.verified_case()
    survey = srig.survey(case.id)
    fake.callee(RESIDENT_E164, Callee("human", digits=["9"]))
    await srig.run_calls()
    row = await srig.call_over(survey.id, 1)
    assert row.outcome == "wrong_person"
    assert fake.played[row.call_sid].heard[-1] == "对不起，打扰您了。再见。"
    survey = srig.survey(case.id)
    assert survey.channel == "manual" and survey.status == SurveyStatus.pending  # rules: wrong_person = "manual"
    assert srig.queued() == []
    assert srig.events(case.id, "survey_manual")[0].reason.startswith("wrong person")


async def test_no_key_repeats_once_then_moves_on_without_the_answer(srig, fake):
    """Answers are heard by voice here (a recogniser is loaded): the first ask wants words,
    the second, after silence or a wrong key, names the keys as before."""
    case = srig.verified_case()
    survey = srig.survey(case.id)
    # Q1: no key, asked again, a wrong key: on without it. Q2: a wrong key, again, no key.
    fake.callee(RESIDENT_E164, Callee("human", digits=[None, "7", "8", None]))
    await srig.run_calls()
    row = await srig.call_over(survey.id, 1)
    heard = fake.played[row.call_sid].heard
    assert heard.count("问题解决了吗？请您直接说：解决了、部分解决，还是没解决。") == 1
    assert heard.count("问题解决了吗？解决了，请按1。部分解决，请按2。没有解决，请按3。") == 1
    assert heard.count("您对办理结果满意吗？请您直接说：满意、基本满意，还是不满意。") == 1
    assert heard.count("您对办理结果满意吗？满意，请按1。基本满意，请按2。不满意，请按3。") == 1
    assert "没有听到您的回答。您也可以按键。" in heard and "您按的键不对。" in heard
    assert heard[-1] == "谢谢您接听。我们以后再联系您。再见。"
    answers = srig.events(case.id, "survey_answer")
    assert [(e.data["question"], e.data["answer"]) for e in answers] == [("solved", None), ("satisfied", None)]
    assert row.outcome == "no_response"  # counts as not reached: tried again later
    assert srig.queued()[0].payload["attempt"] == 2


async def test_without_a_speech_model_the_keys_alone_as_before(engine, tmp_path, fake, fast_calls):
    """No recogniser in the process: no answer turn is opened, each question names its keys
    from the first ask, and silence is "没有听到您按键" as it always was."""
    from .survey_rig import start_survey_rig

    clock.freeze(MORNING)
    rig = await start_survey_rig(engine, tmp_path, None, fake)
    try:
        case = rig.verified_case()
        survey = rig.survey(case.id)
        fake.callee(RESIDENT_E164, Callee("human", digits=[None, "7", "8", None]))
        await rig.run_calls()
        row = await rig.call_over(survey.id, 1)
        heard = fake.played[row.call_sid].heard
        assert heard.count("问题解决了吗？解决了，请按1。部分解决，请按2。没有解决，请按3。") == 2
        assert heard.count("您对办理结果满意吗？满意，请按1。基本满意，请按2。不满意，请按3。") == 2
        assert "没有听到您按键。" in heard and "您按的键不对。" in heard
        assert not any("直接说" in h for h in heard)
        assert not [url for url, _ in fake.played[row.call_sid].requests if "seg=answer" in url]
        answers = rig.events(case.id, "survey_answer")
        assert [(e.data["question"], e.data["answer"]) for e in answers] == [("solved", None), ("satisfied", None)]
        assert row.outcome == "no_response"
    finally:
        await rig.stop()


async def test_not_satisfied_twice_reopens_then_escalates(srig, fake):
    case = srig.verified_case()
    fake.callee(RESIDENT_E164, Callee("human", digits=["3", "3"]), Callee("human", digits=["3", "3"]))
    await srig.run_calls()
    await srig.call_over(srig.survey(case.id).id, 1)
    case = srig.case(case.id)
    assert case.status == CaseStatus.reopened and case.reopen_count == 1
    # handled again and verified again: a new follow-up, answered the same
    from core import actions

    with session_scope(srig.engine) as s:
        c = actions.get_case(s, case.id)
        actions.dispatch(s, c, actor="test", grid_id=srig.district["micro"])
        actions.accept(s, c, actor="test")
        actions.report_done(s, c, actor="test", note="又修了")
        actions.verify(s, c, actor="test")
    second = srig.survey(case.id)
    await srig.run_calls()
    await srig.call_over(second.id, 1)
    case = srig.case(case.id)
    assert case.reopen_count == 2
    assert case.status == CaseStatus.dispatched and case.owner_level.value == "area"  # one level up
    assert [e.action for e in srig.events(case.id, "reopen", "dispatch")][-2:] == ["reopen", "dispatch"]


async def test_operator_within_hours(srig, fake):
    case = srig.verified_case()
    survey = srig.survey(case.id)
    fake.callee(RESIDENT_E164, Callee("human", digits=["0"], operator_answers=True))
    await srig.run_calls()
    row = await srig.call_over(survey.id, 1)
    heard = fake.played[row.call_sid].heard
    assert "正在为您转接人工服务，请稍候。" in heard and "[dial +8657188880000]" in heard
    assert row.outcome == "operator"
    assert srig.survey(case.id).channel == "manual"  # the operator records the answers


async def test_operator_outside_hours_asks_the_question_again(srig, fake):
    clock.freeze(local(2026, 11, 17, 19, 0))  # calling hours, not the operator's
    case = srig.verified_case()
    survey = srig.survey(case.id)
    fake.callee(RESIDENT_E164, Callee("human", digits=["0", "1", "2"]))
    await srig.run_calls()
    row = await srig.call_over(survey.id, 1)
    heard = fake.played[row.call_sid].heard
    assert "现在不是人工服务时间。" in heard
    assert row.outcome == "answered" and srig.case(case.id).close_reason == "survey:basically"


async def test_sms_phone_with_no_answer_records_nothing_twice_on_duplicate_callbacks(srig, fake):
    """Duplicate and out-of-order status callbacks are harmless."""
    case = srig.verified_case()
    survey = srig.survey(case.id)
    fake.callee(RESIDENT_E164, Callee("no-answer"))
    await srig.run_calls()
    row = await srig.call_over(survey.id, 1)
    for status in ("no-answer", "ringing", "completed", "no-answer"):
        assert await fake.deliver_status_callback(row.call_sid, status) == 200
    assert [e.reason for e in srig.events(case.id, "survey_call")] == ["no_answer"]
    assert len(srig.queued()) == 1 and srig.survey(case.id).attempts == 1
    assert srig.attempts(survey.id)[0].outcome == "no_answer"


def test_resident_phone_is_the_rig_resident():
    assert RESIDENT_E164 == "+8613800000001" and KNOWN_PHONE.endswith("13800000001")


async def test_a_comment_not_recognised_in_time_is_transcribed_afterwards(engine, tmp_path, fake, fast_calls):
    """No speech model in the server: the comment's audio is kept with the case at once, and
    a speech job process (`gridline jobs --speech`) gives the survey its words later."""
    from ivr.database import run_db
    from ivr.stream import RecognitionSlots
    from ivr.transcription import Transcriptions, speech_runners
    from speech_models.pool import SpeechPool
    from tests.support.fake_transcriber import FakeTranscriber

    from .survey_rig import start_survey_rig

    clock.freeze(MORNING)
    rig = await start_survey_rig(engine, tmp_path, None, fake)
    try:
        case = rig.verified_case()
        survey = rig.survey(case.id)
        fake.callee(RESIDENT_E164, Callee("human", digits=["1", "2"], speech=[tone(1.5) + silence(0.2)]))
        await rig.run_calls()
        assert (await rig.call_over(survey.id, 1)).outcome == "answered"
        survey = rig.survey(case.id)
        assert survey.status == SurveyStatus.answered and survey.comment is None
        (job,) = rig.queued("transcribe_survey_comment")
        assert "transcribe_survey_comment" in rig.jobs.paused  # no model here
        with session_scope(engine) as s:
            assert len(s.exec(select(Attachment).where(Attachment.kind == "survey_comment")).all()) == 1
        speech = FakeTranscriber(confidence=0.9)
        speech.say("态度 很 好")
        pool = SpeechPool(speech, workers=1)
        try:
            handler = Transcriptions(engine, pool, data_dir=tmp_path, db=run_db, slots=RecognitionSlots(1))
            (runner,) = speech_runners(engine, handler, 1)
            assert await runner.run_once() == 1
        finally:
            await pool.close()
        assert rig.survey(case.id).comment == "态度很好"
        assert [e.actor for e in rig.events(case.id, "survey_comment")] == ["resident:phone", "survey:speech"]
    finally:
        await rig.stop()
