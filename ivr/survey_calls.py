"""The follow-up call's database work: attempts (``SurveyCall``), the call's own state
(``CallSession`` by CallSid, as for the hotline), and every change of the survey through
``core.actions`` (an attempt, each answer, the comment, how the call ended).

Synchronous functions, one transaction each; ``ivr/survey_jobs.py`` and
``ivr/survey_web.py`` run them off the event loop.

Exactly once: before ``calls.create`` an attempt is written down with a random token
(``prepare_attempt``); every URL of the call carries it. The attempt is *placed* — its
CallSid stored with the survey's ``survey_attempt`` event, one transaction — by whichever
comes first: the process after ``calls.create`` returned (``record_placed``), or the first
request of that call carrying the token (Twilio's "initiated" callback, the answer). A
process that died in between leaves the token written down: the next process looks for the
call at Twilio before placing another (``ivr.twilio_api.TwilioApi.find_calls``). How the
call ended is settled once, when it is both placed and over (``call_status``); repeated
or late callbacks change nothing.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from core import actions
from core.cases.models import CallSession, Case, Category
from core.errors import DomainError
from core.followup import survey_policy
from core.followup.models import Survey, SurveyStatus
from core.places.models import Grid, GridLevel
from core.platform import jobs, media_types, uploads
from core.platform.clock import utcnow
from core.platform.db import savepoint, session_scope
from core.platform.media import LocalStore, MediaStore
from core.platform.models import ChannelState
from core.platform.storage import data_dir as data_dir_default
from core.platform.storage import resolve, stored_path
from ivr.loudness import pcm_speech_seconds
from ivr.models import SurveyCall
from ivr.spool import mark_held
from ivr.state import Recording, recording_path
from speech_models.audio import AudioError, read_wav, repair_wav_header

log = logging.getLogger(__name__)

ACTOR = "survey:phone"  # the machine placing the calls
RESIDENT = "resident:phone"  # the resident answering them
TERMINAL = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
CHECK_JOB = jobs.declare("survey_call_check", "ivr/survey_jobs.py: reads a follow-up call's status when no callback came")
COMMENT_JOB = jobs.declare("transcribe_survey_comment",
                           "ivr/survey_jobs.py: recognises a follow-up comment (speech runners)")
# A call not over this long after it was placed is looked up at Twilio (callbacks get lost).
CHECK_AFTER = timedelta(minutes=20)
PACE = ("survey_phone", "pace")  # ChannelState row: the next moment a call may be placed


class Refused(Exception):
    """A webhook whose token is not this survey's, or whose call is another."""


# ---------------------------------------------------------------- the call's own state


class SurveyCallState(BaseModel):
    """What the follow-up call knows, in ``CallSession.state``. ``segments`` has the shape
    the hotline's stream token check reads (``ivr.calls.stream_path``): the comment's WAV
    path is on record before Twilio opens its stream."""

    model_config = ConfigDict(extra="ignore")

    survey_call: bool = True
    step: str = "solved"  # a question, "comment", "done"
    tries: int = 0  # no key / wrong key / no spoken answer on the current question
    listening: bool = False  # answers are heard by voice too (a recogniser takes the phrase lists)
    answer_segment: str = ""  # the current question's answer turn on the stream
    answer_turns: int = 0  # answer turns begun (each its own segment)
    answers: dict[str, str | None] = Field(default_factory=dict)
    comment_segment: str = ""
    comment_taken: bool = False
    segments: dict[str, Recording] = Field(default_factory=dict)

    def dump(self) -> dict:
        return self.model_dump(mode="json")


@dataclass
class CallView:
    """A webhook's view of the call: the survey, the attempt, the state, the petition."""

    survey_id: int
    attempt: int
    call_sid: str
    pending: bool  # the survey still waits for answers
    state: SurveyCallState
    stream_token: str | None = None
    answer_segment: str = ""  # the first question's answer turn, when answers are heard by voice
    intro_date: datetime | None = None  # local
    category: str | None = None
    community: str | None = None


# ---------------------------------------------------------------- before the call


