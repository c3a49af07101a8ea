"""The follow-up call answered by voice, end to end: the job places the call with the real
twilio client at the fake REST server, which plays it against the signed webhooks; the
callee says the answers on the Media Streams socket (real audio frames) and the test
recogniser maps each answer turn's audio to known Mandarin words, as a recogniser built
with the question's phrase list would say them. SQLite and PostgreSQL."""

from __future__ import annotations

from sqlmodel import select

from core.cases.models import CallSession, CaseStatus
from core.followup.models import SurveyStatus
from core.platform import clock
from core.platform.db import session_scope
from core.platform.storage import resolve
from ivr.simulator import Turn
from ivr.survey_twiml import SurveyFlowConfig
from tests.support.fake_transcriber import FakeTranscriber
from tests.support.fake_twilio import Callee

from .conftest import silence, tone
from .survey_rig import MORNING, RESIDENT_E164, start_survey_rig

OTHER_PHONE = "+8613900000002"
ASK_SOLVED_BY_VOICE = "问题解决了吗？请您直接说：解决了、部分解决，还是没解决。"
ASK_SOLVED_BY_KEYS = "问题解决了吗？解决了，请按1。部分解决，请按2。没有解决，请按3。"
ASK_SATISFIED_BY_VOICE = "您对办理结果满意吗？请您直接说：满意、基本满意，还是不满意。"
ASK_SATISFIED_BY_KEYS = "您对办理结果满意吗？满意，请按1。基本满意，请按2。不满意，请按3。"


def said(speech: FakeTranscriber, audio: bytes, words: str) -> Turn:
    """The callee says ``audio`` at a question instead of pressing a key; the recogniser
    hears ``words`` in that answer turn. The turn's stream gets the audio, then the
    keypad's quiet (``[answers] timeout_s``), which is what the recogniser is fed."""
    quiet = silence(float(SurveyFlowConfig.load()["answers"]["timeout_s"]))
    speech.script(audio + quiet, words)
    return Turn(audio)


def answer_events(rig, case_id: int) -> list[tuple]:
    return [(e.data["question"], e.data["answer"], e.data["key"], e.data.get("spoken"), e.data.get("heard"))
            for e in rig.events(case_id, "survey_answer")]


def call_state(rig, call_sid: str) -> dict:
    with session_scope(rig.engine) as s:
        return s.exec(select(CallSession).where(CallSession.call_sid == call_sid)).one().state


async def test_answers_said_close_the_case(srig, fake, fake_speech):
    case = srig.verified_case()
    survey = srig.survey(case.id)
    fake_speech.say("师傅 来 得 很 快")  # the comment, recognised freely
    solved, satisfied = tone(0.8, freq=300), tone(0.9, freq=500)
    fake.callee(RESIDENT_E164, Callee("human", digits=[said(fake_speech, solved, "解决 了 解决 了"),
                                                       said(fake_speech, satisfied, "挺 满意 的")],
                                      speech=[tone(1.5) + silence(0.3)]))
    await srig.run_calls()
    row = await srig.call_over(survey.id, 1)
    assert row.outcome == "answered"
    heard = fake.played[row.call_sid].heard
    assert ASK_SOLVED_BY_VOICE in heard and ASK_SATISFIED_BY_VOICE in heard
    assert ASK_SOLVED_BY_KEYS not in heard and ASK_SATISFIED_BY_KEYS not in heard  # understood the first time
    assert heard[-1] == "谢谢您的评价。再见。"
    case = srig.case(case.id)
    assert case.status == CaseStatus.closed and case.close_reason == "survey:satisfied"
    survey = srig.survey(case.id)
    assert (survey.status, survey.solved, survey.satisfied) == (SurveyStatus.answered, "solved", "satisfied")
    assert survey.comment == "师傅来得很快"
    assert answer_events(srig, case.id) == [("solved", "solved", None, True, "解决了解决了"),
                                            ("satisfied", "satisfied", None, True, "挺满意的")]
    # Each answer turn was heard by a recogniser built with that question's phrases only.
    grammar_streams = [s for s in fake_speech.streams if s.phrases is not None]
    assert len(grammar_streams) == 2
    assert "没解决" in grammar_streams[0].phrases and "不满意" not in grammar_streams[0].phrases
    assert "不满意" in grammar_streams[1].phrases and "没解决" not in grammar_streams[1].phrases
    # The answers' audio is kept with the call, with what was heard in it.
    state = call_state(srig, row.call_sid)
    for segment, words in (("answer-solved-1", "解决了解决了"), ("answer-satisfied-2", "挺满意的")):
        kept = state["segments"][segment]
        assert kept["text"] == words and kept["final"]
        assert resolve(kept["audio_path"], srig.settings.data_dir).stat().st_size > 44 + 8000


