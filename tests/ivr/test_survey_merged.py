"""Both callers get the follow-up call (issue 26): a case with a second caller's duplicate
merged into it is verified; the real twilio client places two calls at the fake REST
server — the case's own caller and the duplicate's, each on their own number, the second
hearing of the day *they* called — and each answer, keyed on the call, is recorded as its
own Survey of the surviving case. SQLite and PostgreSQL."""

from __future__ import annotations

from sqlmodel import select

from core import actions
from core.cases.models import Case, CaseStatus, Channel
from core.followup.models import Survey, SurveyStatus
from core.platform import clock
from core.platform.db import session_scope
from tests.support.fake_twilio import Callee

from .conftest import KNOWN_PHONE
from .survey_rig import MORNING, RESIDENT_E164, local

SECOND = "+8613911112222"  # another person, not in the registry


def _merged_and_verified(rig) -> tuple[Case, Case]:
    """The own caller rang on 15 November, a second caller on the 16th (merged as a
    duplicate); the grid handled it and it was verified this morning."""
    def petition(s, phone, resident):
        case, _ = actions.submit_petition(s, actions.Petition(
            channel=Channel.hotline, description="小区门口的路灯坏了", contact_phone=phone, resident_id=resident,
            category_code="light"), actor="test")
        return case

    clock.freeze(local(2026, 11, 15, 10, 0))
    with session_scope(rig.engine) as s:
        first = petition(s, KNOWN_PHONE, actions.find_resident_by_phone(s, KNOWN_PHONE).id)
    clock.freeze(local(2026, 11, 16, 10, 0))
    with session_scope(rig.engine) as s:
        dup = petition(s, SECOND, None)
        actions.merge(s, dup, actions.get_case(s, first.id), actor="console:op")
    clock.freeze(MORNING)
    with session_scope(rig.engine) as s:
        case = actions.get_case(s, first.id)
        actions.dispatch(s, case, actor="test", grid_id=rig.district["micro"])
        actions.accept(s, case, actor="test")
        actions.report_done(s, case, actor="test", note="换了灯泡")
        actions.verify(s, case, actor="test")
    return first, dup


def _surveys(rig, case: Case) -> list[Survey]:
    with session_scope(rig.engine) as s:
        return list(s.exec(select(Survey).where(Survey.case_id == case.id).order_by(Survey.id)).all())


async def test_the_second_caller_is_called_on_their_number_and_their_answer_recorded(srig, fake):
    first, dup = _merged_and_verified(srig)
    own, theirs = _surveys(srig, first)
    assert (own.caller_case_id, theirs.caller_case_id, theirs.channel) == (None, dup.id, "phone")
    fake.callee(RESIDENT_E164, Callee("human", digits=["1", "1"]))
    fake.callee(SECOND, Callee("human", digits=["2", "2"]))
    while await srig.run_calls():
        pass
    assert sorted(c["To"] for c in fake.created_calls) == sorted([RESIDENT_E164, SECOND])
    row = await srig.call_over(theirs.id, 1)
    assert row.outcome == "answered"
    heard = fake.played[row.call_sid].heard
    assert "您在11月16日反映的路灯问题，我们来做个回访。" in heard  # the day they called, not the 15th
    assert (await srig.call_over(own.id, 1)).outcome == "answered"
    case = srig.case(first.id)
    assert case.status == CaseStatus.closed and case.close_reason == "survey:satisfied"
    assert (case.surveys_answered, case.surveys_satisfied) == (2, 2)
    own, theirs = _surveys(srig, first)
    assert (own.status, own.solved, own.satisfied) == (SurveyStatus.answered, "solved", "satisfied")
    assert (theirs.status, theirs.solved, theirs.satisfied) == (SurveyStatus.answered, "partly", "basically")
    (result,) = srig.events(first.id, "survey_result")
    assert result.data["duplicate"] == dup.number and result.data["survey_id"] == theirs.id
    assert srig.case(dup.id).status == CaseStatus.merged  # the duplicate itself is untouched


async def test_the_second_callers_not_satisfied_reopens_the_case(srig, fake):
    first, dup = _merged_and_verified(srig)
    own, theirs = _surveys(srig, first)
    fake.callee(RESIDENT_E164, Callee("no-answer"))
    fake.callee(SECOND, Callee("human", digits=["3", "3"]))
    while await srig.run_calls():
        pass
    assert (await srig.call_over(theirs.id, 1)).outcome == "answered"
    await srig.call_over(own.id, 1)
    case = srig.case(first.id)
    assert case.status == CaseStatus.reopened and case.reopen_count == 1
    (reopened,) = srig.events(first.id, "reopen")
    assert reopened.actor == srig.events(first.id, "survey_result")[0].actor