@dataclass
class AttemptPlan:
    """What the ``survey_phone`` job does next."""

    action: Literal["call", "reconcile", "wait", "done"]
    why: str = ""
    survey_id: int = 0
    attempt: int = 0
    survey_call_id: int | None = None
    token: str = ""
    to: str = ""
    intent_at: datetime | None = None
    wait: timedelta | None = None
    slot: float | None = None  # epoch seconds: not before this (calls per second)


def _lock(session: Session, model: Any, *where: Any) -> Any:
    """The row, locked until the transaction ends, on both databases: ``SELECT … FOR
    UPDATE`` on PostgreSQL; SQLite has no row locks, so a no-op UPDATE first takes its write
    lock for the whole transaction (a read before it could be stale by the time it writes)."""
    if session.get_bind().dialect.name == "sqlite":
        key = sa_inspect(model).primary_key[0]
        session.execute(update(model).where(*where).values({key.name: key})
                        .execution_options(synchronize_session=False))
    return session.exec(select(model).where(*where).with_for_update()).first()


def _locked_survey(session: Session, survey_id: int) -> Survey | None:
    return _lock(session, Survey, Survey.id == survey_id)


def _attempt_row(session: Session, survey_id: int, attempt: int) -> SurveyCall | None:
    return _lock(session, SurveyCall, SurveyCall.survey_id == survey_id, SurveyCall.attempt == attempt)


def reserve_slot(session: Session, calls_per_second: float) -> float:
    """The moment (epoch seconds) the next call may be placed, at most ``calls_per_second``
    across every process: one row, locked. Real time, not ``core.platform.clock`` (a rate)."""
    where = (ChannelState.namespace == PACE[0], ChannelState.key == PACE[1])
    row = _lock(session, ChannelState, *where)
    if row is None:
        try:
            with savepoint(session):
                row = ChannelState(namespace=PACE[0], key=PACE[1], data={"next": 0.0})
                session.add(row)
                session.flush()
        except IntegrityError:  # another process made it first
            row = _lock(session, ChannelState, *where)
    now = time.time()
    slot = max(now, float((row.data or {}).get("next") or 0.0))
    row.data = {"next": slot + 1.0 / calls_per_second}
    row.updated_at = utcnow()
    session.add(row)
    return slot


def reserve_slot_in(engine: Engine, calls_per_second: float) -> float:
    with session_scope(engine) as session:
        return reserve_slot(session, calls_per_second)


def _stop_calling(session: Session, survey: Survey, follow: str, why: str) -> None:
    if follow == "manual":
        actions.survey_to_manual(session, survey, actor=ACTOR, reason=why)
    else:
        actions.survey_unreachable(session, survey, actor=ACTOR, reason=why)


def prepare_attempt(engine: Engine, survey_id: int, attempt: int, *, any_time: bool = False) -> AttemptPlan:
    """Whether attempt ``attempt`` of the survey is to be called now, and how: written down
    with its token before the call (``call``), looked for at Twilio first because an earlier
    process wrote it down and never recorded it (``reconcile``), not yet (``wait``: outside
    calling hours, unless ``any_time``: a local simulation), or not at all (``done``)."""
    rules = survey_policy.phone_rules()
    with session_scope(engine) as session:
        survey = _locked_survey(session, survey_id)
        if survey is None:
            return AttemptPlan("done", f"no survey {survey_id}")
        row = _attempt_row(session, survey_id, attempt)
        if row is not None and (row.placed_at is not None or row.ended_at is not None):
            return AttemptPlan("done", "this attempt was placed already")
        if row is not None and row.call_sid:  # a request of the call came, the process died
            _record_placed(session, row, row.call_sid, actor=ACTOR)
            return AttemptPlan("done", "this attempt was placed already (recorded from its callback)")
        if survey.status != SurveyStatus.pending or survey.channel != "phone":
            return AttemptPlan("done", f"survey is {survey.status.value} on {survey.channel}")
        if survey.attempts >= attempt:
            return AttemptPlan("done", f"attempt {attempt} was made already")
        case = session.get(Case, survey.case_id)
        if case is None or not actions.awaits_answer(case, survey):
            return AttemptPlan("done", "the case is no longer waiting for its follow-up")
        caller = actions.caller_case(session, survey)  # a merged duplicate's caller is called on their number
        resident = actions.contact_resident(session, caller)
        if resident is not None and resident.do_not_call:
            _stop_calling(session, survey, rules.do_not_call, "resident asked not to be called")
            return AttemptPlan("done", "resident asked not to be called")
        to = actions.phone_to_call(caller, resident)
        if to is None:
            actions.survey_to_manual(session, survey, actor=ACTOR, reason="no number to call back")
            return AttemptPlan("done", "no number to call back")
        now = utcnow()
        hours = survey_policy.calling_hours(session)
        if not hours.allowed(now) and not any_time:
            return AttemptPlan("wait", "outside calling hours", wait=hours.next_allowed(now) - now)
        plan = AttemptPlan("call", survey_id=survey_id, attempt=attempt, to=to)
        if row is not None:  # written down by a process that died before recording it
            plan.action, plan.why = "reconcile", "a call may have been placed by a process that died"
        else:
            row = SurveyCall(survey_id=survey_id, attempt=attempt, token=secrets.token_urlsafe(24), intent_at=now)
            session.add(row)
            session.flush()
            plan.slot = reserve_slot(session, rules.calls_per_second)
        plan.survey_call_id, plan.token, plan.intent_at = row.id, row.token, row.intent_at
        return plan


