"""The only writers of case state, one module per writer role.

Every function here checks that its transition is legal, changes the case and writes one
``CaseEvent`` in the caller's transaction (``core.platform.db.session_scope``), so the change and
its audit row commit or vanish together. An illegal call raises a ``DomainError`` before
anything is written. Channels and the console call these; nothing else sets ``Case.status``
or changes what a case owns (its files, its survey).

    intake       a channel, for a resident: submit a petition, attach files, hold one for an operator
    operator     the operator's desk: classify, locate, dispatch, return, merge (and undo it), close, reopen, notes
    handling     the handler: accept, start, report done
    checking     the leader: verify (核查)
    supervision  escalation (督办)
    survey       the follow-up: open, attempts, answers, comments, call outcomes, manual list, unreachable
    transcription  the recogniser: the transcript of a case filed before it was recognised
    residents    a resident: created for a chat, language, contact details and wishes (do-not-call,
                 SMS opt-out), moved by a household import (audited, not case events)
    reference    grids, workers, households from a district's files or the demo district (one
                 audit row per run); imported by who needs it (``core.actions.reference``)
    privacy      retention: shredding a closed case's personal data

Case numbering (``core.cases.numbering``), owner resolution (``core.people.owners``) and survey policy
(``core.followup.survey_policy``) are separate concerns these writers use.
"""

from core.actions._base import OWNED, TRANSITIONS, check, get_case
from core.actions.checking import verify
from core.actions.handling import accept, report_done, start
from core.actions.intake import (
    RECORDING_INCOMPLETE,
    FileRef,
    Petition,
    attach,
    find_resident_by_phone,
    hold,
    idempotency_key,
    submit_petition,
)
from core.actions.operator import (
    annotate,
    classify,
    close,
    dispatch,
    locate,
    merge,
    merged_at,
    reopen,
    return_case,
    set_confidential,
    set_flags,
    undo_deadline,
    unmerge,
)
from core.actions.privacy import shred
from core.actions.residents import (
    create_for_chat,
    link_chat,
    link_verified_phone,
    rehouse,
    resident_for_phone,
    set_do_not_call,
    set_language,
    set_phone,
    sms_opt_out,
    unlink_verified_phone,
)
from core.actions.supervision import escalate
from core.actions.survey import (
    record_survey,
    start_survey,
    survey_answer,
    survey_attempt,
    survey_call_outcome,
    survey_comment,
    survey_to_manual,
    survey_unreachable,
)
from core.actions.survey_callers import (
    ask_callers,
    awaits_answer,
    caller_case,
    contact_resident,
    phone_to_call,
)
from core.actions.transcription import (
    LOW_CONFIDENCE,
    TRANSCRIPT_PENDING,
    is_low_confidence,
    set_transcript,
)
from core.cases.numbering import next_case_number
from core.people.owners import responsible_worker

__all__ = [
    "LOW_CONFIDENCE", "OWNED", "RECORDING_INCOMPLETE", "TRANSCRIPT_PENDING", "TRANSITIONS", "FileRef", "Petition", "accept", "annotate",
    "ask_callers", "attach", "awaits_answer", "caller_case", "check", "classify", "close", "contact_resident", "create_for_chat", "dispatch", "escalate", "find_resident_by_phone",
    "get_case", "hold", "idempotency_key", "is_low_confidence", "link_chat", "link_verified_phone", "locate", "merge", "merged_at", "next_case_number",
    "phone_to_call", "record_survey", "rehouse", "reopen", "report_done", "resident_for_phone", "responsible_worker",
    "return_case", "set_confidential", "set_do_not_call", "set_flags", "set_language", "set_phone", "set_transcript", "shred", "sms_opt_out", "start",
    "start_survey", "submit_petition", "survey_answer", "survey_attempt", "survey_call_outcome", "survey_comment",
    "survey_to_manual", "survey_unreachable", "undo_deadline", "unlink_verified_phone", "unmerge", "verify",
]
