"""Text limits (rules [limits]) in the one writer: typed text over its limit is refused with
a code that names the field and the limit, and nothing is written; words heard from a voice
are never refused, only kept up to a generous cap with the case saying so."""

from __future__ import annotations

import pytest
from sqlmodel import select

from core import actions
from core.actions import Petition
from core.cases import intake, limits
from core.cases.models import Case, CaseEvent, CaseStatus, Channel
from core.errors import InvalidInput, TextTooLong
from core.followup.models import Survey
from core.platform import rules
from core.platform.db import session_scope
from tests.core.district import build_district

POINT = {"latitude": 26.3905, "longitude": 117.7915}


@pytest.fixture
def district(engine):
    intake.invalidate_routing()
    with session_scope(engine) as session:
        return build_district(session)



def over(field: str) -> str:
    return "长" * (limits.limit_of(field) + 1)


def count(engine, model) -> int:
    with session_scope(engine) as session:
        return len(session.exec(select(model.id)).all())


def test_a_typed_description_over_the_limit_is_refused_and_nothing_is_written(engine, district):
    with pytest.raises(TextTooLong) as refused:
        intake.file_petition(engine, Petition(channel=Channel.chat, description=over("description"), **POINT))
    assert refused.value.code == "text.too_long"
    assert (refused.value.field, refused.value.limit) == ("description", 4000)
    assert refused.value.length == 4001
    assert isinstance(refused.value, InvalidInput)  # every edge that handles a refused input handles this
    assert count(engine, Case) == 0
    exactly = intake.file_petition(engine, Petition(channel=Channel.open311, description="长" * 4000, **POINT))
    assert exactly.created


def test_a_typed_address_over_the_limit_is_refused(engine, district):
    with pytest.raises(TextTooLong, match="address"):
        intake.file_petition(engine, Petition(channel=Channel.open311, description="路灯不亮",
                                              address_text=over("address")))


def test_a_callers_words_are_never_refused_but_kept_up_to_the_cap(engine, district):
    said = "我家楼下的路灯坏了" * 3000  # 27,000 characters: a very long call
    result = intake.file_petition(engine, Petition(
        channel=Channel.hotline, description=said, contact_phone="13911112222",
        transcript=[{"text": said, "start": 0.0, "end": 3600.0}], address_text="很长的地址" * 100))
    case = result.case
    assert result.created
    assert len(case.description) == 20000 and said.startswith(case.description)
    assert limits.TEXT_CUT in case.flags and case.status == CaseStatus.received  # for an operator
    assert len(case.address_text) == 256
    with session_scope(engine) as session:
        submit = session.exec(select(CaseEvent).where(CaseEvent.case_id == case.id,
                                                      CaseEvent.action == "submit")).one()
        stored = session.get(Case, case.id)
    assert submit.data["text_cut"] == {"kept": 20000, "said": 27000}
    assert stored.transcript[0]["text"] == said  # the recogniser's own record keeps every word
    assert limits.TEXT_CUT in load_triage_flags()


def load_triage_flags() -> list[str]:
    return rules.load_rules()["console"]["triage_flags"]


def test_a_chat_voice_note_transcript_is_heard_not_typed(engine, district):
    said = "路灯" * 12000
    result = intake.file_petition(engine, Petition(channel=Channel.chat, description=said,
                                                   transcript=[{"text": said}], **POINT))
    assert len(result.case.description) == 20000 and limits.TEXT_CUT in result.case.flags


def test_words_recognised_later_are_capped_too(engine, district):
    filed = intake.file_petition(engine, Petition(channel=Channel.hotline, description="",
                                                  contact_phone="13911112222",
                                                  flags=(actions.TRANSCRIPT_PENDING,),
                                                  files=(actions.FileRef("recording", "calls/x.wav"),)))
    with session_scope(engine) as session:
        case = actions.get_case(session, filed.case.id)
        actions.set_transcript(session, case, actor="hotline:speech", text="好" * 25000, segments=None,
                               confidence=0.9)
        assert len(case.description) == 20000 and limits.TEXT_CUT in case.flags


def _dispatched(engine) -> str:
    result = intake.file_petition(engine, Petition(channel=Channel.chat, description="楼道飞线充电", **POINT))
    assert result.dispatched
    return result.case.number


