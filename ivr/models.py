"""Tables only the hotline uses: the live audio parts of a recording, and phone survey calls.
"""

from __future__ import annotations

import sqlalchemy as sa
from pydantic import NaiveDatetime
from sqlalchemy import Column, UniqueConstraint
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


class AudioPart(SQLModel, table=True):
    """A stretch of a call's live audio kept in the database, the last resort when neither
    the spool folder nor the media store would take it (a full or read-only disk, the bucket
    away). ``key`` is the recording's storage key; ``start`` the offset of ``data`` (pcm16)
    in the recording's audio. ``ivr.spool`` writes them while the call goes on and moves
    them into the media store as one WAV when it can, deleting them after."""

    __tablename__ = "audio_part"
    __table_args__ = (UniqueConstraint("key", "seq"),)

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=512, index=True)
    seq: int
    start: int
    data: bytes = Field(sa_column=Column(sa.LargeBinary, nullable=False))
    created_at: NaiveDatetime = Field(default_factory=utcnow)