# ---------------------------------------------------------------- placed, ended


def _record_placed(session: Session, row: SurveyCall, call_sid: str, *, actor: str) -> bool:
    """Store the CallSid and count the attempt (``survey_attempt`` event), one transaction.
    Returns whether this recorded it (``False``: recorded before)."""
    if row.placed_at is not None:
        if row.call_sid != call_sid:
            log.warning("survey %s attempt %s: placed as %s, now also %s?", row.survey_id, row.attempt,
                        row.call_sid, call_sid)
        return False
    row.call_sid = row.call_sid or call_sid
    row.placed_at = utcnow()
    session.add(row)
    survey = _locked_survey(session, row.survey_id)
    if survey is not None and survey.status == SurveyStatus.pending:
        actions.survey_attempt(session, survey, actor=actor, outcome="placed",
                               data={"call_sid": row.call_sid, "call_attempt": row.attempt})
    jobs.enqueue(session, CHECK_JOB, {"survey_call_id": row.id}, run_at=row.placed_at + CHECK_AFTER,
                 dedupe_key=f"{CHECK_JOB}:{row.id}")
    if row.status in TERMINAL:  # the call ended before it was recorded (callback first)
        _settle(session, row)
    return True


def _locked_attempt(session: Session, survey_call_id: int) -> SurveyCall:
    survey_id = session.exec(select(SurveyCall.survey_id).where(SurveyCall.id == survey_call_id)).one()
    _locked_survey(session, survey_id)  # survey first, as everywhere
    return _lock(session, SurveyCall, SurveyCall.id == survey_call_id)


def record_placed(engine: Engine, survey_call_id: int, call_sid: str) -> bool:
    """After ``calls.create`` returned ``call_sid``."""
    with session_scope(engine) as session:
        row = _locked_attempt(session, survey_call_id)
        return _record_placed(session, row, call_sid, actor=ACTOR)


def placing_failed(engine: Engine, survey_call_id: int, error: str) -> str:
    """Twilio refused the call (an invalid number): the attempt counts, as failed."""
    with session_scope(engine) as session:
        row = _locked_attempt(session, survey_call_id)
        if row.placed_at is not None or row.ended_at is not None:
            return "done"
        survey = _locked_survey(session, row.survey_id)
        row.placed_at = utcnow()
        row.status = "failed"
        if survey is not None and survey.status == SurveyStatus.pending:
            actions.survey_attempt(session, survey, actor=ACTOR, outcome="refused",
                                   data={"call_attempt": row.attempt, "error": error[:300]})
        return _settle(session, row)


