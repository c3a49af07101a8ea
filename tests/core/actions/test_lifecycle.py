"""The lifecycle: every legal transition, a sample of illegal ones, and invariants that no
sequence of actions may break. Runs on SQLite and PostgreSQL (the ``engine`` fixture)."""

from __future__ import annotations

import contextlib
import threading
from datetime import datetime

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlmodel import func, select

from core import actions
from core.actions import Petition
from core.cases.models import OPEN_STATUSES, Case, CaseEvent, CaseStatus, Channel
from core.errors import IllegalTransition, InvalidInput
from core.followup import survey_policy
from core.followup.models import Survey, SurveyStatus
from core.people.models import Resident
from core.places.models import GridLevel
from core.platform import clock, jobs
from core.platform.db import session_scope
from core.platform.models import Job
from tests.core.district import build_district

S = CaseStatus
# Tuesday 2026-11-17 09:00 in Shanghai, a working morning.
MORNING = datetime(2026, 11, 17, 1, 0)


@pytest.fixture
def district(engine):
    with session_scope(engine) as session:
        return build_district(session)


def petition(key: str | None = None, **kw) -> Petition:
    base = dict(channel=Channel.hotline, description="9幢门口的路灯坏了三天了", idempotency_key=key,
                contact_phone="+8613800138000", category_code="streetlight")
    base.update(kw)
    return Petition(**base)


def events_of(session, case) -> list[CaseEvent]:
    return list(session.exec(select(CaseEvent).where(CaseEvent.case_id == case.id).order_by(CaseEvent.id)).all())


def submit(engine, key=None, **kw) -> Case:
    with session_scope(engine) as session:
        case, _ = actions.submit_petition(session, petition(key, **kw), actor="test")
        return case


def act(engine, case_id: int, fn, *args, **kw) -> Case:
    with session_scope(engine) as session:
        case = actions.get_case(session, case_id)
        fn(session, case, *args, **kw)
        return case


def test_submit_writes_case_and_event(engine, district):
    clock.freeze(MORNING)
    case = submit(engine, "call-1")
    assert case.status == S.received
    assert case.number == "2611170001"  # YYMMDD in Shanghai + sequence
    assert case.resident_id == district.resident.id  # found by the caller's phone
    with session_scope(engine) as session:
        evs = events_of(session, case)
    assert [(e.action, e.from_status, e.to_status) for e in evs] == [("submit", None, S.received)]
    second = submit(engine)
    assert second.number == "2611170002"


def test_same_idempotency_key_gives_same_case(engine, district):
    first = submit(engine, "CA123")
    with session_scope(engine) as session:
        again, created = actions.submit_petition(session, petition("CA123"), actor="test")
    assert not created and again.id == first.id
    with session_scope(engine) as session:
        assert session.exec(select(func.count()).select_from(Case)).one() == 1


def test_empty_petition_is_refused(engine, district):
    with pytest.raises(InvalidInput), session_scope(engine) as session:
        actions.submit_petition(session, petition(description="   "))
    with session_scope(engine) as session:
        assert session.exec(select(func.count()).select_from(Case)).one() == 0


def test_full_lifecycle_to_satisfied_close(engine, district):
    clock.freeze(MORNING)
    case = submit(engine, "k")
    act(engine, case.id, actions.classify, actor="op:alice", category_code="flying_lead")
    case = act(engine, case.id, actions.dispatch, actor="op:alice", grid_id=district.grids["micro1"].id)
    assert case.status == S.dispatched and case.worker_id == district.workers["W-M1"].id
    assert case.owner_level == GridLevel.micro
    # flying lead: respond within 1 working hour, resolve within 8 (one working day)
    assert case.response_due == datetime(2026, 11, 17, 2, 0)
    assert case.resolution_due == datetime(2026, 11, 18, 1, 30)
    clock.freeze(datetime(2026, 11, 17, 1, 30))
    case = act(engine, case.id, actions.accept, actor="worker:W-M1")
    assert case.responded_on_time is True
    act(engine, case.id, actions.start, actor="worker:W-M1")
    clock.freeze(datetime(2026, 11, 18, 3, 0))  # after the resolution deadline
    case = act(engine, case.id, actions.report_done, actor="worker:W-M1", note="已拆除飞线，安装充电桩指引")
    assert case.resolved_on_time is False
    act(engine, case.id, actions.verify, actor="op:alice")
    with session_scope(engine) as session:
        survey = session.exec(select(Survey).where(Survey.case_id == case.id)).one()
        assert survey.channel == "phone"
        # The follow-up call is queued, and a handler takes it (ivr/survey_jobs.py): no orphan.
        call = session.exec(select(Job).where(Job.kind == "survey_phone")).one()
        assert call.payload == {"survey_id": survey.id, "case": case.number, "attempt": 1}
        assert call.run_at == clock.utcnow()  # 11:00 in Shanghai: inside calling hours
        assert jobs.KINDS["survey_phone"].startswith("ivr/survey_jobs.py")
        case = actions.record_survey(session, survey, solved="solved", satisfied="basically")
    assert case.status == S.closed and case.close_reason == "survey:basically"
    with session_scope(engine) as session:
        evs = events_of(session, case)
    assert [e.action for e in evs] == ["submit", "classify", "dispatch", "accept", "start", "report_done",
                                       "verify", "close"]
    # The chain of events is the history of the status.
    for before, after in zip(evs, evs[1:], strict=False):
        assert after.from_status == before.to_status
    on_time = {e.action: e.on_time for e in evs}
    assert on_time["accept"] is True and on_time["report_done"] is False


