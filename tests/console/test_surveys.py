"""console.views.surveys: the manual-call list; the operator's answers go through
core.actions.record_survey as "operator:<name>"."""

from __future__ import annotations

from sqlmodel import select

from core import actions
from core.cases.models import CaseEvent, CaseStatus
from core.followup.models import Survey, SurveyStatus
from core.people.models import AuditEntry
from core.platform.db import session_scope
from tests.console.conftest import csrf_of, login, manual_survey


async def test_operator_records_answers_taken_by_phone(client, engine, world):
    survey_id = manual_survey(engine, world.other_grid_case)
    await login(client, "op")
    page = await (await client.get("/console/surveys/manual")).text()
    assert world.other_grid_case in page and "+8613911112222" in page
    token = await csrf_of(client, "/console/surveys/manual")
    resp = await client.post(f"/console/surveys/{survey_id}/attempt", data={"_csrf": token, "outcome": "busy"},
                             allow_redirects=False)
    assert resp.status == 303
    resp = await client.post(f"/console/surveys/{survey_id}/answer", allow_redirects=False,
                             data={"_csrf": token, "solved": "solved", "satisfied": "satisfied", "comment": "很好"})
    assert resp.status == 303
    with session_scope(engine) as session:
        survey = session.get(Survey, survey_id)
        case = actions.get_case(session, world.other_grid_case)
        events = session.exec(select(CaseEvent).where(CaseEvent.case_id == case.id).order_by(CaseEvent.id)).all()
        audited = session.exec(select(AuditEntry.action).where(AuditEntry.actor == "console:op")).all()
    assert survey.status == SurveyStatus.answered and survey.attempts == 2 and survey.comment == "很好"
    assert case.status == CaseStatus.closed
    assert [(e.action, e.actor) for e in events[-3:]] == [
        ("survey_attempt", "operator:op"), ("survey_attempt", "operator:op"), ("close", "operator:op")]
    assert "survey.manual_list" in audited and "survey.answer" in audited
    assert world.other_grid_case not in await (await client.get("/console/surveys/manual")).text()


async def test_giving_up_closes_as_not_evaluated_and_bad_answers_are_refused(client, engine, world):
    survey_id = manual_survey(engine, world.other_grid_case)
    await login(client, "op")
    token = await csrf_of(client, "/console/surveys/manual")
    bad = await client.post(f"/console/surveys/{survey_id}/answer", data={"_csrf": token, "solved": "maybe",
                                                                          "satisfied": "satisfied"})
    assert bad.status == 422 and "回访答案不在可选范围内。" in await bad.text()  # was English on a zh page
    resp = await client.post(f"/console/surveys/{survey_id}/give_up", data={"_csrf": token}, allow_redirects=False)
    assert resp.status == 303
    with session_scope(engine) as session:
        assert actions.get_case(session, world.other_grid_case).close_reason == "not_evaluated"
    again = await client.post(f"/console/surveys/{survey_id}/give_up", data={"_csrf": token})
    assert again.status == 409


async def test_only_survey_roles_open_the_list(client, engine, world):
    manual_survey(engine, world.other_grid_case)
    await login(client, "viewer")
    assert (await client.get("/console/surveys/manual")).status == 403