def _outcome(row: SurveyCall) -> str:
    if row.status != "completed":
        return row.status.replace("-", "_")  # busy, no_answer, failed, canceled
    if (row.answered_by or "").startswith(("machine", "fax")):
        return "machine"
    return row.result or "no_response"


def _settle(session: Session, row: SurveyCall) -> str:
    """The call is placed and over: how it went, and what follows (by the rules)."""
    row.outcome = _outcome(row)
    row.ended_at = utcnow()
    session.add(row)
    survey = _locked_survey(session, row.survey_id)
    if survey is None:
        return "done"
    return actions.survey_call_outcome(session, survey, attempt=row.attempt, outcome=row.outcome, actor=ACTOR,
                                       data={"call_sid": row.call_sid, "status": row.status,
                                             "answered_by": row.answered_by})


def _by_token(session: Session, survey_id: int, token: str, call_sid: str | None) -> SurveyCall:
    """The attempt this token belongs to, refusing a token of another survey, or a request of
    another call than the one the attempt placed. Locks are always taken in the order
    survey, attempt, call session (no two transactions wait for each other)."""
    _locked_survey(session, survey_id)
    row = _lock(session, SurveyCall, SurveyCall.token == token) if token else None
    if row is None or row.survey_id != survey_id:
        raise Refused("survey token unknown or not this survey's")
    if call_sid and row.call_sid and row.call_sid != call_sid:
        raise Refused(f"survey token of call {row.call_sid} used by call {call_sid}")
    return row


def check_token(engine: Engine, survey_id: int, token: str, call_sid: str) -> None:
    with session_scope(engine) as session:
        _by_token(session, survey_id, token, call_sid)


def call_status(engine: Engine, survey_id: int, token: str, call_sid: str, status: str,
                answered_by: str | None = None) -> str | None:
    """A status callback (or a status read at Twilio). Returns what followed when this
    settled the attempt, else ``None``. Repeated and late (out-of-order) callbacks are
    harmless: a terminal status is kept, and an attempt is settled once."""
    with session_scope(engine) as session:
        row = _by_token(session, survey_id, token, call_sid)
        if row.ended_at is not None:
            return None
        if call_sid and not row.call_sid:
            row.call_sid = call_sid
        if answered_by:
            row.answered_by = answered_by[:24]
        if status and row.status not in TERMINAL:
            row.status = status[:24]
        session.add(row)
        if row.placed_at is None and row.call_sid:
            _record_placed(session, row, row.call_sid, actor=ACTOR)  # settles it too when over
            return row.outcome
        if row.status in TERMINAL:
            return _settle(session, row)
        return None


def survey_call_by_id(engine: Engine, survey_call_id: int) -> SurveyCall | None:
    with session_scope(engine) as session:
        return session.get(SurveyCall, survey_call_id)


# ---------------------------------------------------------------- in the call


def _local(at: datetime, tz: str) -> datetime:
    return at.replace(tzinfo=ZoneInfo("UTC")).astimezone(ZoneInfo(tz)).replace(tzinfo=None)


def _community(session: Session, grid_id: int | None) -> str | None:
    grid = session.get(Grid, grid_id) if grid_id else None
    while grid is not None and grid.level != GridLevel.community:
        grid = session.get(Grid, grid.parent_id) if grid.parent_id else None
    return grid.name if grid is not None else None


def _locked_session(session: Session, call_sid: str) -> CallSession | None:
    return _lock(session, CallSession, CallSession.call_sid == call_sid)


def _view(session: Session, row: SurveyCall, call: CallSession, tz: str) -> CallView:
    survey = session.get(Survey, row.survey_id)
    case = session.get(Case, survey.case_id)
    category = session.get(Category, case.category_id) if case.category_id else None
    # the day the person called reported it (a merged duplicate's caller: their own call)
    reported = actions.caller_case(session, survey).created_at
    return CallView(survey_id=survey.id, attempt=row.attempt, call_sid=call.call_sid,
                    pending=survey.status == SurveyStatus.pending, state=SurveyCallState.model_validate(call.state or {}),
                    stream_token=call.stream_token, intro_date=_local(reported, tz),
                    category=category.name if category else None, community=_community(session, case.grid_id))