async def test_not_solved_and_not_satisfied_said_reopen_the_case_as_the_keys_do(srig, fake, fake_speech):
    by_keys = srig.verified_case()
    by_voice = srig.verified_case(phone=OTHER_PHONE, resident=False)
    fake.callee(RESIDENT_E164, Callee("human", digits=["3", "3"]))
    fake.callee(OTHER_PHONE, Callee("human", digits=[said(fake_speech, tone(0.7, freq=350), "没有 解决"),
                                                     said(fake_speech, tone(0.7, freq=650), "不 满意")]))
    await srig.run_calls()
    for case in (by_keys, by_voice):
        await srig.call_over(srig.survey(case.id).id, 1)
    keyed, spoken = srig.case(by_keys.id), srig.case(by_voice.id)
    assert keyed.status == spoken.status == CaseStatus.reopened
    assert keyed.reopen_count == spoken.reopen_count == 1
    assert (srig.survey(by_voice.id).solved, srig.survey(by_voice.id).satisfied) == ("not", "not")

    def after_verify(case_id: int) -> list[tuple[str, str | None]]:
        events = srig.events(case_id)
        start = [e.action for e in events].index("verify")
        return [(e.action, e.reason) for e in events[start:] if e.action != "survey_call"]

    assert after_verify(by_voice.id) == after_verify(by_keys.id)
    assert [a[:2] for a in answer_events(srig, by_voice.id)] == [("solved", "not"), ("satisfied", "not")]
    assert [a[3] for a in answer_events(srig, by_voice.id)] == [True, True]
    assert [a[2] for a in answer_events(srig, by_keys.id)] == ["3", "3"]


async def test_words_naming_no_answer_or_silence_then_the_keys(srig, fake, fake_speech):
    """Words that name no answer (off the list: the grammar recogniser says nothing of
    them), or silence: the question again, now naming its keys; a key answers it."""
    case = srig.verified_case()
    survey = srig.survey(case.id)
    fake.callee(RESIDENT_E164, Callee("human", digits=[
        said(fake_speech, tone(1.2, freq=420), "今天 天气 不错"),  # Q1 by voice: not understood
        "1",  # Q1 again, by key
        Turn(silence(0.5)),  # Q2 by voice: nothing said
        "2",  # Q2 again, by key
    ]))
    await srig.run_calls()
    row = await srig.call_over(survey.id, 1)
    heard = fake.played[row.call_sid].heard
    i = heard.index(ASK_SOLVED_BY_VOICE)
    assert heard[i + 2: i + 4] == ["对不起，没有听清楚。您也可以按键。", ASK_SOLVED_BY_KEYS]
    j = heard.index(ASK_SATISFIED_BY_VOICE)
    assert heard[j + 2: j + 4] == ["没有听到您的回答。您也可以按键。", ASK_SATISFIED_BY_KEYS]
    assert answer_events(srig, case.id) == [("solved", "solved", "1", None, None),
                                            ("satisfied", "basically", "2", None, None)]
    assert srig.case(case.id).close_reason == "survey:basically"
    # nothing lost: the turn that named no answer is kept with the call, its audio too
    kept = call_state(srig, row.call_sid)["segments"]["answer-solved-1"]
    assert kept["final"] and kept["text"] == "" and kept["speech_s"] > 1.0
    assert resolve(kept["audio_path"], srig.settings.data_dir).is_file()


async def test_a_key_pressed_while_listening_still_answers(srig, fake, fake_speech):
    """The answer turn is open, the callee presses keys: they answer, nothing said is asked for."""
    case = srig.verified_case()
    fake.callee(RESIDENT_E164, Callee("human", digits=["2", "1"]))
    await srig.run_calls()
    row = await srig.call_over(srig.survey(case.id).id, 1)
    assert answer_events(srig, case.id) == [("solved", "partly", "2", None, None),
                                            ("satisfied", "satisfied", "1", None, None)]
    assert ASK_SOLVED_BY_KEYS not in fake.played[row.call_sid].heard
    # each question opened its answer turn, and the next TwiML stopped the one before
    urls = [url for url, _ in fake.played[row.call_sid].requests]
    assert any("seg=answer-solved-1" in u for u in urls) and any("seg=answer-satisfied-2" in u for u in urls)


class NoMandarin(FakeTranscriber):
    """A model with none of the phrases' words (as the Korean model with a Mandarin list)."""

    def grammar(self, phrases):
        raise ValueError(f"none of the phrases is in the model's vocabulary: {list(phrases)[:3]}")


async def test_a_model_without_the_phrases_words_takes_keys_only(engine, tmp_path, fake, fast_calls):
    clock.freeze(MORNING)
    rig = await start_survey_rig(engine, tmp_path, NoMandarin(confidence=0.9), fake)
    try:
        case = rig.verified_case()
        fake.callee(RESIDENT_E164, Callee("human", digits=["1", "1"]))
        await rig.run_calls()
        row = await rig.call_over(rig.survey(case.id).id, 1)
        heard = fake.played[row.call_sid].heard
        assert ASK_SOLVED_BY_KEYS in heard and ASK_SOLVED_BY_VOICE not in heard
        assert not [url for url, _ in fake.played[row.call_sid].requests if "seg=answer" in url]
        assert rig.case(case.id).close_reason == "survey:satisfied"
    finally:
        await rig.stop()


async def test_listen_false_in_the_rules_takes_keys_only(engine, tmp_path, fake, fast_calls, fake_speech):
    clock.freeze(MORNING)
    rig = await start_survey_rig(engine, tmp_path, fake_speech, fake,
                                 survey_flow=SurveyFlowConfig.load(answers={"listen": False}))
    try:
        case = rig.verified_case()
        fake.callee(RESIDENT_E164, Callee("human", digits=[None, "1", "1"]))
        await rig.run_calls()
        row = await rig.call_over(rig.survey(case.id).id, 1)
        heard = fake.played[row.call_sid].heard
        assert heard.count(ASK_SOLVED_BY_KEYS) == 2 and "没有听到您按键。" in heard
        assert not [s for s in fake_speech.streams if s.phrases is not None]
    finally:
        await rig.stop()
