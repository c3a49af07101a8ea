"""core.actions.survey and core.survey_policy: attempts are case events; what an answer
does is rules data."""

from __future__ import annotations

import copy

import pytest
from sqlmodel import select

from core import actions, survey_policy
from core.db import session_scope
from core.errors import IllegalTransition, InvalidInput
from core.models import CaseEvent, CaseStatus, Survey
from core.rules import load_rules
from tests.core.actions.test_lifecycle import _verified_case, district  # noqa: F401  (fixture)


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