def answered(engine: Engine, survey_id: int, token: str, call_sid: str, *, to_number: str | None,
             answered_by: str | None, tz: str, listen: bool = False) -> CallView | None:
    """Twilio requests the call's TwiML: the callee picked up. The attempt is placed (if
    the process has not recorded it yet), the call's session opened. ``None``: an answering
    machine (nothing is said to it). ``listen``: the answers are heard by voice too; the
    first question's answer turn is planned (its WAV path on record before the stream)."""
    with session_scope(engine) as session:
        row = _by_token(session, survey_id, token, call_sid)
        row.call_sid = row.call_sid or call_sid
        if answered_by:
            row.answered_by = answered_by[:24]
        if row.status not in TERMINAL:
            row.status = "in-progress"
        session.add(row)
        if row.placed_at is None:
            _record_placed(session, row, call_sid, actor=ACTOR)
        if (answered_by or "").startswith(("machine", "fax")):
            return None
        survey = session.get(Survey, survey_id)
        call = _locked_session(session, call_sid)
        if call is None:
            call = CallSession(call_sid=call_sid, direction="outbound", to_number=to_number, status="in-progress",
                               stream_token=secrets.token_urlsafe(24), survey_id=survey_id, case_id=survey.case_id,
                               state=SurveyCallState(listening=listen).dump())
            session.add(call)
            session.flush()
            state = SurveyCallState.model_validate(call.state)
            if state.listening and not state.answers:
                _begin_answer_turn(call, state, state.step)
                _store(session, call, state)
        view = _view(session, row, call, tz)
        view.answer_segment = view.state.answer_segment if view.state.step in ("solved", "satisfied") else ""
        return view


@dataclass
class Step:
    """What the call says next (``ivr/survey_web.py`` renders it). ``segment`` is the turn
    the caller speaks in (the comment, or a question's answer when answers are heard by
    voice); ``stop`` an answer turn whose stream is still open."""

    kind: Literal["question", "comment", "goodbye", "operator"]
    question: str = ""
    notice: str | None = None
    goodbye: str = ""
    segment: str = ""
    stream_token: str = ""
    stop: str = ""
    tries: int = 0  # asked this many times before (a retry names the keys)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Spoken:
    """What the caller's answer turn gave (``ivr/survey_web.py`` matched it): the words
    heard, the answer they name (``None``: none, or two), and the turn's recording."""

    segment: str
    text: str = ""
    answer: str | None = None
    recording: Recording | None = None

    @property
    def speech_s(self) -> float:
        return self.recording.speech_s if self.recording is not None else 0.0


def _begin_answer_turn(call: CallSession, state: SurveyCallState, question: str) -> str:
    """A new answer turn for ``question``: its segment and WAV path on record now, before
    Twilio opens its stream (the stream's token check reads them). Returns the turn it
    replaces (its stream to stop), if any."""
    previous = state.answer_segment
    state.answer_turns += 1
    segment = f"answer-{question}-{state.answer_turns}"
    state.answer_segment = segment
    state.segments[segment] = Recording(kind="petition", audio_path=recording_path(call.call_sid, segment))
    return previous


def _end_answer_turn(state: SurveyCallState) -> str:
    """No more answers are heard: the stream of the last answer turn is to stop."""
    previous, state.answer_segment = state.answer_segment, ""
    return previous


def _ask(call: CallSession, state: SurveyCallState, question: str, notice: str | None = None) -> Step:
    """Ask ``question`` (again): with a new answer turn when answers are heard by voice."""
    step = Step("question", question=question, notice=notice, tries=state.tries)
    if state.listening:
        step.stop = _begin_answer_turn(call, state, question)
        step.segment, step.stream_token = state.answer_segment, call.stream_token or ""
    return step


def _next_question(state: SurveyCallState, order: list[str]) -> str | None:
    for q in order:
        if q not in state.answers:
            return q
    return None


