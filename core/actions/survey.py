"""Writers of the follow-up survey (回访): open it, count an attempt, record the answer
(from a phone keypad, chat buttons or an operator's call alike), give up; for the phone
follow-up also each answer as it is keyed, the spoken comment, how each call ended and
what follows (another attempt, the manual-call list, not evaluated)."""

from __future__ import annotations

from sqlmodel import Session

from core.actions._base import S, check, event
from core.actions.intake import FileRef, attach
from core.actions.operator import dispatch, reopen
from core.actions.survey_callers import (
    CHANNEL_JOBS,
    SURVEY_PHONE_JOB,
    ask_callers,
    awaits_answer,
    caller_case,
    contact_resident,
    end_caller_survey,
    queue_first_attempt,
    survey_channel,
    unanswered,
)
from core.cases import limits
from core.cases.models import Case
from core.deadlines.sla import next_owner_level
from core.errors import IllegalTransition, InvalidInput
from core.followup import survey_policy
from core.followup.models import SATISFIED, Survey, SurveyStatus
from core.places.models import GridLevel
from core.platform import jobs
from core.platform.clock import utcnow


def start_survey(session: Session, case: Case) -> Survey:
    """Open the follow-up and queue its first attempt on the resident's channel. A manual
    follow-up needs no job: the console's manual-call list is its queue. A phone follow-up
    is queued for the next calling hours. The caller of each duplicate merged into the case
    is asked too (``ask_callers``). Follow-ups of an earlier round still unanswered (the
    case was reopened meanwhile) end: this round replaces them. Returns the case's own
    caller's survey."""
    for stale in unanswered(session, case):
        end_caller_survey(session, case, stale, actor="system", reason="survey.superseded")
    resident = contact_resident(session, case)
    channel = survey_channel(case, resident)
    survey = Survey(case_id=case.id, channel="manual" if channel == "not_evaluated" else channel)
    session.add(survey)
    session.flush()
    if channel == "not_evaluated":  # do-not-call, and the rules say not to ask otherwise
        survey_unreachable(session, survey, reason="resident asked not to be called")
    elif channel in CHANNEL_JOBS:
        queue_first_attempt(session, survey, case)
    ask_callers(session, case)
    return survey


def _case_locked(session: Session, survey: Survey) -> Case:
    """The survey's case, its row locked and read afresh: two callers of a merged case may
    answer at once, and each answer counts and may close or reopen the case (a case read
    earlier in this transaction would be stale; pending changes are flushed first)."""
    return session.get(Case, survey.case_id, with_for_update=True, populate_existing=True)


def _pending(survey: Survey) -> None:
    if survey.status != SurveyStatus.pending:
        raise IllegalTransition(f"survey {survey.id} is already {survey.status.value}",
                                code="survey.already_answered", survey=survey.id, status=survey.status.value)


def survey_attempt(session: Session, survey: Survey, *, actor: str, outcome: str,
                   data: dict | None = None) -> Survey:
    """One try at reaching the resident (a call placed, a chat message sent) and how it
    went; the case's timeline shows every attempt."""
    _pending(survey)
    case = session.get(Case, survey.case_id)
    check(case, "annotate")
    survey.attempts += 1
    session.add(survey)
    event(session, case, "survey_attempt", actor, case.status, reason=outcome,
          data={"survey_id": survey.id, "attempt": survey.attempts, "outcome": outcome, **(data or {})})
    return survey


