"""console.views.surveys: the manual-call list; the operator's answers go through
core.actions.record_survey as "operator:<name>"."""

from __future__ import annotations

import re

from sqlmodel import select

from core import actions
from core.cases.models import CaseEvent, CaseStatus, Channel
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


async def test_a_merged_duplicates_caller_is_on_the_list_with_their_own_number(client, engine, world):
    """Issue 26: the caller of a duplicate merged into the case is asked too; an Open311
    duplicate's caller goes to the manual-call list, which names the duplicate and dials its
    number. The answer is recorded on the surviving case, which waits for its own caller."""
    with session_scope(engine) as session:
        dup, _ = actions.submit_petition(session, actions.Petition(
            channel=Channel.open311, description="楼道飞线充电", contact_phone="+8613700137000"), actor="open311")
        actions.merge(session, dup, actions.get_case(session, world.other_grid_case), actor="console:op")
        dup_number, dup_id = dup.number, dup.id
    manual_survey(engine, world.other_grid_case)
    with session_scope(engine) as session:
        theirs = session.exec(select(Survey).where(Survey.caller_case_id == dup_id)).one()
        survey_id = theirs.id
    await login(client, "op")
    page = await (await client.get("/console/surveys/manual?lang=zh")).text()
    row = re.search(rf'<tr id="survey-{survey_id}">(.*?)</tr>', page, re.S).group(1)
    assert f"重复件 {dup_number} 的来电人" in row and "+8613700137000" in row and "+8613911112222" not in row
    assert "不影响结案" in row and "未评价结案" not in row  # giving up on this caller closes nothing
    token = await csrf_of(client, "/console/surveys/manual")
    resp = await client.post(f"/console/surveys/{survey_id}/answer", allow_redirects=False,
                             data={"_csrf": token, "solved": "solved", "satisfied": "basically"})
    assert resp.status == 303
    with session_scope(engine) as session:
        assert session.get(Survey, survey_id).status == SurveyStatus.answered
        assert actions.get_case(session, world.other_grid_case).status == CaseStatus.verified
    # both case pages say whom each follow-up asked, the answers in words
    surviving = await (await client.get(f"/console/cases/{world.other_grid_case}?lang=zh")).text()
    table = re.search(r'<table class="plain" id="surveys">(.*?)</table>', surviving, re.S).group(1)
    assert "本件来电人" in table and f"重复件 {dup_number} 的来电人 · +8613700137000" in table
    assert "已解决 基本满意" in table and "basically" not in table
    merged = await (await client.get(f"/console/cases/{dup_number}?lang=zh")).text()
    table = re.search(r'<table class="plain" id="surveys">(.*?)</table>', merged, re.S).group(1)
    assert f"本件来电人（随 {world.other_grid_case} 一并回访）" in table and "已回访" in table