def _finish_answers(session: Session, row: SurveyCall, call: CallSession, state: SurveyCallState,
                    survey: Survey) -> Step:
    """Both questions asked: with both answers the survey is recorded now (durable first; the
    comment may follow); with an answer missing the attempt ends without a result."""
    solved, satisfied = state.answers.get("solved"), state.answers.get("satisfied")
    if solved and satisfied and survey.status == SurveyStatus.pending:
        try:
            actions.record_survey(session, survey, solved=solved, satisfied=satisfied, actor=RESIDENT)
        except DomainError as exc:  # the case moved on meanwhile (an operator reopened it)
            log.warning("survey %s: answers not recorded: %s", survey.id, exc)
            state.step = "done"
            return Step("goodbye", goodbye="thanks", stop=_end_answer_turn(state))
        row.result = "answered"
        session.add(row)
        segment = "comment-1"
        stop = _end_answer_turn(state)
        state.step = "comment"
        state.comment_segment = segment
        state.segments[segment] = Recording(kind="petition", audio_path=recording_path(call.call_sid, segment))
        return Step("comment", segment=segment, stream_token=call.stream_token or "", stop=stop)
    state.step = "done"
    return Step("goodbye", goodbye="thanks_no_answers", stop=_end_answer_turn(state))


def _store(session: Session, call: CallSession, state: SurveyCallState) -> None:
    call.state = state.dump()
    call.updated_at = utcnow()
    session.add(call)


def keypress(engine: Engine, survey_id: int, token: str, call_sid: str, question: str, digits: str,
             *, order: list[str], tries: int, keys: dict[str, str], operator_open: bool,
             spoken: Spoken | None = None) -> Step:
    """A key (or none) after a question. 1–3: the answer on the rules' scale (an answer
    event); none or another key: the question once more, then on without its answer;
    9: not the resident (the attempt ends ``wrong_person``); 0: the operator, if open.
    With no key, ``spoken`` is what the question's answer turn heard: an answer it names
    counts as its key would (the event says it was spoken, and what was heard); none is
    as no key. The turn's recording is kept in the call's state either way."""
    with session_scope(engine) as session:
        row = _by_token(session, survey_id, token, call_sid)
        call = _locked_session(session, call_sid)
        survey = _locked_survey(session, survey_id)
        if call is None or survey is None:
            raise Refused("no such survey call")
        state = SurveyCallState.model_validate(call.state or {})
        if state.step != question:  # a repeated webhook: say what is due now
            return current_step(state, call.stream_token)
        digit = (digits or "")[:1]
        heard = spoken if spoken is not None and spoken.segment and spoken.segment == state.answer_segment else None
        if heard is not None and heard.recording is not None:
            state.segments[heard.segment] = heard.recording
        if digit and digit == keys["wrong_person"]:
            row.result = "wrong_person"
            session.add(row)
            state.step = "done"
            stop = _end_answer_turn(state)
            _store(session, call, state)
            return Step("goodbye", goodbye="wrong_person", stop=stop)
        if digit and digit == keys["operator"]:
            if operator_open:
                row.result = "operator"
                session.add(row)
                stop = _end_answer_turn(state)  # the stream must not record the talk with the operator
                _store(session, call, state)
                return Step("operator", question=question, stop=stop)
            step = _ask(call, state, question, notice="operator_closed")
            _store(session, call, state)
            return step
        scale = (survey_policy.solved_scale() if question == "solved" else survey_policy.satisfied_scale())
        answer = scale[int(digit) - 1] if digit.isdigit() and 1 <= int(digit) <= len(scale) else None
        by_voice = not digit and heard is not None and heard.answer in scale
        if by_voice:
            answer = heard.answer
        pending = survey.status == SurveyStatus.pending
        if answer is None:
            state.tries += 1
            if state.tries < tries:
                step = _ask(call, state, question, notice=_no_answer_notice(digit, heard))
                _store(session, call, state)
                return step
        if pending:
            data: dict[str, Any] = {"call_sid": call_sid, "key": digit or None, "tries": state.tries + 1}
            if heard is not None and not digit:
                data.update(spoken=by_voice, heard=heard.text, segment=heard.segment)
            actions.survey_answer(session, survey, question=question, answer=answer, actor=RESIDENT, data=data)
        state.answers[question] = answer
        state.tries = 0
        following = _next_question(state, order)
        if following is not None:
            state.step = following
            step = _ask(call, state, following)
            _store(session, call, state)
            return step
        step = _finish_answers(session, row, call, state, survey)
        _store(session, call, state)
        return step


