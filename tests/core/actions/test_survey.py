"""core.actions.survey and core.followup.survey_policy: attempts are case events; what an answer
does is rules data; who gets which follow-up, and what follows each phone call, too."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta

import pytest
from sqlmodel import select

from core import actions
from core.cases.models import Case, CaseEvent, CaseStatus, Channel
from core.errors import IllegalTransition, InvalidInput
from core.followup import survey_policy
from core.followup.models import Survey, SurveyStatus
from core.people.models import Resident
from core.platform import clock, jobs
from core.platform.db import session_scope
from core.platform.models import Job
from core.platform.rules import load_rules
from tests.core.actions.test_lifecycle import _verified_case, act, district, submit  # noqa: F401  (fixture)


def _survey(session, case_id) -> Survey:
    return session.exec(select(Survey).where(Survey.case_id == case_id)).one()


def test_each_attempt_is_counted_and_on_the_timeline(engine, district):  # noqa: F811
    case = _verified_case(engine, district)
    for outcome in ("no-answer", "busy"):
        with session_scope(engine) as session:
            actions.survey_attempt(session, _survey(session, case.id), actor="system:phone", outcome=outcome,
                                   data={"call_sid": f"CA-{outcome}"})
    with session_scope(engine) as session:
        survey = _survey(session, case.id)
        assert survey.attempts == 2
        evs = session.exec(select(CaseEvent).where(CaseEvent.case_id == case.id,
                                                   CaseEvent.action == "survey_attempt").order_by(CaseEvent.id)).all()
        assert [(e.reason, e.data["attempt"], e.data["call_sid"]) for e in evs] == [
            ("no-answer", 1, "CA-no-answer"), ("busy", 2, "CA-busy")]
        assert all(e.from_status == e.to_status == CaseStatus.verified for e in evs)
        actions.survey_unreachable(session, survey)
    with pytest.raises(IllegalTransition), session_scope(engine) as session:
        actions.survey_attempt(session, _survey(session, case.id), actor="system:phone", outcome="busy")


def test_answers_outside_the_scales_are_refused(engine, district):  # noqa: F811
    case = _verified_case(engine, district)
    with pytest.raises(InvalidInput), session_scope(engine) as session:
        actions.record_survey(session, _survey(session, case.id), solved="maybe", satisfied="satisfied")


def test_a_district_that_closes_only_on_satisfied_reopens_basically(engine, district, monkeypatch):  # noqa: F811
    strict = copy.deepcopy(load_rules())
    strict["survey"]["closes_when_satisfied"] = ["satisfied"]
    monkeypatch.setattr(survey_policy, "load_rules", lambda: strict)
    assert not survey_policy.closes_case("solved", "basically")
    case = _verified_case(engine, district)
    with session_scope(engine) as session:
        case = actions.record_survey(session, _survey(session, case.id), solved="solved", satisfied="basically")
    assert case.status == CaseStatus.reopened


def test_packaged_policy_closes_on_basically_satisfied():
    assert survey_policy.solved_scale() == ("solved", "partly", "not")
    assert survey_policy.closes_case("partly", "basically")
    assert not survey_policy.closes_case("not", "satisfied")
    assert not survey_policy.closes_case("solved", "not")


# ---- the phone follow-up -------------------------------------------------------------------

MORNING = datetime(2026, 11, 17, 2, 0)  # 10:00 in Shanghai, inside calling hours


def _verified(engine, district, **petition):  # noqa: F811
    clock.freeze(MORNING)
    case = submit(engine, **petition)
    act(engine, case.id, actions.dispatch, actor="op", grid_id=district.grids["micro1"].id)
    act(engine, case.id, actions.accept, actor="w")
    act(engine, case.id, actions.report_done, actor="w", note="修好了")
    return act(engine, case.id, actions.verify, actor="op")


def _jobs(engine, kind: str) -> list[Job]:
    with session_scope(engine) as session:
        return list(session.exec(select(Job).where(Job.kind == kind).order_by(Job.id)).all())


@pytest.mark.parametrize("petition, chat, channel", [
    ({}, False, "phone"),  # a hotline caller is called back
    ({}, True, "phone"),  # even with a linked chat: the hotline caller is asked by phone
    ({"channel": Channel.chat}, True, "chat"),  # a chat resident gets the buttons
    ({"channel": Channel.open311, "resident_id": None, "contact_phone": None}, False, "manual"),
    ({"channel": Channel.open311, "contact_phone": "+8613911112222", "resident_id": None}, False, "manual"),
    ({"contact_phone": "12345", "resident_id": None}, False, "manual"),  # no number that can be dialled
])
def test_who_gets_which_survey(engine, district, petition, chat, channel):  # noqa: F811
    if chat:
        with session_scope(engine) as session:
            actions.link_chat(session, session.get(Resident, district.resident.id), "777", actor="test")
    case = _verified(engine, district, **petition)
    with session_scope(engine) as session:
        survey = _survey(session, case.id)
    assert survey.channel == channel
    queued = {j.kind for j in _jobs(engine, "survey_phone") + _jobs(engine, "survey_chat")}
    assert queued == ({f"survey_{channel}"} if channel != "manual" else set())


def test_the_first_call_is_queued_for_the_next_calling_hours(engine, district):  # noqa: F811
    case = submit(engine)
    act(engine, case.id, actions.dispatch, actor="op", grid_id=district.grids["micro1"].id)
    act(engine, case.id, actions.accept, actor="w")
    act(engine, case.id, actions.report_done, actor="w", note="修好了")
    clock.freeze(datetime(2026, 11, 17, 13, 0))  # 21:00 local
    act(engine, case.id, actions.verify, actor="op")
    (job,) = _jobs(engine, "survey_phone")
    assert job.run_at == datetime(2026, 11, 18, 1, 0)  # 09:00 local the next day
    assert job.payload["attempt"] == 1 and jobs.KINDS["survey_phone"].startswith("ivr/survey_jobs.py")


def test_do_not_call_goes_to_the_manual_list_or_is_not_evaluated(engine, district, monkeypatch):  # noqa: F811
    with session_scope(engine) as session:
        actions.set_do_not_call(session, session.get(Resident, district.resident.id), True, actor="operator:li")
    case = _verified(engine, district)
    with session_scope(engine) as session:
        assert _survey(session, case.id).channel == "manual"
    assert _jobs(engine, "survey_phone") == []
    strict = copy.deepcopy(load_rules())
    strict["survey"]["phone"]["do_not_call"] = "not_evaluated"
    monkeypatch.setattr(survey_policy, "load_rules", lambda: strict)
    case = _verified(engine, district)
    with session_scope(engine) as session:
        survey = _survey(session, case.id)
        assert survey.status == SurveyStatus.unreachable
        assert actions.get_case(session, case.id).close_reason == "not_evaluated"


def test_call_outcomes_follow_the_rules(engine, district):  # noqa: F811
    case = _verified(engine, district)
    with session_scope(engine) as session:
        survey = _survey(session, case.id)
        actions.survey_attempt(session, survey, actor="survey:phone", outcome="placed", data={"call_sid": "CA1"})
        assert actions.survey_call_outcome(session, survey, attempt=1, outcome="busy") == "retry"
    (first, second) = _jobs(engine, "survey_phone")
    assert second.payload["attempt"] == 2 and second.run_at == MORNING + timedelta(minutes=120)
    assert second.dedupe_key == f"survey:{first.payload['survey_id']}:2"
    with session_scope(engine) as session:
        survey = _survey(session, case.id)
        for _ in (2, 3):
            actions.survey_attempt(session, survey, actor="survey:phone", outcome="placed")
        assert actions.survey_call_outcome(session, survey, attempt=3, outcome="machine") == "unreachable"
    with session_scope(engine) as session:
        assert _survey(session, case.id).status == SurveyStatus.unreachable
        calls = session.exec(select(CaseEvent).where(CaseEvent.case_id == case.id,
                                                     CaseEvent.action == "survey_call")).all()
        assert [(e.reason, e.data["attempt"]) for e in calls] == [("busy", 1), ("machine", 3)]


def test_answers_and_a_comment_are_events(engine, district, tmp_path):  # noqa: F811
    case = _verified(engine, district)
    with session_scope(engine) as session:
        survey = _survey(session, case.id)
        actions.survey_answer(session, survey, question="solved", answer="partly", actor="resident:phone")
        actions.survey_answer(session, survey, question="satisfied", answer=None, actor="resident:phone")
        with pytest.raises(InvalidInput):
            actions.survey_answer(session, survey, question="solved", answer="perhaps", actor="resident:phone")
        with pytest.raises(InvalidInput):
            actions.survey_answer(session, survey, question="mood", answer="solved", actor="resident:phone")
        actions.record_survey(session, survey, solved="solved", satisfied="satisfied")
        # the comment comes after the answers closed the case: allowed, words later still
        ref = actions.FileRef("survey_comment", "recordings/x/CA1-comment-1.wav", "audio/wav", 12000, "ab" * 32)
        actions.survey_comment(session, survey, actor="resident:phone", file=ref)
        actions.survey_comment(session, survey, actor="survey:speech", text="很满意")
    with session_scope(engine) as session:
        assert _survey(session, case.id).comment == "很满意"
        evs = session.exec(select(CaseEvent).where(CaseEvent.case_id == case.id).order_by(CaseEvent.id)).all()
        assert [e.action for e in evs][-6:] == ["survey_answer", "survey_answer", "close", "attach", "survey_comment",
                                                "survey_comment"]
        assert evs[-3].data["attachments"][0]["kind"] == "survey_comment"
        assert evs[-2].data["transcript_pending"] is True and evs[-1].reason == "很满意"


def test_the_case_counts_its_answered_surveys_for_the_figures(engine, district):  # noqa: F811
    """core.reporting.figures reads the satisfaction rate off the case: every answer is counted there,
    in the transaction that records it, and agrees with the Survey rows."""
    case = _verified_case(engine, district)
    with session_scope(engine) as session:
        actions.survey_attempt(session, _survey(session, case.id), actor="system:phone", outcome="busy")
    with session_scope(engine) as session:
        assert (session.get(Case, case.id).surveys_answered, session.get(Case, case.id).surveys_satisfied) == (0, 0)
        case = actions.record_survey(session, _survey(session, case.id), solved="not", satisfied="not")
    act(engine, case.id, actions.dispatch, actor="op")
    act(engine, case.id, actions.accept, actor="w")
    act(engine, case.id, actions.report_done, actor="w", note="换了灯泡")
    act(engine, case.id, actions.verify, actor="op")
    with session_scope(engine) as session:
        second = session.exec(select(Survey).where(Survey.case_id == case.id,
                                                   Survey.status == SurveyStatus.pending)).one()
        actions.record_survey(session, second, solved="solved", satisfied="basically")
    with session_scope(engine) as session:
        stored = session.get(Case, case.id)
        answers = session.exec(select(Survey.satisfied).where(Survey.case_id == case.id,
                                                              Survey.status == SurveyStatus.answered)).all()
        assert sorted(answers) == ["basically", "not"]
        assert (stored.surveys_answered, stored.surveys_satisfied) == (2, 1)
        assert stored.status == CaseStatus.closed