def record_survey(
    session: Session,
    survey: Survey,
    *,
    solved: str,
    satisfied: str,
    comment: str | None = None,
    actor: str = "resident",
    comment_heard: bool = False,
) -> Case:
    """A resident's answer. What it does is rules data (``core.followup.survey_policy``): a closing
    answer closes the case; any other reopens it, and after the allowed reopenings it is
    also dispatched one level up. A typed comment over ``[limits] comment`` is refused;
    one heard from a voice note (``comment_heard``) is kept up to the transcript cap."""
    solved_scale, satisfied_scale = survey_policy.solved_scale(), survey_policy.satisfied_scale()
    if solved not in solved_scale or satisfied not in satisfied_scale:
        raise InvalidInput(f"survey answers must be one of {solved_scale} and {satisfied_scale}",
                           code="survey.answers_out_of_scale")
    if comment_heard:
        comment, _ = limits.keep_words(comment)
    else:
        limits.check_text("comment", comment)
    _pending(survey)
    case = _case_locked(session, survey)
    if not awaits_answer(case, survey):
        check(case, "record_survey")
    survey.solved, survey.satisfied, survey.comment = solved, satisfied, comment
    survey.status = SurveyStatus.answered
    survey.answered_at = utcnow()
    session.add(survey)
    # The case carries its answers' counts for the figures (core.reporting.figures: the satisfaction rate).
    case.surveys_answered += 1
    case.surveys_satisfied += satisfied in SATISFIED
    answer = {"survey_id": survey.id, "solved": solved, "satisfied": satisfied}
    if survey.caller_case_id is not None:
        # A duplicate's caller: the answer is theirs, on the surviving case's timeline; the
        # case closes on its own caller's answer only, but either caller's "not" reopens it.
        duplicate = session.get(Case, survey.caller_case_id)
        answer["duplicate"] = duplicate.number if duplicate is not None else None
        event(session, case, "survey_result", actor, case.status, reason=comment,
              data={**answer, "closes": survey_policy.closes_case(solved, satisfied)})
        if survey_policy.closes_case(solved, satisfied):
            return case
    elif survey_policy.closes_case(solved, satisfied):
        case.closed_at = utcnow()
        case.close_reason = f"survey:{satisfied}"
        event(session, case, "close", actor, S.closed, reason=comment, data=answer, at=case.closed_at)
        return case
    reopen(session, case, actor=actor, reason=comment or "resident not satisfied")
    if case.reopen_count > survey_policy.reopenings_before_escalation() and case.grid_id:
        # Dissatisfied again: dispatch straight to the next level up.
        current = case.owner_level or GridLevel.micro
        dispatch(session, case, actor="system", level=next_owner_level(current) or current,
                 reason="dissatisfied again: dispatched one level up")
    return case


def survey_unreachable(session: Session, survey: Survey, *, actor: str = "system",
                       reason: str = "resident unreachable") -> Case:
    """All attempts failed (or the resident is not to be asked): the case closes as not
    evaluated (不参与评价)."""
    _pending(survey)
    case = _case_locked(session, survey)
    if survey.caller_case_id is not None:  # a duplicate's caller: the case does not close for them
        end_caller_survey(session, case, survey, actor=actor, reason="survey.caller_unreachable",
                           status=SurveyStatus.unreachable)
        return case
    check(case, "record_survey")
    survey.status = SurveyStatus.unreachable
    session.add(survey)
    case.closed_at = utcnow()
    case.close_reason = "not_evaluated"
    event(session, case, "close", actor, S.closed, reason=reason,
          data={"survey_id": survey.id, "attempts": survey.attempts}, at=case.closed_at)
    return case


def survey_to_manual(session: Session, survey: Survey, *, actor: str = "system", reason: str) -> Survey:
    """The follow-up moves to the operator's manual-call list (the console): the machine
    could not finish it (unreachable, a wrong number, the resident asked for a person)."""
    _pending(survey)
    case = session.get(Case, survey.case_id)
    check(case, "annotate")
    before = survey.channel
    survey.channel = "manual"
    session.add(survey)
    event(session, case, "survey_manual", actor, case.status, reason=reason,
          data={"survey_id": survey.id, "from": before, "attempts": survey.attempts})
    return survey


