"""Tables of the follow-up survey (回访).
"""

from __future__ import annotations

import enum

from pydantic import NaiveDatetime
from sqlalchemy import Column, Index, Text
from sqlmodel import Field, SQLModel

from core.platform.clock import utcnow
from core.platform.models import enum_type


class SurveyStatus(enum.StrEnum):
    pending = "pending"
    answered = "answered"
    unreachable = "unreachable"
    withdrawn = "withdrawn"  # a merged duplicate's caller's, unanswered: the merge was undone, or a new round began


# The answers to "are you satisfied?" the satisfaction rate (满意率) counts as satisfied.
SATISFIED = frozenset({"satisfied", "basically"})


class Survey(SQLModel, table=True):
    """The follow-up (回访) after verification; phone and chat answers land here alike."""

    id: int | None = Field(default=None, primary_key=True)
    case_id: int = Field(foreign_key="case.id", index=True)
    # The merged duplicate whose caller this follow-up asks (None: the case's own caller).
    # The survey is the surviving case's: its answers count there and act on it; only the
    # person asked, and the channel reaching them, are the duplicate's.
    caller_case_id: int | None = Field(default=None, foreign_key="case.id", index=True)
    channel: str = Field(max_length=16)
    status: SurveyStatus = Field(default=SurveyStatus.pending, sa_type=enum_type(SurveyStatus))
    attempts: int = 0
    solved: str | None = Field(default=None, max_length=16)  # solved / partly / not
    satisfied: str | None = Field(default=None, max_length=16)  # satisfied / basically / not
    comment: str | None = Field(default=None, sa_column=Column(Text))
    created_at: NaiveDatetime = Field(default_factory=utcnow)
    answered_at: NaiveDatetime | None = None


Index("ix_survey_channel_status", Survey.channel, Survey.status)


Index("ix_survey_created", Survey.created_at)
