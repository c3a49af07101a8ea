"""Quarterly worker scores on a fixture whose numbers were worked out by hand.

Worker W-M2 (micro grid 2) is given five cases on Tuesday 2026-11-17 at 09:00 (路灯: 4
working hours to accept, due 14:30; 37.5 to resolve) and one in the third quarter:

    A  accepted 10:00 (on time), reported 11-18 (on time), satisfied        -> closed
    B  accepted 15:00 (late),    reported 11-18 (on time), satisfied        -> closed
    C  never accepted: escalated to W-A at 15:00 (late response, no report)
    D  returned at 10:00 (not theirs)                                        -> left out
    E  accepted 10:00 (on time), reported 11-18 (on time), not satisfied    -> reopened
    F  dispatched 2026-09-30 (Q3)                                            -> other quarter

W-M2: 4 assignments (A B C E); response on time 2/4 = 50 %; resolution on time 3/4
(C counts late) = 75 %; closed 2/4 = 50 %.
    work = 100 × (0.3 × 0.50 + 0.4 × 0.75 + 0.3 × 0.50) / 1.0 = 60.0
    evaluation = (100 + 100 + 0) / 3 = 66.67
    score = 0.7 × 60.0 + 0.3 × 66.67 = 42.0 + 20.0 = 62.0
W-A: 1 assignment (C, by escalation), never accepted: response 0/1, resolution 0/1 (both
deadlines passed by the time of the report), closed 0/1 -> work 0.0; no evaluated case:
no score ("—"). Everybody else: nothing.
"""

from __future__ import annotations

from datetime import date, datetime

import pytest
from sqlmodel import select

from core import actions, clock, sweeps
from core.actions import Petition
from core.db import session_scope
from core.errors import InvalidInput
from core.models import Channel, Survey
from core.scores import parse_quarter, quarter_scores
from tests.core.district import build_district
from tests.core.shanghai import utc

AS_OF = datetime(2027, 1, 5)


def _new(session, grid_id: int, text: str) -> str:
    case, _ = actions.submit_petition(session, Petition(channel=Channel.hotline, description=text,
                                                        category_code="streetlight"))
    actions.dispatch(session, case, actor="op", grid_id=grid_id)
    return case.number


def _do(engine, number: str, *steps: str, answer: tuple[str, str] | None = None) -> None:
    with session_scope(engine) as session:
        case = actions.get_case(session, number)
        for step in steps:
            if step == "accept":
                actions.accept(session, case, actor="w")
            elif step == "report":
                actions.report_done(session, case, actor="w", note="修好了")
            elif step == "verify":
                actions.verify(session, case, actor="l")
            elif step == "return":
                actions.return_case(session, case, actor="w", reason="不归我们")
        if answer:
            survey = session.exec(select(Survey).where(Survey.case_id == case.id)).one()
            actions.record_survey(session, survey, solved=answer[0], satisfied=answer[1])


@pytest.fixture
def fixture(engine):
    with session_scope(engine) as session:
        district = build_district(session)
    micro2 = district.grids["micro2"].id
    clock.freeze(utc(2026, 9, 30, 9, 0))
    with session_scope(engine) as session:
        f = _new(session, micro2, "F")
    _do(engine, f, "accept")
    clock.freeze(utc(2026, 11, 17, 9, 0))
    with session_scope(engine) as session:
        a, b, c, d, e = (_new(session, micro2, x) for x in "ABCDE")
    clock.freeze(utc(2026, 11, 17, 10, 0))
    _do(engine, a, "accept")
    _do(engine, e, "accept")
    _do(engine, d, "return")
    clock.freeze(utc(2026, 11, 17, 15, 0))
    _do(engine, b, "accept")
    assert sweeps.escalate_overdue(engine) == [c]
    clock.freeze(utc(2026, 11, 18, 10, 0))
    _do(engine, a, "report", "verify", answer=("solved", "satisfied"))
    _do(engine, b, "report", "verify", answer=("solved", "satisfied"))
    _do(engine, e, "report", "verify", answer=("not", "not"))
    clock.freeze(None)
    return district


def test_scores_match_the_hand_computed_numbers(engine, fixture):
    with session_scope(engine) as session:
        rows = quarter_scores(session, "2026Q4", as_of=AS_OF)
    by_code = {r.code: r for r in rows}
    m2 = by_code["W-M2"]
    assert (m2.assignments, m2.response_on_time, m2.response_counted, m2.resolution_on_time,
            m2.resolution_counted, m2.closed, m2.evaluated, m2.points) == (4, 2, 4, 3, 4, 2, 3, 200.0)
    assert m2.response_rate == 0.5 and m2.resolution_rate == 0.75 and m2.closure_rate == 0.5
    assert m2.work_score == pytest.approx(60.0)
    assert m2.evaluation_score == pytest.approx(66.6667, abs=1e-4)
    assert m2.score == pytest.approx(62.0)
    a = by_code["W-A"]
    assert (a.assignments, a.response_counted, a.resolution_counted, a.closed, a.evaluated) == (1, 1, 1, 0, 0)
    assert a.work_score == 0.0 and a.evaluation_score is None and a.score is None
    # everybody is listed; the one with a score first, the rest by code
    assert [r.code for r in rows] == ["W-M2", "W-A", "W-C", "W-D", "W-M1", "W-S"]
    assert all(r.score is None and r.work_score is None for r in rows[2:])

    with session_scope(engine) as session:
        q3 = {r.code: r for r in quarter_scores(session, "2026Q3", as_of=AS_OF)}
    assert q3["W-M2"].assignments == 1 and q3["W-M2"].response_on_time == 1 and q3["W-M2"].score is None


def test_weights_and_points_are_rules_data(engine, fixture):
    rules = {"work_weight": 0.5, "evaluation_weight": 0.5,
             "work": {"response_on_time": 1, "resolution_on_time": 0, "closure": 0},
             "points": {"satisfied": 90, "basically": 60, "not": 10}}
    with session_scope(engine) as session:
        m2 = {r.code: r for r in quarter_scores(session, "2026Q4", as_of=AS_OF, rules=rules)}["W-M2"]
    assert m2.work_score == pytest.approx(50.0)  # only the response rate
    assert m2.evaluation_score == pytest.approx((90 + 90 + 10) / 3)
    assert m2.score == pytest.approx(0.5 * 50 + 0.5 * 190 / 3)


def test_quarters():
    assert parse_quarter("2026Q4") == (date(2026, 10, 1), date(2027, 1, 1))
    assert parse_quarter(" 2027-q1 ") == (date(2027, 1, 1), date(2027, 4, 1))
    for bad in ("2026Q5", "Q4", "2026", ""):
        with pytest.raises(InvalidInput):
            parse_quarter(bad)
