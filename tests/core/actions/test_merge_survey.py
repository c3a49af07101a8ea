"""Both callers get the follow-up (issue 26): when a case with merged duplicates reaches its
survey, each duplicate's caller who is another person is asked too, on their own channel,
as a Survey of the surviving case naming the duplicate (``caller_case_id``). The case
closes on its own caller's answer; either caller's "not" reopens it; an undone merge
withdraws the duplicate's caller's follow-up. SQLite and PostgreSQL (the ``engine`` fixture)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlmodel import select

from core import actions
from core.cases.models import Case, CaseEvent, CaseStatus, Channel
from core.errors import IllegalTransition
from core.followup.models import Survey, SurveyStatus
from core.people.models import Resident
from core.platform import clock, i18n
from core.platform.db import session_scope
from core.platform.models import Job
from core.reporting import figures
from tests.core.actions.test_lifecycle import act, district, submit  # noqa: F401  (fixture)

S = CaseStatus
MORNING = datetime(2026, 11, 17, 2, 0)  # 10:00 in Shanghai, inside calling hours
OWN_PHONE = "+8613800138000"  # the district's registered resident (陈阿婆)


def _merge(engine, dup: Case, first: Case) -> None:
    with session_scope(engine) as session:
        actions.merge(session, actions.get_case(session, dup.id), actions.get_case(session, first.id),
                      actor="console:op", reason="同一路灯")


def _handle(engine, district, case: Case) -> Case:  # noqa: F811
    act(engine, case.id, actions.dispatch, actor="op", grid_id=district.grids["micro1"].id)
    act(engine, case.id, actions.accept, actor="w")
    act(engine, case.id, actions.report_done, actor="w", note="修好了")
    return act(engine, case.id, actions.verify, actor="op")


def _surveys(engine, case: Case) -> list[Survey]:
    with session_scope(engine) as session:
        return list(session.exec(select(Survey).where(Survey.case_id == case.id).order_by(Survey.id)).all())


def _answer(engine, survey_id: int, solved: str, satisfied: str) -> Case:
    with session_scope(engine) as session:
        return actions.record_survey(session, session.get(Survey, survey_id), solved=solved, satisfied=satisfied,
                                     actor="resident")


def _events(engine, case: Case, *names: str) -> list[CaseEvent]:
    with session_scope(engine) as session:
        return list(session.exec(select(CaseEvent).where(CaseEvent.case_id == case.id, CaseEvent.action.in_(names))
                                 .order_by(CaseEvent.id)).all())


def _jobs(engine) -> list[dict]:
    with session_scope(engine) as session:
        return [{"kind": j.kind, **j.payload} for j in session.exec(
            select(Job).where(Job.kind.in_(["survey_phone", "survey_chat"])).order_by(Job.id)).all()]


@pytest.fixture
def world(engine, district):  # noqa: F811
    """A first call, and three duplicates merged into it: a chat resident, a second caller
    on another number, and the first caller ringing again (the same person)."""
    clock.freeze(MORNING)
    with session_scope(engine) as session:
        chatter = Resident(name="林秀英", phone="+8613700137000", chat_id="777001")
        session.add(chatter)
        session.flush()
        chatter_id = chatter.id
    first = submit(engine, contact_phone=OWN_PHONE)
    by_chat = submit(engine, channel=Channel.chat, contact_phone=None, resident_id=chatter_id)
    second = submit(engine, contact_phone="+8613911112222")
    again = submit(engine, contact_phone=OWN_PHONE)
    for dup in (by_chat, second, again):
        _merge(engine, dup, first)
    return first, by_chat, second, again


def test_each_other_caller_is_asked_once_on_their_own_channel(engine, district, world):  # noqa: F811
    first, by_chat, second, again = world
    _handle(engine, district, first)
    own, chat, phone = _surveys(engine, first)
    assert (own.caller_case_id, own.channel) == (None, "phone")
    assert (chat.caller_case_id, chat.channel) == (by_chat.id, "chat")
    assert (phone.caller_case_id, phone.channel) == (second.id, "phone")  # the repeat caller: not twice
    assert [(j["kind"], j["survey_id"], j["case"]) for j in _jobs(engine)] == [
        ("survey_phone", own.id, first.number), ("survey_chat", chat.id, by_chat.number),
        ("survey_phone", phone.id, second.number)]
    with session_scope(engine) as session:  # who each survey reaches: the duplicate's caller, on their number
        reached = actions.caller_case(session, session.get(Survey, phone.id))
        resident = actions.contact_resident(session, reached)
        assert actions.phone_to_call(reached, resident) == "+8613911112222"
    said = _events(engine, first, "survey_caller")
    assert [e.data["duplicate"] for e in said] == [by_chat.number, second.number]
    assert i18n.reason_text("zh", said[0].reason, said[0].data) == f"重复件 {by_chat.number} 的来电人也将收到回访"


def test_the_case_closes_on_its_own_callers_answer_and_the_others_count(engine, district, world):  # noqa: F811
    first, by_chat, second, _ = world
    _handle(engine, district, first)
    own, chat, phone = _surveys(engine, first)
    # a duplicate's caller first, satisfied: recorded; the case waits for its own caller
    assert _answer(engine, chat.id, "solved", "satisfied").status == S.verified
    assert _answer(engine, own.id, "solved", "basically").status == S.closed
    # and a late one, satisfied, on the closed case: recorded, the case stays closed
    assert _answer(engine, phone.id, "partly", "basically").status == S.closed
    with session_scope(engine) as session:
        case = actions.get_case(session, first.id)
        assert (case.surveys_answered, case.surveys_satisfied) == (3, 3)  # per survey, on the surviving case
        assert {s.status for s in session.exec(select(Survey).where(Survey.case_id == first.id))} == \
            {SurveyStatus.answered}
    results = _events(engine, first, "survey_result")
    assert [(e.data["duplicate"], e.data["satisfied"], e.to_status) for e in results] == [
        (by_chat.number, "satisfied", S.verified), (second.number, "basically", S.closed)]
    assert len(_events(engine, first, "close")) == 1


def test_two_callers_answering_at_once_are_both_counted(engine, district, world):  # noqa: F811
    """The own caller's answer is being recorded on a case read before the other caller's
    answer was committed (two survey calls ending together): both count, and the other
    caller's "not" is not overwritten by the close (CI caught the lost count on PostgreSQL)."""
    first, *_ = world
    _handle(engine, district, first)
    own, chat, _phone = _surveys(engine, first)
    with session_scope(engine) as session:
        case = actions.get_case(session, first.id)  # read while the other answer is being given
        assert case.surveys_answered == 0
        assert _answer(engine, chat.id, "not", "not").status == S.reopened  # committed meanwhile
        with pytest.raises(IllegalTransition):  # the case moved on: this round is no longer answered
            actions.record_survey(session, session.get(Survey, own.id), solved="solved", satisfied="satisfied",
                                  actor="resident")
    own_late = _surveys(engine, first)[0]
    assert own_late.status == SurveyStatus.pending
    with session_scope(engine) as session:
        case = actions.get_case(session, first.id)
        assert (case.status, case.reopen_count, case.surveys_answered, case.surveys_satisfied) == (S.reopened, 1, 1, 0)
    # both satisfied, the other's answer committed while the own one is recorded: counted twice
    _handle(engine, district, first)
    own, chat = [s for s in _surveys(engine, first) if s.status == SurveyStatus.pending][:2]
    with session_scope(engine) as session:
        case = actions.get_case(session, first.id)
        assert _answer(engine, chat.id, "solved", "satisfied").status == S.verified
        closed = actions.record_survey(session, session.get(Survey, own.id), solved="solved", satisfied="satisfied",
                                       actor="resident")
        assert closed is case and case.status == S.closed
    with session_scope(engine) as session:
        case = actions.get_case(session, first.id)
        assert (case.status, case.surveys_answered, case.surveys_satisfied) == (S.closed, 3, 2)