def _verified_case(engine, district) -> Case:
    case = submit(engine)
    act(engine, case.id, actions.dispatch, actor="op", grid_id=district.grids["micro1"].id)
    act(engine, case.id, actions.accept, actor="w")
    act(engine, case.id, actions.report_done, actor="w", note="修好了")
    return act(engine, case.id, actions.verify, actor="op")


def test_dissatisfied_reopens_then_escalates(engine, district):
    case = _verified_case(engine, district)
    with session_scope(engine) as session:
        survey = session.exec(select(Survey).where(Survey.case_id == case.id)).one()
        case = actions.record_survey(session, survey, solved="not", satisfied="not", comment="灯还是不亮")
    assert case.status == S.reopened and case.reopen_count == 1
    assert case.response_due is None and case.worker_id is None
    # Second round, dissatisfied again: reopened and handed one level up at once.
    act(engine, case.id, actions.dispatch, actor="op")
    act(engine, case.id, actions.accept, actor="w")
    act(engine, case.id, actions.report_done, actor="w", note="换了灯泡")
    act(engine, case.id, actions.verify, actor="op")
    with session_scope(engine) as session:
        survey = session.exec(
            select(Survey).where(Survey.case_id == case.id, Survey.status == SurveyStatus.pending)
        ).one()
        case = actions.record_survey(session, survey, solved="partly", satisfied="not")
    assert case.status == S.dispatched and case.owner_level == GridLevel.area
    assert case.worker_id == district.workers["W-A"].id


def test_failed_check_sends_back_to_owner(engine, district):
    case = submit(engine)
    act(engine, case.id, actions.dispatch, actor="op", grid_id=district.grids["micro2"].id)
    act(engine, case.id, actions.accept, actor="w")
    act(engine, case.id, actions.report_done, actor="w", note="done")
    with pytest.raises(InvalidInput):
        act(engine, case.id, actions.verify, actor="op", passed=False)
    case = act(engine, case.id, actions.verify, actor="op", passed=False, note="现场核查灯仍不亮")
    assert case.status == S.in_progress and case.reported_done_at is None
    assert case.worker_id == district.workers["W-M2"].id


def test_return_and_redispatch(engine, district):
    case = submit(engine)
    act(engine, case.id, actions.dispatch, actor="op", grid_id=district.grids["micro1"].id)
    case = act(engine, case.id, actions.return_case, actor="w", reason="不在本网格，属于隔壁小区")
    assert case.status == S.returned and case.worker_id is None and case.response_due is None
    case = act(engine, case.id, actions.dispatch, actor="op", grid_id=district.grids["micro2"].id)
    assert case.worker_id == district.workers["W-M2"].id


def test_escalation_climbs_the_ladder_and_stops_at_top(engine, district):
    case = submit(engine)
    act(engine, case.id, actions.dispatch, actor="op", grid_id=district.grids["micro1"].id)
    resolution_due = act(engine, case.id, actions.accept, actor="w").resolution_due
    seen = []
    for _ in range(4):
        case = act(engine, case.id, actions.escalate, actor="system", reason="超期未办结")
        seen.append((case.owner_level.value, case.worker_id))
        assert case.status == S.dispatched and case.resolution_due == resolution_due
    w = district.workers
    assert seen == [("area", w["W-A"].id), ("community", w["W-C"].id), ("street", w["W-S"].id),
                    ("district", w["W-D"].id)]
    with pytest.raises(IllegalTransition):
        act(engine, case.id, actions.escalate, actor="system", reason="again")