def survey_answer(session: Session, survey: Survey, *, question: str, answer: str | None, actor: str,
                  data: dict | None = None) -> Survey:
    """One answer as it is given (a key pressed in the follow-up call), or ``None``: asked,
    and no answer came. The survey's result is written by ``record_survey`` once both are in."""
    scales = {"solved": survey_policy.solved_scale(), "satisfied": survey_policy.satisfied_scale()}
    if question not in scales:
        raise InvalidInput(f"no survey question {question!r} (one of {', '.join(scales)})",
                           code="survey.no_question", question=question)
    if answer is not None and answer not in scales[question]:
        raise InvalidInput(f"{question}: answer must be one of {scales[question]}",
                           code="survey.answer_out_of_scale", question=question)
    _pending(survey)
    case = session.get(Case, survey.case_id)
    check(case, "annotate")
    event(session, case, "survey_answer", actor, case.status, reason=answer or "no answer",
          data={"survey_id": survey.id, "question": question, "answer": answer, **(data or {})})
    return survey


def survey_comment(session: Session, survey: Survey, *, actor: str, text: str | None = None,
                   file: FileRef | None = None, data: dict | None = None) -> Survey:
    """The resident's own words about the result: the recording (attached to the case) and
    its transcript (kept on the survey), together or the transcript later. Allowed whatever
    the case's status: the answers may have closed or reopened it already."""
    case = session.get(Case, survey.case_id)
    check(case, "annotate")
    described: dict = {"survey_id": survey.id, **(data or {})}
    if file is not None:
        # attach flags a file still in a spool (``waiting_in``) upload_pending and queues its
        # upload, as for a petition's recordings; the event says so too
        linked = attach(session, case, actor=actor, files=[file])
        described["attachment"] = file.path
        described["attached"] = bool(linked)
        if file.waiting_in:
            described["upload_pending"] = True
    if text is not None:  # words from the resident's voice: never refused, kept up to a cap
        text, cut = limits.keep_words(text)
        if cut:
            described["text_cut"] = True
        survey.comment = text
        session.add(survey)
    described["transcript_pending"] = text is None
    event(session, case, "survey_comment", actor, case.status, reason=text, data=described)
    return survey


def survey_call_outcome(session: Session, survey: Survey, *, attempt: int, outcome: str, actor: str = "system",
                        data: dict | None = None) -> str:
    """How a follow-up call ended, and what follows by the rules (``[survey.phone]``):
    ``"retry"`` (the next attempt is queued for the next calling hours after the wait),
    ``"manual"`` (on to the manual-call list), ``"unreachable"`` (closed as not evaluated),
    or ``"done"`` (answered, or the survey is over already)."""
    case = session.get(Case, survey.case_id)
    check(case, "annotate")
    event(session, case, "survey_call", actor, case.status, reason=outcome,
          data={"survey_id": survey.id, "attempt": attempt, "outcome": outcome, **(data or {})})
    if survey.status != SurveyStatus.pending or outcome == "answered" or not awaits_answer(case, survey):
        return "done"  # answered, or the case moved on (an operator closed or reopened it)
    rules = survey_policy.phone_rules()
    if outcome == "operator":  # put through to an operator: the operator records the answers
        follow = "manual"
    elif outcome == "wrong_person":
        follow = rules.wrong_person
    elif survey.attempts < rules.attempts:
        run_at = survey_policy.calling_hours(session).next_allowed(utcnow() + rules.retry_after)
        jobs.enqueue(session, SURVEY_PHONE_JOB, {"survey_id": survey.id, "case": caller_case(session, survey).number,
                                                 "attempt": attempt + 1},
                     run_at=run_at, dedupe_key=f"survey:{survey.id}:{attempt + 1}")
        return "retry"
    else:
        follow = rules.when_unreachable
    why = {"operator": "put through to an operator", "wrong_person": "wrong person (不是本人/打错了)"}.get(
        outcome, f"no answer after {survey.attempts} call(s)")
    if follow == "manual":
        survey_to_manual(session, survey, actor=actor, reason=why)
        return "manual"
    survey_unreachable(session, survey, actor=actor, reason=why)
    return "unreachable"