@pytest.mark.parametrize("when", ["before", "after"])
def test_either_callers_not_satisfied_reopens_the_case(engine, district, world, when):  # noqa: F811
    first, *_ = world
    _handle(engine, district, first)
    own, chat, _phone = _surveys(engine, first)
    if when == "after":  # the own caller closed it; the other caller's "not" reopens it
        assert _answer(engine, own.id, "solved", "satisfied").status == S.closed
    case = _answer(engine, chat.id, "not", "not")
    assert case.status == S.reopened and case.reopen_count == 1
    with session_scope(engine) as session:
        assert actions.get_case(session, first.id).surveys_satisfied == (1 if when == "after" else 0)
    if when == "before":  # the own caller's survey of that round is no longer answered: the case moved on
        with pytest.raises(IllegalTransition):
            _answer(engine, own.id, "solved", "satisfied")
        _handle(engine, district, first)  # handled again: the new round replaces what was left unanswered
        with session_scope(engine) as session:
            assert session.get(Survey, own.id).status == SurveyStatus.withdrawn  # never called twice for it
        ended = _events(engine, first, "survey_end")
        assert [(e.data["survey_id"], e.reason) for e in ended][:1] == [(own.id, "survey.superseded_own")]
        assert i18n.reason_text("zh", ended[0].reason, ended[0].data) == "重新回访，上一轮回访未答复"


def test_a_new_round_replaces_the_unanswered_ones(engine, district, world):  # noqa: F811
    first, by_chat, second, _ = world
    _handle(engine, district, first)
    own, chat, phone = _surveys(engine, first)
    _answer(engine, own.id, "not", "not")  # reopened by its own caller; handled again
    _handle(engine, district, first)
    surveys = _surveys(engine, first)
    assert [(s.caller_case_id, s.status) for s in surveys] == [
        (None, SurveyStatus.answered), (by_chat.id, SurveyStatus.withdrawn), (second.id, SurveyStatus.withdrawn),
        (None, SurveyStatus.pending), (by_chat.id, SurveyStatus.pending), (second.id, SurveyStatus.pending)]
    assert [e.reason for e in _events(engine, first, "survey_end")] == ["survey.superseded"] * 2