def test_merge_duplicate(engine, district):
    first = submit(engine)
    dup = submit(engine)
    case = act(engine, dup.id, actions.merge, act_into(engine, first.id), actor="op", reason="同一路灯")
    assert case.status == S.merged and case.merged_into_id == first.id
    with session_scope(engine) as session:
        absorbed = events_of(session, first)[-1]
    assert absorbed.action == "absorb" and absorbed.data == {"duplicate": dup.number}
    with pytest.raises(InvalidInput):
        act(engine, first.id, actions.merge, act_into(engine, first.id), actor="op")


def act_into(engine, case_id) -> Case:
    with session_scope(engine) as session:
        return actions.get_case(session, case_id)


def test_close_from_triage_needs_reason(engine, district):
    case = submit(engine)
    with pytest.raises(InvalidInput):
        act(engine, case.id, actions.close, actor="op", reason=" ")
    case = act(engine, case.id, actions.close, actor="op", reason="咨询类，已当场答复")
    assert case.status == S.closed


def test_the_step_that_settles_a_flag_clears_it_and_says_so(engine, district):
    """Issue 26: a closed case carried needs_triage. The step whose rules ([flags.settled_by])
    name a flag removes it in its own event, whoever takes the step; transcript_pending
    stays until the words are recognised."""
    doubtful = ("needs_triage", "low_confidence", "transcript_pending")
    dispatched = submit(engine, flags=doubtful)
    case = act(engine, dispatched.id, actions.dispatch, actor="demo:operator", grid_id=district.grids["micro1"].id)
    assert case.flags == ["low_confidence", "transcript_pending"]
    with session_scope(engine) as session:
        assert events_of(session, case)[-1].data["flags_cleared"] == ["needs_triage"]
    closed = submit(engine, flags=doubtful)
    case = act(engine, closed.id, actions.close, actor="cli", reason="咨询类，已当场答复")
    assert case.flags == ["transcript_pending"]
    with session_scope(engine) as session:
        close_event = events_of(session, case)[-1]
    assert close_event.action == "close" and close_event.data == {"flags_cleared": ["needs_triage", "low_confidence"]}
    first, dup = submit(engine), submit(engine, flags=("suggested_duplicate",))
    case = act(engine, dup.id, actions.merge, act_into(engine, first.id), actor="op")
    assert case.flags is None
    plain = submit(engine)
    case = act(engine, plain.id, actions.close, actor="op", reason="咨询类")
    with session_scope(engine) as session:
        assert events_of(session, case)[-1].data is None  # nothing to settle, nothing said


def test_unreachable_resident_closes_not_evaluated(engine, district):
    case = _verified_case(engine, district)
    with session_scope(engine) as session:
        survey = session.exec(select(Survey).where(Survey.case_id == case.id)).one()
        case = actions.survey_unreachable(session, survey)
    assert case.status == S.closed and case.close_reason == "not_evaluated"


ILLEGAL = [
    ("accept", S.received, {}),
    ("start", S.dispatched, {}),
    ("report_done", S.dispatched, {"note": "x"}),
    ("verify", S.accepted, {}),
    ("reopen", S.received, {"reason": "x"}),
    ("return_case", S.received, {"reason": "x"}),
    ("escalate", S.received, {"reason": "x"}),
    ("dispatch", S.dispatched, {}),
    ("close", S.dispatched, {"reason": "x"}),
]


@pytest.mark.parametrize(("action", "status", "kw"), ILLEGAL, ids=[a for a, _, _ in ILLEGAL])
def test_illegal_transitions_write_nothing(engine, district, action, status, kw):
    case = submit(engine)
    if status == S.dispatched:
        act(engine, case.id, actions.dispatch, actor="op", grid_id=district.grids["micro1"].id)
    elif status == S.accepted:
        act(engine, case.id, actions.dispatch, actor="op", grid_id=district.grids["micro1"].id)
        act(engine, case.id, actions.accept, actor="w")
    with session_scope(engine) as session:
        before = len(events_of(session, case))
    with pytest.raises(IllegalTransition) as err:
        act(engine, case.id, getattr(actions, action), actor="op", **kw)
    assert "cannot" in str(err.value)
    with session_scope(engine) as session:
        after = actions.get_case(session, case.id)
        assert after.status == status
        assert len(events_of(session, after)) == before


