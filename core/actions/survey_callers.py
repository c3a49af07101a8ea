"""Who the follow-up (回访) reaches and how: the resident of a case, the number to call, the
channel by the rules; and the callers of the duplicates merged into a case, who are asked
too (issue 26) — each a Survey of the surviving case naming the duplicate it reaches
(``Survey.caller_case_id``). Apart from ``core.actions.survey`` so that a merge and its undo
(``core.actions.operator``) can open and withdraw those without an import cycle."""

from __future__ import annotations

from sqlmodel import Session, select

from core.actions._base import S, event
from core.actions.intake import find_resident_by_phone
from core.cases.models import Case
from core.errors import NotFound
from core.followup import survey_policy
from core.followup.models import Survey, SurveyStatus
from core.people.models import Resident
from core.people.phones import dialable
from core.platform import jobs
from core.platform.clock import utcnow
from core.platform.rules import load_rules

SURVEY_CHAT_JOB = jobs.declare("survey_chat", "chat/followup.py: the survey's questions in the resident's chat")
SURVEY_PHONE_JOB = jobs.declare("survey_phone", "ivr/survey_jobs.py: one follow-up call (an attempt)")
CHANNEL_JOBS = {"chat": SURVEY_CHAT_JOB, "phone": SURVEY_PHONE_JOB}


def contact_resident(session: Session, case: Case) -> Resident | None:
    """The resident the follow-up reaches: the case's, else the one registered (or opted
    out, or marked do-not-call) under the number the case was filed from."""
    if case.resident_id:
        return session.get(Resident, case.resident_id)
    if case.contact_phone:
        return find_resident_by_phone(session, case.contact_phone)
    return None


def phone_to_call(case: Case, resident: Resident | None) -> str | None:
    """The number a phone follow-up dials (E.164), or ``None`` when there is none that works."""
    return dialable(case.contact_phone) or dialable(resident.phone if resident is not None else None)


def survey_channel(case: Case, resident: Resident | None) -> str:
    """How the follow-up reaches the resident: the first way the case has, in the order
    rules ``[survey] channels_by_case`` gives for the case's channel (else ``channels``);
    none: ``fallback_channel`` (the console's manual-call list). A resident marked
    do-not-call is never phoned: ``[survey.phone] do_not_call`` says what instead
    ("manual", or "not_evaluated")."""
    rules = load_rules()["survey"]
    order = rules["channels_by_case"].get(case.channel.value, rules["channels"])
    not_to_call = False
    for channel in order:
        if channel == "chat" and resident is not None and resident.chat_id:
            return "chat"
        if channel == "phone" and phone_to_call(case, resident):
            if resident is not None and resident.do_not_call:
                not_to_call = True
                continue
            return "phone"
    if not_to_call:
        return survey_policy.phone_rules().do_not_call
    return str(rules["fallback_channel"])


def caller_case(session: Session, survey: Survey) -> Case:
    """The case whose caller the follow-up asks: a merged duplicate's (``caller_case_id``),
    else the survey's own. Its caller, number and chat are the ones reached."""
    case = session.get(Case, survey.caller_case_id or survey.case_id)
    if case is None:
        raise NotFound(f"no case {survey.caller_case_id or survey.case_id}", code="case.not_found",
                       case=str(survey.caller_case_id or survey.case_id))
    return case


def _person(session: Session, case: Case) -> set[str]:
    """Who called, as the registry and the numbers know them: two cases share a caller when
    these overlap (the same resident, or the same number)."""
    resident = contact_resident(session, case)
    phones = {dialable(case.contact_phone), dialable(resident.phone if resident is not None else None)}
    return {f"phone:{p}" for p in phones if p} | ({f"resident:{resident.id}"} if resident is not None else set())


def queue_first_attempt(session: Session, survey: Survey, case: Case) -> None:
    run_at = survey_policy.calling_hours(session).next_allowed(utcnow()) if survey.channel == "phone" else None
    jobs.enqueue(session, CHANNEL_JOBS[survey.channel], {"survey_id": survey.id, "case": case.number, "attempt": 1},
                 run_at=run_at, dedupe_key=f"survey:{survey.id}:1")