def test_unreachable_other_caller_does_not_close_the_case(engine, district, world):  # noqa: F811
    first, _, second, _ = world
    _handle(engine, district, first)
    _own, _chat, phone = _surveys(engine, first)
    with session_scope(engine) as session:
        case = actions.survey_unreachable(session, session.get(Survey, phone.id), actor="system")
        assert case.status == S.verified and case.close_reason is None
        assert session.get(Survey, phone.id).status == SurveyStatus.unreachable
    (ended,) = _events(engine, first, "survey_end")
    assert (ended.reason, ended.data["duplicate"], ended.to_status) == ("survey.caller_unreachable", second.number,
                                                                         S.verified)


def test_closing_without_the_survey_calls_every_follow_up_off(engine, district, world):  # noqa: F811
    """An operator closes the verified case without waiting for the survey (a confirmed step):
    nobody is asked after all, so no late answer reopens a case closed on purpose."""
    first, by_chat, second, _ = world
    _handle(engine, district, first)
    own, chat, phone = _surveys(engine, first)
    act(engine, first.id, actions.close, actor="console:op", reason="resolved_on_the_phone")
    assert {s.status for s in _surveys(engine, first)} == {SurveyStatus.withdrawn}
    with pytest.raises(IllegalTransition):
        _answer(engine, phone.id, "not", "not")
    ended = _events(engine, first, "survey_end")
    assert [(e.data["survey_id"], e.reason) for e in ended] == [
        (own.id, "survey.closed_without_own"), (chat.id, "survey.closed_without"), (phone.id, "survey.closed_without")]
    assert i18n.reason_text("zh", ended[1].reason, ended[1].data) == \
        f"已结案（未经回访），重复件 {by_chat.number} 的来电人不再回访"
    with session_scope(engine) as session:
        assert actions.get_case(session, first.id).status == S.closed


def test_an_undone_merge_withdraws_the_callers_follow_up(engine, district, world):  # noqa: F811
    first, by_chat, second, _ = world
    _handle(engine, district, first)
    with session_scope(engine) as session:
        actions.unmerge(session, actions.get_case(session, second.id), actor="console:op", reason="不是同一件事")
    surveys = _surveys(engine, first)
    assert [(s.caller_case_id, s.status) for s in surveys] == [
        (None, SurveyStatus.pending), (by_chat.id, SurveyStatus.pending), (second.id, SurveyStatus.withdrawn)]
    (ended,) = _events(engine, first, "survey_end")
    assert ended.reason == "survey.merge_undone" and ended.actor == "console:op"
    # before the survey, an undone merge leaves nobody to ask for that duplicate: it gets its own later
    _handle(engine, district, second)
    (theirs,) = _surveys(engine, second)
    assert theirs.caller_case_id is None and theirs.channel == "phone"


def test_merging_into_a_case_waiting_for_its_follow_up_asks_that_caller_too(engine, district):  # noqa: F811
    clock.freeze(MORNING)
    first = submit(engine, contact_phone=OWN_PHONE)
    _handle(engine, district, first)
    late = submit(engine, contact_phone="+8613911112222")
    clock.freeze(MORNING + timedelta(minutes=5))
    _merge(engine, late, first)
    own, theirs = _surveys(engine, first)
    assert theirs.caller_case_id == late.id and theirs.channel == "phone"
    _answer(engine, theirs.id, "solved", "satisfied")
    again = submit(engine, contact_phone="+8613911112222")  # the same person once more, answered already
    _merge(engine, again, first)
    assert len(_surveys(engine, first)) == 2  # not asked twice
    other = submit(engine, contact_phone="+8613622223333")  # someone new: asked
    _merge(engine, other, first)
    assert [s.caller_case_id for s in _surveys(engine, first)] == [None, late.id, other.id]


def test_the_satisfaction_rate_counts_each_answer(engine, district, world):  # noqa: F811
    """满意率 is per survey answered: the surviving case carries every caller's answer; the
    closure rate still counts the case once (merged duplicates are not counted)."""
    first, *_ = world
    _handle(engine, district, first)
    own, chat, phone = _surveys(engine, first)
    _answer(engine, chat.id, "solved", "satisfied")
    _answer(engine, own.id, "solved", "satisfied")
    _answer(engine, phone.id, "partly", "basically")
    with session_scope(engine) as session:
        case = actions.get_case(session, first.id)
        assert case.status == S.closed and (case.surveys_answered, case.surveys_satisfied) == (3, 3)
        total = figures.totals(figures.rates(session, MORNING - timedelta(days=1), MORNING + timedelta(days=1),
                                             group_by="category"))
    assert (total.received, total.closed) == (1, 1)  # the case once; its three duplicates are not counted
    assert (total.surveyed, total.satisfied) == (3, 3)  # each caller's answer
