"""Tables of cases: categories, cases, their events and files, hotline calls, and the case
number sequence, with the indexes the triage queue, figures and retention read.
"""

from __future__ import annotations

import enum

import sqlalchemy as sa
from pydantic import NaiveDatetime
from sqlalchemy import Column, Index, Text
from sqlmodel import Field, SQLModel

from core.places.models import GridLevel
from core.platform.clock import utcnow
from core.platform.models import enum_type, json_column


class CaseStatus(enum.StrEnum):
    received = "received"
    dispatched = "dispatched"
    accepted = "accepted"
    in_progress = "in_progress"
    reported_done = "reported_done"
    verified = "verified"
    closed = "closed"
    reopened = "reopened"
    returned = "returned"
    merged = "merged"


OPEN_STATUSES = frozenset(
    {
        CaseStatus.received,
        CaseStatus.dispatched,
        CaseStatus.accepted,
        CaseStatus.in_progress,
        CaseStatus.reported_done,
        CaseStatus.verified,
        CaseStatus.reopened,
        CaseStatus.returned,
    }
)


class Channel(enum.StrEnum):
    hotline = "hotline"
    chat = "chat"
    console = "console"
    open311 = "open311"


class Urgency(enum.StrEnum):
    normal = "normal"
    urgent = "urgent"
    emergency = "emergency"