def _no_answer_notice(digit: str, heard: Spoken | None) -> str:
    """Why the question is asked again: a wrong key, words that name no answer, nothing."""
    if digit:
        return "invalid"
    if heard is None:
        return "no_input"
    return "not_understood" if heard.text or heard.speech_s > 0 else "no_answer"


def current_step(state: SurveyCallState, stream_token: str | None) -> Step:
    """What the call says when a webhook comes again for a step already taken (keys only:
    the answer turn's stream, if any, is open already)."""
    if state.step == "comment":
        return Step("comment", segment=state.comment_segment, stream_token=stream_token or "")
    if state.step == "done":
        return Step("goodbye", goodbye="thanks")
    return Step("question", question=state.step, tries=state.tries)


def operator_ended(engine: Engine, survey_id: int, token: str, call_sid: str, question: str,
                   dial_status: str) -> Step:
    """The <Dial> to the operator ended: talked (the operator records the answers on the
    manual-call list), or not (back to the question)."""
    with session_scope(engine) as session:
        row = _by_token(session, survey_id, token, call_sid)
        call = _locked_session(session, call_sid)
        state = SurveyCallState.model_validate(call.state or {}) if call is not None else SurveyCallState()
        if dial_status == "completed":
            row.result = "operator"
            session.add(row)
            state.step = "done"
            if call is not None:
                _store(session, call, state)
            return Step("goodbye", goodbye="operator_done")
        if row.result == "operator":
            row.result = None
            session.add(row)
        if call is None:
            return Step("question", question=question, notice="operator_busy")
        step = _ask(call, state, question, notice="operator_busy")
        _store(session, call, state)
        return step


def comment_file(recording: Recording, data_dir: Path | None, store: MediaStore | None = None,
                 spool: str = "") -> actions.FileRef | None:
    """The comment's WAV kept in the media store, as a file of the case (none when there
    is no audio in it: 44 bytes are a header)."""
    if recording.audio_path and recording.sha256 and recording.size and recording.size > 44:  # kept by ivr.spool
        return actions.FileRef(kind="survey_comment", path=recording.audio_path, mime_type=media_types.WAV,
                               size=recording.size, sha256=recording.sha256, waiting_in=recording.waiting_in)
    if not recording.audio_path:
        return None
    key = stored_path(resolve(recording.audio_path, data_dir), data_dir)
    # filed as waiting in the spool; take_comment uploads it once its transaction is committed
    return uploads.spooled_file(store or LocalStore(Path(data_dir) if data_dir else data_dir_default()), spool,
                                "survey_comment", key, media_types.WAV, min_bytes=45)


def take_comment(engine: Engine, survey_id: int, token: str | None, call_sid: str, recording: Recording | None,
                 *, min_speech_s: float, data_dir: Path | None, store: MediaStore | None = None,
                 spool: str = "") -> bool:
    """The comment turn ended (#, silence, hang-up): the recording is attached to the case
    and its words (if recognised in time) kept on the survey, through
    ``actions.survey_comment``; words still to come get a ``transcribe_survey_comment`` job
    in the same transaction. Returns whether a comment was kept. A comment still in this
    instance's spool is uploaded after the commit (no survey row held while the bucket
    answers)."""
    upload: list[str] = []
    kept = _take_comment(engine, survey_id, token, call_sid, recording, min_speech_s=min_speech_s,
                         data_dir=data_dir, store=store, spool=spool, upload=upload)
    if upload and store is not None:
        uploads.upload_after_commit(engine, store, upload, spool)
    return kept