WRITERS = {
    "annotate": ("note", lambda s, c, text: actions.annotate(s, c, actor="op", note=text)),
    "classify": ("description", lambda s, c, text: actions.classify(s, c, actor="op", description=text)),
    "classify_reason": ("reason", lambda s, c, text: actions.classify(s, c, actor="op", urgency=None,
                                                                       category_code="streetlight", reason=text)),
    "return": ("reason", lambda s, c, text: actions.return_case(s, c, actor="op", reason=text)),
    "escalate": ("reason", lambda s, c, text: actions.escalate(s, c, actor="op", reason=text)),
    "merge": ("reason", lambda s, c, text: actions.merge(s, c, c, actor="op", reason=text)),
    "locate": ("reason", lambda s, c, text: actions.locate(s, c, actor="op", grid_id=c.grid_id, reason=text)),
    "attach": ("note", lambda s, c, text: actions.attach(s, c, actor="op", note=text)),
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_every_writer_refuses_a_text_over_its_limit(engine, district, writer):
    field, call = WRITERS[writer]
    number = _dispatched(engine)
    events_before = count(engine, CaseEvent)
    with pytest.raises(TextTooLong) as refused, session_scope(engine) as session:
        call(session, actions.get_case(session, number), over(field))
    assert refused.value.field == field
    assert count(engine, CaseEvent) == events_before
    with session_scope(engine) as session:
        assert actions.get_case(session, number).status == CaseStatus.dispatched


def test_handling_checking_and_closing_refuse_long_notes_and_reasons(engine, district):
    number = _dispatched(engine)
    with session_scope(engine) as session:
        case = actions.get_case(session, number)
        actions.accept(session, case, actor="w")
        with pytest.raises(TextTooLong, match="note"):
            actions.start(session, case, actor="w", note=over("note"))
        actions.start(session, case, actor="w", note="去现场")
        with pytest.raises(TextTooLong, match="note"):
            actions.report_done(session, case, actor="w", note=over("note"))
        actions.report_done(session, case, actor="w", note="已处理")
        with pytest.raises(TextTooLong, match="note"):
            actions.verify(session, case, actor="l", passed=False, note=over("note"))
        actions.verify(session, case, actor="l")
        survey = session.exec(select(Survey).where(Survey.case_id == case.id)).one()
        with pytest.raises(TextTooLong, match="comment"):
            actions.record_survey(session, survey, solved="solved", satisfied="satisfied", comment=over("comment"))
        assert survey.comment is None
        with pytest.raises(TextTooLong, match="reason"):
            actions.close(session, case, actor="op", reason=over("reason"))
        actions.close(session, case, actor="op", reason="resolved_on_the_phone")
        with pytest.raises(TextTooLong, match="reason"):
            actions.reopen(session, case, actor="op", reason=over("reason"))


def test_a_spoken_survey_comment_is_kept_up_to_the_cap(engine, district):
    number = _dispatched(engine)
    with session_scope(engine) as session:
        case = actions.get_case(session, number)
        for step in (actions.accept, ):
            step(session, case, actor="w")
        actions.report_done(session, case, actor="w", note="已处理")
        actions.verify(session, case, actor="l")
        survey = session.exec(select(Survey).where(Survey.case_id == case.id)).one()
        actions.survey_comment(session, survey, actor="resident", text="满意" * 15000)
        assert len(survey.comment) == 20000


def test_the_limits_are_rules_data(override, engine, district):
    override("[limits]\nnote = 10\n")
    number = _dispatched(engine)
    with session_scope(engine) as session:
        case = actions.get_case(session, number)
        actions.annotate(session, case, actor="op", note="十个字以内的备注")
        with pytest.raises(TextTooLong) as refused:
            actions.annotate(session, case, actor="op", note="这是一条超过十个字的备注内容")
    assert refused.value.limit == 10


@pytest.mark.parametrize(("text", "message"), [
    ("[limits]\nname = 65\n", "at most 64"),
    ("[limits]\nnote = 0\n", "whole number"),
    ("[limits]\ntranscript = 100\n", "at least limits.description"),
])
def test_bad_limits_are_refused_with_the_key(override, text, message):
    with pytest.raises(rules.RulesError, match=message):
        override(text)
        rules.load_rules()
