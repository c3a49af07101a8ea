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

from datetime import date, datetime, timedelta

import pytest
from sqlmodel import select

from core import actions
from core.actions import Petition
from core.cases.models import Channel
from core.deadlines import sweeps
from core.errors import DomainError, InvalidInput
from core.followup.models import Survey
from core.platform import clock
from core.platform.db import session_scope
from core.platform.rules import load_rules
from core.reporting.scores import parse_quarter, quarter_scores
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


def _replay(session, start: datetime, end: datetime, as_of: datetime, points: dict) -> dict[str, tuple]:
    """The module's rules read the plain way, one event at a time: what the one query in
    core.reporting.scores must agree with, whatever the history."""
    from core.cases.models import Case, CaseEvent
    from core.followup.models import SurveyStatus
    from core.reporting.scores import ASSIGNING, ENDING, LEFT_OUT

    events: dict[int, list[CaseEvent]] = {}
    for ev in session.exec(select(CaseEvent).order_by(CaseEvent.case_id, CaseEvent.at, CaseEvent.id)).all():
        if ev.action in set(ASSIGNING) | ENDING | {"accept", "report_done"}:
            events.setdefault(ev.case_id, []).append(ev)
    out: dict[str, list] = {}
    for case_id, history in events.items():
        case = session.get(Case, case_id)
        answered = session.exec(select(Survey).where(Survey.case_id == case_id,
                                                     Survey.status == SurveyStatus.answered).order_by(Survey.id)).all()
        for i, assignment in enumerate(history):
            if assignment.action not in ASSIGNING or not start <= assignment.at < end:
                continue
            ended = next((ev for ev in history[i + 1:] if ev.action in ENDING), None)
            span = history[i + 1:history.index(ended)] if ended else history[i + 1:]
            if ended is not None and ended.action in LEFT_OUT:
                continue
            row = out.setdefault((assignment.data or {}).get("worker"), [0] * 8)
            away = ended is not None and ended.action in ("escalate", "dispatch")
            running = ended is None
            row[0] += 1
            accepts = [ev for ev in span if ev.action == "accept"]
            if accepts or away or (running and case.response_due is not None and case.response_due < as_of):
                row[1] += bool(accepts and accepts[0].on_time)
                row[2] += 1
            reports = [ev for ev in span if ev.action == "report_done"]
            if reports or away or (running and case.resolution_due is not None and case.resolution_due < as_of):
                row[3] += bool(reports and reports[-1].on_time)
                row[4] += 1
            row[5] += ended is not None and ended.action == "close"
            if ended is not None and ended.action in ("close", "reopen"):
                answer = next((sv for sv in answered if sv.answered_at is not None
                               and assignment.at <= sv.answered_at <= ended.at), None)
                if answer is not None and answer.satisfied in points:
                    row[6] += 1
                    row[7] += points[answer.satisfied]
    return {code: tuple(row) for code, row in out.items()}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_scores_agree_with_a_plain_replay_of_any_history(engine, seed):
    """Random lives of 40 cases across a quarter's edges (dispatches to either grid, accepts,
    reports, checks, answers that close or reopen, returns, escalations, merges), then the
    scores of the quarter, computed by the one query, against the plain replay above."""
    import random

    rng = random.Random(seed)
    with session_scope(engine) as session:
        district = build_district(session)
    grids = [district.grids["micro1"].id, district.grids["micro2"].id]
    now = utc(2026, 9, 20, 9, 0)
    numbers: list[str] = []
    # What may follow each status, with some steps more likely than others.
    steps = {"received": ["dispatch"], "reopened": ["dispatch"], "returned": ["dispatch"],
             "dispatched": ["accept"] * 4 + ["return", "escalate", "merge", "wait", "wait"],
             "accepted": ["report"] * 4 + ["escalate", "wait"], "in_progress": ["report"],
             "reported_done": ["verify", "verify", "report", "wait"], "verified": ["answer"] * 3 + ["wait"]}
    for _ in range(500):
        now = now + timedelta(hours=rng.random() * 20)
        clock.freeze(now)
        with session_scope(engine) as session:
            if not numbers or rng.random() < 0.12:
                case, _ = actions.submit_petition(session, Petition(channel=Channel.hotline, description="路灯",
                                                                    category_code="streetlight"))
                numbers.append(case.number)
                continue
            case = actions.get_case(session, rng.choice(numbers))
            step = rng.choice(steps.get(case.status.value, ["wait"]))
            try:
                if step == "dispatch":
                    actions.dispatch(session, case, actor="op", grid_id=rng.choice(grids))
                elif step == "accept":
                    actions.accept(session, case, actor="w")
                elif step == "report":
                    actions.report_done(session, case, actor="w", note="修好了")
                elif step == "verify":
                    actions.verify(session, case, actor="l")
                elif step == "answer":
                    survey = session.exec(select(Survey).where(Survey.case_id == case.id)
                                          .order_by(Survey.id.desc())).first()
                    if survey is not None:
                        actions.record_survey(session, survey, solved=rng.choice(["solved", "not"]),
                                              satisfied=rng.choice(["satisfied", "basically", "not"]))
                elif step == "return":
                    actions.return_case(session, case, actor="w", reason="不归我们")
                elif step == "escalate":
                    actions.escalate(session, case, actor="system", reason="超时")
                elif step == "merge":
                    other = actions.get_case(session, rng.choice(numbers))
                    if other.id != case.id:
                        actions.merge(session, case, other, actor="op")
            except DomainError:
                session.rollback()
    clock.freeze(None)
    start, end = utc(2026, 10, 1, 0, 0), utc(2027, 1, 1, 0, 0)
    as_of = now
    with session_scope(engine) as session:
        points = {"satisfied": 100, "basically": 80, "not": 0}
        expected = _replay(session, start, end, as_of, points)
        from core.reporting.scores import scores_between

        got = {r.code: (r.assignments, r.response_on_time, r.response_counted, r.resolution_on_time,
                        r.resolution_counted, r.closed, r.evaluated, r.points)
               for r in scores_between(session, start, end, as_of=as_of, rules={"points": points})
               if r.assignments}
    expected = {code: row for code, row in expected.items() if code is not None}
    assert sum(row[0] for row in expected.values()) >= 20  # the history did give the quarter work
    assert got == expected


def test_too_few_cases_keep_their_figures_but_stand_unranked(engine, fixture):
    """Below ``min_cases`` assignments a score is "样本不足": its parts are still shown, but it
    stands for nothing and is ranked after the scores that do."""
    with session_scope(engine) as session:
        enough = {r.code: r for r in quarter_scores(session, "2026Q4", as_of=AS_OF, rules={"min_cases": 4})}
        rows = quarter_scores(session, "2026Q4", as_of=AS_OF, rules={"min_cases": 5})
    assert not enough["W-M2"].too_few and enough["W-M2"].standing_score == pytest.approx(62.0)
    m2 = {r.code: r for r in rows}["W-M2"]
    assert m2.too_few and m2.min_cases == 5
    assert m2.score == pytest.approx(62.0) and m2.standing_score is None
    assert m2.work_score == pytest.approx(60.0)  # the parts stay, so anyone can see why
    assert [r.code for r in rows if r.score is not None] == ["W-M2"]
    assert rows[0].code == "W-M2"  # the only computed score, though unranked: before those with none
    assert load_rules()["scores"]["min_cases"] >= 1  # the shipped rule says a minimum
