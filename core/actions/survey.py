"""Writers of the follow-up survey (回访): open it, count an attempt, record the answer
(from a phone keypad, chat buttons or an operator's call alike), give up."""

from __future__ import annotations

from sqlmodel import Session

from core import survey_policy
from core.actions._base import S, check, event
from core.actions.operator import dispatch, reopen
from core.clock import utcnow
from core.errors import IllegalTransition, InvalidInput
from core.models import Case, GridLevel, Resident, Survey, SurveyStatus
from core.rules import load_rules


def survey_channel(case: Case, resident: Resident | None) -> str:
    """Rules ``[survey] channels``: the first way the case has of reaching the resident, else
    ``fallback_channel`` (the console's manual-call list)."""
    rules = load_rules()["survey"]
    for channel in rules.get("channels", ("chat", "phone")):
        if channel == "chat" and resident is not None and resident.chat_id:
            return "chat"
        if channel == "phone" and (case.contact_phone or (resident is not None and resident.phone)):
            return "phone"
    return str(rules.get("fallback_channel", "manual"))


def start_survey(session: Session, case: Case) -> Survey:
    """Open the follow-up and queue its first attempt on the resident's channel. A manual
    follow-up needs no job: the console's manual-call list is its queue."""
    from core import jobs

    resident = session.get(Resident, case.resident_id) if case.resident_id else None
    channel = survey_channel(case, resident)
    survey = Survey(case_id=case.id, channel=channel)
    session.add(survey)
    session.flush()
    if channel != "manual":
        jobs.enqueue(session, f"survey_{channel}", {"survey_id": survey.id, "case": case.number},
                     dedupe_key=f"survey:{survey.id}:1")
    return survey


def _pending(survey: Survey) -> None:
    if survey.status != SurveyStatus.pending:
        raise IllegalTransition(f"survey {survey.id} is already {survey.status.value}")


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
) -> Case:
    """A resident's answer. What it does is rules data (``core.survey_policy``): a closing
    answer closes the case; any other reopens it, and after the allowed reopenings it is
    also dispatched one level up."""
    solved_scale, satisfied_scale = survey_policy.solved_scale(), survey_policy.satisfied_scale()
    if solved not in solved_scale or satisfied not in satisfied_scale:
        raise InvalidInput(f"survey answers must be one of {solved_scale} and {satisfied_scale}")
    _pending(survey)
    case = session.get(Case, survey.case_id)
    check(case, "record_survey")
    survey.solved, survey.satisfied, survey.comment = solved, satisfied, comment
    survey.status = SurveyStatus.answered
    survey.answered_at = utcnow()
    session.add(survey)
    answer = {"survey_id": survey.id, "solved": solved, "satisfied": satisfied}
    if survey_policy.closes_case(solved, satisfied):
        case.closed_at = utcnow()
        case.close_reason = f"survey:{satisfied}"
        event(session, case, "close", actor, S.closed, reason=comment, data=answer, at=case.closed_at)
        return case
    reopen(session, case, actor=actor, reason=comment or "resident not satisfied")
    if case.reopen_count > survey_policy.reopenings_before_escalation() and case.grid_id:
        # Dissatisfied again: dispatch straight to the next level up.
        from core.sla import next_owner_level

        current = case.owner_level or GridLevel.micro
        dispatch(session, case, actor="system", level=next_owner_level(current) or current,
                 reason="dissatisfied again: dispatched one level up")
    return case


def survey_unreachable(session: Session, survey: Survey, *, actor: str = "system") -> Case:
    """All attempts failed: the case closes as not evaluated (不参与评价)."""
    _pending(survey)
    case = session.get(Case, survey.case_id)
    check(case, "record_survey")
    survey.status = SurveyStatus.unreachable
    session.add(survey)
    case.closed_at = utcnow()
    case.close_reason = "not_evaluated"
    event(session, case, "close", actor, S.closed, reason="resident unreachable",
          data={"survey_id": survey.id, "attempts": survey.attempts}, at=case.closed_at)
    return case