def test_chat_resident_is_notified_of_status_changes(engine, district):
    with session_scope(engine) as session:
        resident = session.get(Resident, district.resident.id)
        resident.chat_id = "424242"
        session.add(resident)
    case = submit(engine, channel=Channel.chat, resident_id=district.resident.id)
    act(engine, case.id, actions.dispatch, actor="op", grid_id=district.grids["micro1"].id)
    with session_scope(engine) as session:
        jobs = session.exec(select(Job).where(Job.kind == "notify_resident").order_by(Job.id)).all()
    # "received" is told in the dialog itself; the rules list what comes after.
    assert [j.payload["status"] for j in jobs] == ["dispatched"]
    assert all(j.payload["chat_id"] == "424242" for j in jobs)


def test_concurrent_intake_with_one_key_makes_one_case(engine, district):
    """Two workers file the same CallSid at the same moment (PostgreSQL is where this bites)."""
    barrier = threading.Barrier(4)
    results: list[tuple[int, bool]] = []
    errors: list[BaseException] = []

    def worker():
        try:
            barrier.wait()
            with session_scope(engine) as session:
                case, created = actions.submit_petition(session, petition("CA-race"), actor="t")
                results.append((case.id, created))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len({cid for cid, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    with session_scope(engine) as session:
        assert session.exec(select(func.count()).select_from(Case)).one() == 1


# ---------------------------------------------------------------- state machine


def check_invariants(session, case: Case) -> None:
    evs = events_of(session, case)
    assert evs[-1].to_status == case.status, "the last event says what the status is"
    for before, after in zip(evs, evs[1:], strict=False):
        assert after.from_status == before.to_status, "events form one unbroken chain"
    owned = case.status in actions.OWNED
    if owned:
        assert case.worker_id is not None and case.owner_level is not None, "an owned case has one owner"
    if case.status in (S.received, S.returned, S.reopened, S.merged):
        assert case.worker_id is None, "a case in triage has no owner"
        assert case.response_due is None and case.resolution_due is None, "no clocks before dispatch"
    assert (case.response_due is None) == (case.dispatched_at is None), "deadlines only when dispatched"
    if case.status in OPEN_STATUSES and case.status != S.verified:
        assert case.closed_at is None


def test_no_sequence_of_actions_breaks_the_invariants(engine, district):
    micro = [district.grids["micro1"].id, district.grids["micro2"].id]

    class Lifecycle(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            self.case_id = submit(engine).id

        def _try(self, fn, **kw):
            # A refusal is fine; the invariants must hold either way.
            with contextlib.suppress(IllegalTransition, InvalidInput):
                act(engine, self.case_id, fn, actor="hyp", **kw)

        @rule(grid=st.sampled_from(micro))
        def dispatch(self, grid):
            self._try(actions.dispatch, grid_id=grid)

        @rule()
        def accept(self):
            self._try(actions.accept)

        @rule()
        def start(self):
            self._try(actions.start)

        @rule()
        def report_done(self):
            self._try(actions.report_done, note="done")

        @rule(passed=st.booleans())
        def verify(self, passed):
            self._try(actions.verify, passed=passed, note="checked")

        @rule()
        def reopen(self):
            self._try(actions.reopen, reason="again")

        @rule()
        def return_case(self):
            self._try(actions.return_case, reason="not ours")

        @rule()
        def escalate(self):
            self._try(actions.escalate, reason="late")

        @rule()
        def close(self):
            self._try(actions.close, reason="done")

        @rule(category=st.sampled_from(["streetlight", "flying_lead"]))
        def classify(self, category):
            self._try(actions.classify, category_code=category)

        @rule(solved=st.sampled_from(survey_policy.solved_scale()),
              satisfied=st.sampled_from(survey_policy.satisfied_scale()))
        def survey(self, solved, satisfied):
            with session_scope(engine) as session:
                survey = session.exec(select(Survey).where(
                    Survey.case_id == self.case_id, Survey.status == SurveyStatus.pending)).first()
                if survey is None:
                    return
                with contextlib.suppress(IllegalTransition):
                    actions.record_survey(session, survey, solved=solved, satisfied=satisfied)

        @invariant()
        def holds(self):
            with session_scope(engine) as session:
                check_invariants(session, actions.get_case(session, self.case_id))

    run_state_machine_as_test(
        Lifecycle,
        settings=settings(max_examples=25, stateful_step_count=12, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]),
    )
