"""Tables only the hotline uses: phone survey calls."""

from __future__ import annotations

from pydantic import NaiveDatetime
from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from core.platform.clock import utcnow


class SurveyCall(SQLModel, table=True):
    """One attempt at a phone follow-up: the call Gridline asked Twilio to place and how it
    went. Written before ``calls.create`` (``intent_at``, with the attempt's random
    ``token`` in every URL of the call, so only that call can use them), then the CallSid
    when the attempt is recorded (``placed_at``, with the survey's ``survey_attempt`` event),
    then the outcome when the call ended (``ended_at``). Telephony bookkeeping, like
    ``CallSession``; what it means for the survey goes through ``core.actions``."""

    __table_args__ = (UniqueConstraint("survey_id", "attempt", name="uq_surveycall_attempt"),)

    id: int | None = Field(default=None, primary_key=True)
    survey_id: int = Field(foreign_key="survey.id", index=True)
    attempt: int
    token: str = Field(unique=True, max_length=64)
    call_sid: str | None = Field(default=None, unique=True, max_length=64)
    status: str = Field(default="intent", max_length=24)  # the call's last known status
    answered_by: str | None = Field(default=None, max_length=24)  # human, machine_start, fax, unknown
    # What happened in the call, said by the resident: answered, wrong_person, operator.
    result: str | None = Field(default=None, max_length=24)
    # How the attempt ended: answered, busy, no_answer, failed, canceled, machine,
    # wrong_person, operator, no_response.
    outcome: str | None = Field(default=None, max_length=24)
    intent_at: NaiveDatetime = Field(default_factory=utcnow)
    placed_at: NaiveDatetime | None = None
    ended_at: NaiveDatetime | None = None