class Category(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(unique=True, max_length=32)
    name: str = Field(max_length=64)
    department_id: int | None = Field(default=None, foreign_key="department.id")
    keywords: list[str] | None = json_column()
    # Duplicate detection: open cases of the same category this close in space and time.
    duplicate_radius_m: float = 100.0
    duplicate_window_hours: float = 72.0
    # False once categories.toml no longer has it (``gridline categories sync``): kept for the
    # cases that name it, no longer offered.
    active: bool = True


class CaseSequence(SQLModel, table=True):
    """Per-day counter behind readable case numbers (YYMMDD + sequence)."""

    day: str = Field(primary_key=True, max_length=8)
    last: int = 0


class Case(SQLModel, table=True):
    __table_args__ = (
        # Open and overdue cases per grid (the dashboard): answered from the index alone on
        # PostgreSQL, within a reader's scope too.
        Index("ix_case_status_grid", "status", "grid_id",
              postgresql_include=["response_due", "resolution_due", "category_id", "worker_id", "department_id"]),
        Index("ix_case_worker_status", "worker_id", "status"),
        Index("ix_case_created", "created_at"),
        Index("ix_case_category_created", "category_id", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    number: str = Field(unique=True, max_length=16)
    idempotency_key: str | None = Field(default=None, unique=True, max_length=128)
    channel: Channel = Field(sa_type=enum_type(Channel))
    status: CaseStatus = Field(default=CaseStatus.received, sa_type=enum_type(CaseStatus))

    resident_id: int | None = Field(default=None, foreign_key="resident.id", index=True)
    contact_phone: str | None = Field(default=None, max_length=32)
    description: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    # [{"text", "start", "end", "confidence"}] as recognised; description holds the reviewed text.
    transcript: list[dict] | None = json_column()
    transcript_confidence: float | None = None
    # Recordings, voice notes and photos are Attachment rows: the one record of a case's files.
    flags: list[str] | None = json_column()
    # The resident asked that who they are be kept from everyone but operators and admins
    # (保密处理): no name, phone or voice for workers, departments, Open311 and reports.
    # A column, not a flag: a flag would put the case in triage.
    confidential: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})

    latitude: float | None = None
    longitude: float | None = None
    address_text: str | None = Field(default=None, max_length=256)

    category_id: int | None = Field(default=None, foreign_key="category.id")
    urgency: Urgency = Field(default=Urgency.normal, sa_type=enum_type(Urgency))
    grid_id: int | None = Field(default=None, foreign_key="grid.id")
    routing_reason: str | None = Field(default=None, max_length=256)  # typed, a console code, or written before traces
    # Why routing chose the grid, as codes with parameters (core.places.routing.step); the
    # edges say it in their reader's language (core.platform.i18n.case_routing_text).
    routing_trace: list[dict] | None = json_column()
    routing_confidence: float | None = None
    owner_level: GridLevel | None = Field(default=None, sa_type=enum_type(GridLevel))
    worker_id: int | None = Field(default=None, foreign_key="worker.id")
    department_id: int | None = Field(default=None, foreign_key="department.id")
    merged_into_id: int | None = Field(default=None, foreign_key="case.id")
    reopen_count: int = 0
    escalation_count: int = 0

    created_at: NaiveDatetime = Field(default_factory=utcnow)
    updated_at: NaiveDatetime = Field(default_factory=utcnow)
    dispatched_at: NaiveDatetime | None = None
    response_due: NaiveDatetime | None = None
    resolution_due: NaiveDatetime | None = None
    accepted_at: NaiveDatetime | None = None
    reported_done_at: NaiveDatetime | None = None
    verified_at: NaiveDatetime | None = None
    closed_at: NaiveDatetime | None = None
    close_reason: str | None = Field(default=None, max_length=64)
    responded_on_time: bool | None = None
    resolved_on_time: bool | None = None
    # The follow-ups the resident answered and how many said (basically) satisfied, kept by
    # core.actions.survey.record_survey with the Survey row: the satisfaction rate of a
    # period is then one pass over its cases (core.reporting.figures), not a join to every survey.
    surveys_answered: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    surveys_satisfied: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    # When the retention period ran out and the case's personal data was shredded
    # (core.actions.privacy): what is left are the anonymous figures.
    shredded_at: NaiveDatetime | None = None


class CaseEvent(SQLModel, table=True):
    """The audit trail: one row for every change of a case, written with the change."""

    # A case's history in order; on PostgreSQL it also carries what the quarterly scores read
    # of each event (core.reporting.scores), so they come from the index alone.
    __table_args__ = (Index("ix_caseevent_case_at", "case_id", "at", postgresql_include=["id", "action", "on_time"]),)

    id: int | None = Field(default=None, primary_key=True)
    case_id: int = Field(foreign_key="case.id")
    at: NaiveDatetime = Field(default_factory=utcnow, index=True)
    actor: str = Field(max_length=64)
    action: str = Field(max_length=32)
    from_status: CaseStatus | None = Field(default=None, sa_type=enum_type(CaseStatus))
    to_status: CaseStatus = Field(sa_type=enum_type(CaseStatus))
    reason: str | None = Field(default=None, sa_column=Column(Text))
    on_time: bool | None = None
    data: dict | None = json_column()


class CallSession(SQLModel, table=True):
    """One hotline call, inbound or outbound, from first webhook to its outcome."""

    id: int | None = Field(default=None, primary_key=True)
    call_sid: str = Field(unique=True, max_length=64)
    direction: str = Field(default="inbound", max_length=16)
    from_number: str | None = Field(default=None, max_length=32)
    to_number: str | None = Field(default=None, max_length=32)
    status: str = Field(default="ringing", max_length=24)
    stream_token: str | None = Field(default=None, max_length=64)
    resident_id: int | None = Field(default=None, foreign_key="resident.id")
    case_id: int | None = Field(default=None, foreign_key="case.id")
    survey_id: int | None = Field(default=None, foreign_key="survey.id")
    audio_path: str | None = Field(default=None, max_length=512)
    speech_seconds: float = 0.0
    transcript: list[dict] | None = json_column()
    # Where the caller is in the flow, and what they said/keyed so far.
    state: dict | None = json_column()
    outcome: str | None = Field(default=None, max_length=32)
    # When the call's first webhook reached us (the call's arrival, for the service figures:
    # core.reporting.hotline).
    started_at: NaiveDatetime = Field(default_factory=utcnow)
    # When the greeting, the call's first prompt, was handed to Twilio: the call was answered.
    answered_at: NaiveDatetime | None = None
    # When the caller was put through to a person (<Dial>), and how that ended: Twilio's
    # DialCallStatus (completed: the person answered; busy, no-answer, failed, canceled).
    transferred_at: NaiveDatetime | None = None
    transfer_status: str | None = Field(default=None, max_length=16)
    ended_at: NaiveDatetime | None = None
    duration_s: int | None = None  # Twilio's CallDuration from the status callback
    updated_at: NaiveDatetime = Field(default_factory=utcnow)
    # The instance that last moved the call on (core.platform.instances): the recovery sweep leaves
    # the call alone while that instance's lease is alive.
    instance_id: str | None = Field(default=None, max_length=32)


class Attachment(SQLModel, table=True):
    """A file of a case (the caller's recording, a voice note, a photo) in the media store
    (``core.platform.media``). ``path`` is its key: relative to the data directory, where the
    default store keeps it. ``upload_pending``: the store could not be reached yet; the
    file waits in the spool of the instance that took it for a ``media_upload`` job. A
    file a resident sent before the case existed waits here with no case until it is filed."""

    id: int | None = Field(default=None, primary_key=True)
    case_id: int | None = Field(default=None, foreign_key="case.id", index=True)
    kind: str = Field(max_length=16)  # photo, voice, recording
    path: str = Field(max_length=512)
    mime_type: str | None = Field(default=None, max_length=64)
    size: int | None = None
    sha256: str | None = Field(default=None, max_length=64)
    upload_pending: bool = Field(default=False, index=True, sa_column_kwargs={"server_default": sa.false()})
    created_at: NaiveDatetime = Field(default_factory=utcnow)


# The triage queue reads open cases that have flags or lack a grid or a category, oldest
# first. The predicate is written once here and used verbatim by console.queries, so both
# databases can prove the query matches this partial index.
TRIAGE_INDEX_PREDICATE = (
    "status NOT IN ('closed', 'merged') AND "
    "(grid_id IS NULL OR category_id IS NULL OR CAST(flags AS TEXT) LIKE '[%')"
)


Index("ix_case_triage", Case.created_at, Case.id,
      postgresql_where=sa.text(TRIAGE_INDEX_PREDICATE), sqlite_where=sa.text(TRIAGE_INDEX_PREDICATE))


Index("ix_case_contact_phone", Case.contact_phone)


Index("ix_case_department_status", Case.department_id, Case.status)


Index("ix_case_grid_created", Case.grid_id, Case.created_at)


Index("ix_case_resident_created", Case.resident_id, Case.created_at)


# Text search: LIKE '%…%' on lower(description). On PostgreSQL a trigram GIN index (pg_trgm)
# answers it; SQLite gets a plain expression index of the same name (it scans anyway).
Index("ix_case_description_trgm", sa.func.lower(Case.description), postgresql_using="gin",
      postgresql_ops={"description": "gin_trgm_ops"})


# The figures of a period (core.reporting.figures, core.reporting.reports) count the cases received in it, and
# the daily trend the cases received and closed per day. PostgreSQL answers them from these
# indexes alone (no visit to the table, whose rows are wide): every column the counts, the
# filters and a reader's scope read is in the index. SQLite has no INCLUDE; there they are
# the plain two-column indexes. Shredding looks for cases closed before a cut-off.
FIGURES_COLUMNS = ["channel", "category_id", "grid_id", "worker_id", "department_id", "dispatched_at",
                   "responded_on_time", "resolved_on_time", "surveys_answered", "surveys_satisfied"]


Index("ix_case_created_status", Case.created_at, Case.status, postgresql_include=FIGURES_COLUMNS)


Index("ix_case_closed_status", Case.closed_at, Case.status,
      postgresql_include=["category_id", "grid_id", "worker_id", "department_id"])


# The daily trend counts, per day, the cases received (not merged) and closed: narrow partial
# indexes make each day's count a short index range. The predicates are written once here and
# used verbatim (as SQL text, not bound values) by core.reporting.reports, so both databases can prove
# the query matches the index.
RECEIVED_PREDICATE = "status <> 'merged'"


CLOSED_PREDICATE = "status = 'closed'"


Index("ix_case_received_day", Case.created_at,
      postgresql_where=sa.text(RECEIVED_PREDICATE), sqlite_where=sa.text(RECEIVED_PREDICATE))


Index("ix_case_closed_day", Case.closed_at,
      postgresql_where=sa.text(CLOSED_PREDICATE), sqlite_where=sa.text(CLOSED_PREDICATE))


# Reports list the escalations (and other events of one kind) inside a period; the quarterly
# scores start from a period's dispatches and escalations and read their cases' events in order.
Index("ix_caseevent_action_at", CaseEvent.action, CaseEvent.at, postgresql_include=["case_id", "id"])


# Every instance's recovery sweep looks for calls without a case or an outcome every few
# seconds: a narrow partial index keeps that a short read however many calls were ever taken.
UNSETTLED_CALL_PREDICATE = "case_id IS NULL AND outcome IS NULL"


Index("ix_callsession_unsettled", CallSession.updated_at,
      postgresql_where=sa.text(UNSETTLED_CALL_PREDICATE), sqlite_where=sa.text(UNSETTLED_CALL_PREDICATE))


# The hotline's service figures (core.reporting.hotline) read a period's inbound calls by
# their arrival; PostgreSQL answers them from the index alone.
HOTLINE_FIGURES_COLUMNS = ["answered_at", "transferred_at", "transfer_status", "outcome", "ended_at", "duration_s"]


Index("ix_callsession_direction_started", CallSession.direction, CallSession.started_at,
      postgresql_include=HOTLINE_FIGURES_COLUMNS)