def unanswered(session: Session, case: Case) -> list[Survey]:
    """The case's follow-ups still waiting for an answer (its own caller's and the others')."""
    return list(session.exec(select(Survey).where(Survey.case_id == case.id, Survey.status == SurveyStatus.pending)
                             .order_by(Survey.id)).all())


def ask_callers(session: Session, case: Case, duplicates: list[Case] | None = None) -> list[Survey]:
    """The callers of the duplicates merged into ``case`` get the follow-up too, each on their
    own channel by the same rules (``survey_channel``: chat, phone in calling hours, never
    phoned when do-not-call, else the manual-call list). A caller who is also the case's own
    (the same resident or number), or one asked already this round (since the case was
    verified), is asked once; a duplicate with nobody to reach (no resident, no number) asks
    nobody. Each survey is the surviving case's, with ``caller_case_id`` naming the
    duplicate; a ``survey_caller`` event says so. ``duplicates``: only these (a merge into
    a case waiting for its follow-up); default all."""
    asked = _person(session, case)
    this_round = select(Survey.caller_case_id).where(Survey.case_id == case.id, Survey.caller_case_id.is_not(None),
                                                     Survey.status != SurveyStatus.withdrawn)
    if case.verified_at is not None:
        this_round = this_round.where(Survey.created_at >= case.verified_at)
    for earlier in session.exec(this_round).all():
        asked |= _person(session, session.get(Case, earlier))
    opened = []
    if duplicates is None:  # still merged: an undone merge is not one
        duplicates = list(session.exec(select(Case).where(Case.merged_into_id == case.id, Case.status == S.merged)
                                       .order_by(Case.id)).all())
    for duplicate in duplicates:
        who = _person(session, duplicate)
        if not who or who & asked:
            continue
        asked |= who
        channel = survey_channel(duplicate, contact_resident(session, duplicate))
        survey = Survey(case_id=case.id, caller_case_id=duplicate.id,
                        channel="manual" if channel == "not_evaluated" else channel)
        session.add(survey)
        session.flush()
        event(session, case, "survey_caller", "system", case.status, reason="survey.caller_asked",
              data={"survey_id": survey.id, "duplicate": duplicate.number, "channel": channel,
                    "reason_params": {"duplicate": duplicate.number}})
        if channel == "not_evaluated":
            end_caller_survey(session, case, survey, actor="system", reason="survey.caller_not_called",
                               status=SurveyStatus.unreachable)
        elif channel in CHANNEL_JOBS:
            queue_first_attempt(session, survey, duplicate)
        opened.append(survey)
    return opened


def end_caller_survey(session: Session, case: Case, survey: Survey, *, actor: str, reason: str,
                      status: SurveyStatus = SurveyStatus.withdrawn) -> None:
    """A follow-up ends unanswered without closing the case: a duplicate's caller's
    (unreachable, not to be called, the merge undone), or any left over from an earlier
    round when the case is verified again (so that nobody is called for it twice)."""
    survey.status = status
    session.add(survey)
    duplicate = session.get(Case, survey.caller_case_id) if survey.caller_case_id else None
    number = duplicate.number if duplicate is not None else None
    if duplicate is None and reason in ("survey.superseded", "survey.closed_without"):
        reason += "_own"
    event(session, case, "survey_end", actor, case.status, reason=reason,
          data={"survey_id": survey.id, "duplicate": number, "status": status.value,
                "attempts": survey.attempts, "reason_params": {"duplicate": number}})


def withdraw_caller_survey(session: Session, case: Case, duplicate: Case, *, actor: str) -> list[Survey]:
    """The merge of ``duplicate`` into ``case`` is undone: its caller's follow-up on ``case``,
    if not answered yet, is withdrawn (the duplicate gets its own when it is verified)."""
    ended = [s for s in unanswered(session, case) if s.caller_case_id == duplicate.id]
    for survey in ended:
        end_caller_survey(session, case, survey, actor=actor, reason="survey.merge_undone")
    return ended


def awaits_answer(case: Case, survey: Survey) -> bool:
    """Whether the case still takes this survey's answer: its own caller's while it is
    verified; a duplicate's caller's also once the own caller's answer closed it."""
    return case.status == S.verified or (survey.caller_case_id is not None and case.status == S.closed)