def _take_comment(engine: Engine, survey_id: int, token: str | None, call_sid: str, recording: Recording | None,
                  *, min_speech_s: float, data_dir: Path | None, store: MediaStore | None, spool: str,
                  upload: list[str]) -> bool:
    with session_scope(engine) as session:
        if token:
            _by_token(session, survey_id, token, call_sid)
        else:
            _locked_survey(session, survey_id)
        call = _locked_session(session, call_sid)
        if call is None:
            return False
        state = SurveyCallState.model_validate(call.state or {})
        if state.comment_taken or state.step != "comment":
            return False
        state.comment_taken = True
        state.step = "done"
        kept = False
        if recording is not None:
            state.segments[state.comment_segment] = recording
            ref = comment_file(recording, data_dir, store, spool) if recording.speech_s >= min_speech_s else None
            survey = _locked_survey(session, survey_id)
            if ref is not None and survey is not None:
                text = recording.text.strip() if recording.final else None
                actions.survey_comment(session, survey, actor=RESIDENT, text=text, file=ref,
                                       data={"call_sid": call_sid, "speech_s": recording.speech_s})
                if recording.held:
                    mark_held(session, ref.path)
                if text is None:
                    jobs.enqueue(session, COMMENT_JOB, {"survey_id": survey_id, "call_sid": call_sid,
                                                        "segment": state.comment_segment, "path": ref.path},
                                 dedupe_key=f"{COMMENT_JOB}:{call_sid}", max_attempts=8)
                if spool and ref.waiting_in == spool and not recording.sha256:  # not tried as the turn ended
                    upload.append(ref.path)
                kept = True
        _store(session, call, state)
        return kept


def comment_pending(engine: Engine, call_sid: str) -> tuple[int, str, str] | None:
    """(survey id, segment, its WAV) of a call whose comment turn began and was not taken."""
    with session_scope(engine) as session:
        call = session.exec(select(CallSession).where(CallSession.call_sid == call_sid)).first()
        if call is None or call.survey_id is None:
            return None
        state = SurveyCallState.model_validate(call.state or {})
        if state.step != "comment" or state.comment_taken:
            return None
        planned = state.segments.get(state.comment_segment)
        return call.survey_id, state.comment_segment, (planned.audio_path if planned else "")


def comment_from_disk(engine: Engine, call_sid: str, data_dir: Path | None, speech_rms: float) -> Recording | None:
    """The pending comment measured from its WAV: its stream was served by a process that
    is gone (killed mid-comment) or by another one. Nobody writes the file any more (the
    call is over, or the turn ended), so its header is made true first, as the hotline's
    recovery does: a crash leaves up to a second of audio outside the header."""

    pending = comment_pending(engine, call_sid)
    if pending is None or not pending[2]:
        return None
    path = resolve(pending[2], data_dir)
    try:
        if repair_wav_header(path):
            log.info("survey comment %s of call %s: WAV header repaired", pending[2], call_sid)
        audio = read_wav(path)
    except (AudioError, OSError):
        return None
    return Recording(kind="petition", audio_path=pending[2], duration=round(audio.duration, 2), deferred=True,
                     speech_s=round(pcm_speech_seconds(audio.pcm, audio.sample_rate, speech_rms), 2),
                     ended_by="recovered")


def comment_words(engine: Engine, survey_id: int, call_sid: str, segment: str, heard: dict) -> bool:
    """The words of a comment recognised afterwards (the transcribe job)."""
    with session_scope(engine) as session:
        survey = _locked_survey(session, survey_id)
        if survey is None or survey.comment is not None:
            return False
        actions.survey_comment(session, survey, actor="survey:speech", text=(heard.get("text") or "").strip(),
                               data={"call_sid": call_sid, "segment": segment,
                                     "confidence": heard.get("confidence")})
        call = _locked_session(session, call_sid)
        if call is not None:
            state = SurveyCallState.model_validate(call.state or {})
            rec = state.segments.get(segment)
            if rec is not None:
                state.segments[segment] = rec.model_copy(update={
                    "text": heard.get("text") or "", "confidence": heard.get("confidence"),
                    "segments": heard.get("segments") or [], "final": True, "deferred": True})
                _store(session, call, state)
        return True


def comment_still_pending(engine: Engine, survey_id: int) -> bool:
    with session_scope(engine) as session:
        survey = session.get(Survey, survey_id)
        return survey is not None and survey.comment is None
