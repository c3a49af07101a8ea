"""Tables of the case core.

Times are stored as naive UTC (``core.clock.utcnow``; ``NaiveDatetime`` tells SQLModel so); working-calendar arithmetic converts
to the district's local time zone. Rules that people tune (categories, deadlines, the
escalation ladder, the calendar) are rows or data files, not code.
"""

from __future__ import annotations

import enum
from datetime import date
from typing import Any

import sqlalchemy as sa
from pydantic import NaiveDatetime
from sqlalchemy import JSON, Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from core.clock import utcnow


class GridLevel(enum.StrEnum):
    district = "district"
    street = "street"
    community = "community"
    area = "area"
    micro = "micro"


# Ownership climbs this ladder when a deadline passes or a handler escalates.
GRID_LEVELS: tuple[GridLevel, ...] = (
    GridLevel.micro,
    GridLevel.area,
    GridLevel.community,
    GridLevel.street,
    GridLevel.district,
)


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


class WorkerRole(enum.StrEnum):
    grid_worker = "grid_worker"
    grid_leader = "grid_leader"
    micro_leader = "micro_leader"


def enum_type(enum_cls: type[enum.Enum]) -> sa.Enum:
    # Stored as plain strings: adding a status later needs no ALTER TYPE on PostgreSQL.
    return sa.Enum(enum_cls, native_enum=False, length=24, create_constraint=False)


def json_column(**kw: Any) -> Any:
    return Field(default=None, sa_column=Column(JSON, **kw))


class Grid(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(index=True, unique=True, max_length=32)
    name: str = Field(max_length=128)
    level: GridLevel = Field(index=True, sa_type=enum_type(GridLevel))
    parent_id: int | None = Field(default=None, foreign_key="grid.id", index=True)
    # GeoJSON geometry (WGS84, lon/lat order) or None for grids without a drawn boundary.
    geometry: dict | None = json_column()


class Department(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(unique=True, max_length=32)
    name: str = Field(max_length=128)
    phone: str | None = Field(default=None, max_length=32)


class Worker(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(unique=True, max_length=32)
    name: str = Field(max_length=64)
    role: WorkerRole = Field(default=WorkerRole.grid_worker, sa_type=enum_type(WorkerRole))
    phone: str | None = Field(default=None, max_length=32, index=True)
    active: bool = True


class WorkerGrid(SQLModel, table=True):
    """Which grids a worker answers for; a worker may cover several micro grids."""

    worker_id: int = Field(foreign_key="worker.id", primary_key=True)
    grid_id: int = Field(foreign_key="grid.id", primary_key=True, index=True)
    is_leader: bool = False


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


class CategorySla(SQLModel, table=True):
    """Deadlines in working hours per category and urgency."""

    category_id: int = Field(foreign_key="category.id", primary_key=True)
    urgency: Urgency = Field(primary_key=True, sa_type=enum_type(Urgency))
    response_hours: float
    resolution_hours: float


class CalendarDay(SQLModel, table=True):
    """Exceptions to the Monday–Friday week: public holidays and make-up working days."""

    day: date = Field(primary_key=True)
    is_working: bool
    note: str = Field(default="", max_length=64)


class Household(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(unique=True, max_length=32)
    address: str = Field(max_length=256)
    grid_id: int = Field(foreign_key="grid.id", index=True)


class Resident(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str | None = Field(default=None, max_length=64)
    phone: str | None = Field(default=None, max_length=32, index=True)
    household_id: int | None = Field(default=None, foreign_key="household.id", index=True)
    chat_id: str | None = Field(default=None, max_length=64, index=True)
    language: str = Field(default="zh", max_length=8)
    created_at: NaiveDatetime = Field(default_factory=utcnow)
    # Never phoned by a machine (the follow-up goes to the operator's manual-call list, or is
    # not evaluated, as rules.toml [survey.phone] do_not_call says).
    do_not_call: bool = False
    # Replied 退订/TD to a progress SMS: no more progress SMS.
    sms_opted_out_at: NaiveDatetime | None = None


class GazetteerEntry(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128, index=True)
    kind: str = Field(max_length=16)  # community, building, street, landmark, alias
    grid_id: int = Field(foreign_key="grid.id", index=True)


class IndexVersion(SQLModel, table=True):
    """Bumped in the same transaction as every change to what the routing indexes are built
    from (grids, gazetteer, households, calendar), so every process knows when to rebuild
    its copy (``core.indexes``)."""

    name: str = Field(primary_key=True, max_length=32)
    version: int = 0
    changed_at: NaiveDatetime = Field(default_factory=utcnow)


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

    latitude: float | None = None
    longitude: float | None = None
    address_text: str | None = Field(default=None, max_length=256)

    category_id: int | None = Field(default=None, foreign_key="category.id")
    urgency: Urgency = Field(default=Urgency.normal, sa_type=enum_type(Urgency))
    grid_id: int | None = Field(default=None, foreign_key="grid.id")
    routing_reason: str | None = Field(default=None, max_length=256)
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
    # period is then one pass over its cases (core.figures), not a join to every survey.
    surveys_answered: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    surveys_satisfied: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    # When the retention period ran out and the case's personal data was shredded
    # (core.actions.privacy): what is left are the anonymous figures.
    shredded_at: NaiveDatetime | None = None


class CaseEvent(SQLModel, table=True):
    """The audit trail: one row for every change of a case, written with the change."""

    # A case's history in order; on PostgreSQL it also carries what the quarterly scores read
    # of each event (core.scores), so they come from the index alone.
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


class SurveyStatus(enum.StrEnum):
    pending = "pending"
    answered = "answered"
    unreachable = "unreachable"


# The answers to "are you satisfied?" the satisfaction rate (满意率) counts as satisfied.
SATISFIED = frozenset({"satisfied", "basically"})


class Survey(SQLModel, table=True):
    """The follow-up (回访) after verification; phone and chat answers land here alike."""

    id: int | None = Field(default=None, primary_key=True)
    case_id: int = Field(foreign_key="case.id", index=True)
    channel: str = Field(max_length=16)
    status: SurveyStatus = Field(default=SurveyStatus.pending, sa_type=enum_type(SurveyStatus))
    attempts: int = 0
    solved: str | None = Field(default=None, max_length=16)  # solved / partly / not
    satisfied: str | None = Field(default=None, max_length=16)  # satisfied / basically / not
    comment: str | None = Field(default=None, sa_column=Column(Text))
    created_at: NaiveDatetime = Field(default_factory=utcnow)
    answered_at: NaiveDatetime | None = None


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


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"


class Job(SQLModel, table=True):
    """A durable unit of background work (survey calls, notifications, SLA sweeps)."""

    __table_args__ = (
        Index("ix_job_claim", "status", "run_at"),
        UniqueConstraint("dedupe_key", name="uq_job_dedupe"),
    )

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=32)
    payload: dict | None = json_column()
    dedupe_key: str | None = Field(default=None, max_length=128)
    status: JobStatus = Field(default=JobStatus.queued, sa_type=enum_type(JobStatus))
    run_at: NaiveDatetime = Field(default_factory=utcnow)
    attempts: int = 0
    max_attempts: int = 5
    locked_by: str | None = Field(default=None, max_length=64)
    locked_until: NaiveDatetime | None = None
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: NaiveDatetime = Field(default_factory=utcnow)


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
    started_at: NaiveDatetime = Field(default_factory=utcnow)
    ended_at: NaiveDatetime | None = None
    duration_s: int | None = None
    updated_at: NaiveDatetime = Field(default_factory=utcnow)
    # The instance that last moved the call on (core.instances): the recovery sweep leaves
    # the call alone while that instance's lease is alive.
    instance_id: str | None = Field(default=None, max_length=32)


class ChannelState(SQLModel, table=True):
    """Small durable key/value state of a channel (chat dialogs, bot data)."""

    namespace: str = Field(primary_key=True, max_length=32)
    key: str = Field(primary_key=True, max_length=128)
    data: dict | list | None = json_column()
    updated_at: NaiveDatetime = Field(default_factory=utcnow)


class ChatInbox(SQLModel, table=True):
    """A Telegram update accepted (Telegram heard 200) and not yet handled (``chat.inbox``).
    ``chat_id`` lets whichever instance holds a chat take its earlier updates first;
    ``retry_at`` parks an update that keeps failing so the chat's later ones go on."""

    __tablename__ = "chat_inbox"
    __table_args__ = (Index("ix_chat_inbox_chat", "chat_id", "update_id"),)

    update_id: int = Field(primary_key=True, sa_type=sa.BigInteger, sa_column_kwargs={"autoincrement": False})
    chat_id: int | None = Field(default=None, sa_type=sa.BigInteger)
    data: dict | None = json_column()
    accepted_at: NaiveDatetime = Field(default_factory=utcnow)
    retry_at: NaiveDatetime | None = None


class ChatHead(SQLModel, table=True):
    """A chat's version: raised by every write of its dialog state or data, so an instance
    knows whether what it holds in memory is still what the database holds (``chat.gate``)."""

    __tablename__ = "chat_head"

    chat_id: int = Field(primary_key=True, sa_type=sa.BigInteger, sa_column_kwargs={"autoincrement": False})
    version: int = Field(default=0, sa_type=sa.BigInteger)
    updated_at: NaiveDatetime = Field(default_factory=utcnow)


class SeenMessage(SQLModel, table=True):
    """Inbound message ids already handled, so redelivered webhooks are ignored."""

    channel: str = Field(primary_key=True, max_length=16)
    external_id: str = Field(primary_key=True, max_length=128)
    at: NaiveDatetime = Field(default_factory=utcnow, index=True)


class Attachment(SQLModel, table=True):
    """A file of a case (the caller's recording, a voice note, a photo) in the media store
    (``core.media``). ``path`` is its key: relative to the data directory, where the
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


class AuditEntry(SQLModel, table=True):
    """Who changed what outside a case (a resident's link, a user, a worker) and who looked
    at personal data, from where. Case changes are ``CaseEvent`` rows."""

    __table_args__ = (Index("ix_auditentry_target", "target_type", "target_id"),)

    id: int | None = Field(default=None, primary_key=True)
    at: NaiveDatetime = Field(default_factory=utcnow, index=True)
    actor: str = Field(max_length=64)
    action: str = Field(max_length=48)
    target_type: str = Field(max_length=32)
    target_id: str | None = Field(default=None, max_length=64)
    detail: dict | None = json_column()
    remote: str | None = Field(default=None, max_length=64)


# ---- Console (console/): accounts, their grids, login sessions, and the indexes its pages need.


class ConsoleUser(SQLModel, table=True):
    """A person who logs in to the console. ``role`` names an entry of rules.toml
    ``[console.roles]``; a worker or department account is tied to its ``Worker`` or
    ``Department`` and sees only what that one owns or what lies in its grids."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, max_length=64)
    password_hash: str = Field(max_length=256)
    role: str = Field(max_length=16)
    worker_id: int | None = Field(default=None, foreign_key="worker.id")
    department_id: int | None = Field(default=None, foreign_key="department.id")
    language: str = Field(default="zh", max_length=8)
    disabled: bool = False
    created_at: NaiveDatetime = Field(default_factory=utcnow)
    last_login_at: NaiveDatetime | None = None


class ConsoleUserGrid(SQLModel, table=True):
    """Grids a console account answers for (a grid includes every grid below it)."""

    user_id: int = Field(foreign_key="consoleuser.id", primary_key=True)
    grid_id: int = Field(foreign_key="grid.id", primary_key=True)


class ConsoleSession(SQLModel, table=True):
    """A login. The cookie carries a random token; only its SHA-256 is stored, so a copy of
    the database opens no session. Deleting the row logs the browser out at once."""

    id: str = Field(primary_key=True, max_length=64)
    user_id: int = Field(foreign_key="consoleuser.id", index=True)
    data: dict | None = json_column()
    remote: str | None = Field(default=None, max_length=64)
    created_at: NaiveDatetime = Field(default_factory=utcnow)
    last_seen_at: NaiveDatetime = Field(default_factory=utcnow)
    expires_at: NaiveDatetime = Field(index=True)


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
Index("ix_survey_channel_status", Survey.channel, Survey.status)
# Login rate limiting counts recent failures per address.
Index("ix_auditentry_action_remote_at", AuditEntry.action, AuditEntry.remote, AuditEntry.at)


class StaffChat(SQLModel, table=True):
    """A Telegram chat linked to a grid worker, or to a department's contact person: it gets
    their dispatch messages, checks and reminders, and its buttons act for them. A chat is
    a staff chat or a resident's chat, never both (``core.staff``)."""

    chat_id: str = Field(primary_key=True, max_length=64)
    worker_id: int | None = Field(default=None, foreign_key="worker.id", index=True, unique=True)
    department_id: int | None = Field(default=None, foreign_key="department.id", index=True, unique=True)
    language: str = Field(default="zh", max_length=8)
    via: str = Field(max_length=16)  # contact, invite
    linked_at: NaiveDatetime = Field(default_factory=utcnow)


class StaffInvite(SQLModel, table=True):
    """A signed, single-use invitation to link a chat (``gridline workers invite``); the
    nonce is the token's identity, ``used_at`` makes it single-use."""

    nonce: str = Field(primary_key=True, max_length=16)
    worker_id: int | None = Field(default=None, foreign_key="worker.id", index=True)
    department_id: int | None = Field(default=None, foreign_key="department.id", index=True)
    created_at: NaiveDatetime = Field(default_factory=utcnow)
    expires_at: NaiveDatetime
    used_at: NaiveDatetime | None = None
    used_by_chat: str | None = Field(default=None, max_length=64)


# ---- Reports, Open311 and privacy (core/reports.py, console/open311.py, core/actions/privacy.py).

# The figures of a period (core.figures, core.reports) count the cases received in it, and
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
# used verbatim (as SQL text, not bound values) by core.reports, so both databases can prove
# the query matches the index.
RECEIVED_PREDICATE = "status <> 'merged'"
CLOSED_PREDICATE = "status = 'closed'"
Index("ix_case_received_day", Case.created_at,
      postgresql_where=sa.text(RECEIVED_PREDICATE), sqlite_where=sa.text(RECEIVED_PREDICATE))
Index("ix_case_closed_day", Case.closed_at,
      postgresql_where=sa.text(CLOSED_PREDICATE), sqlite_where=sa.text(CLOSED_PREDICATE))
Index("ix_survey_created", Survey.created_at)
# Reports list the escalations (and other events of one kind) inside a period; the quarterly
# scores start from a period's dispatches and escalations and read their cases' events in order.
Index("ix_caseevent_action_at", CaseEvent.action, CaseEvent.at, postgresql_include=["case_id", "id"])


# Every instance's recovery sweep looks for calls without a case or an outcome every few
# seconds: a narrow partial index keeps that a short read however many calls were ever taken.
UNSETTLED_CALL_PREDICATE = "case_id IS NULL AND outcome IS NULL"
Index("ix_callsession_unsettled", CallSession.updated_at,
      postgresql_where=sa.text(UNSETTLED_CALL_PREDICATE), sqlite_where=sa.text(UNSETTLED_CALL_PREDICATE))


class ApiKey(SQLModel, table=True):
    """A key another system (a city 12345 platform, a mobile app) files Open311 requests
    with (``gridline apikeys add NAME``). Only a SHA-256 of the key is stored: the key is
    shown once, when it is made."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, max_length=64)
    key_hash: str = Field(unique=True, max_length=64)
    prefix: str = Field(max_length=12)  # the key's first characters, to tell keys apart in a list
    created_at: NaiveDatetime = Field(default_factory=utcnow)
    disabled_at: NaiveDatetime | None = None
    last_used_at: NaiveDatetime | None = None


class Instance(SQLModel, table=True):
    """One running Gridline process and its lease: alive while ``heartbeat_at`` is fresh
    (core.instances). Work an instance holds (a call, a stream) is another's to recover
    only once the lease has run out."""

    id: str = Field(primary_key=True, max_length=32)
    host: str = Field(default="", max_length=128)
    pid: int = 0
    started_at: NaiveDatetime = Field(default_factory=utcnow)
    heartbeat_at: NaiveDatetime = Field(default_factory=utcnow, index=True)


class StreamSegment(SQLModel, table=True):
    """One turn of a caller heard on a Media Streams socket, handed from the instance that
    holds the socket to whichever instance serves the call's next webhook (ivr.handover):
    where its audio is, how long, its words once recognised, and the flow's request to stop
    taking audio."""

    __table_args__ = (UniqueConstraint("call_sid", "segment", name="uq_streamsegment_turn"),)

    id: int | None = Field(default=None, primary_key=True)
    call_sid: str = Field(max_length=64)
    segment: str = Field(max_length=32)
    instance_id: str | None = Field(default=None, max_length=32)  # holds the socket
    audio_path: str | None = Field(default=None, max_length=512)
    duration: float = 0.0
    speech_s: float = 0.0
    transcript: list[dict] | None = json_column()  # the recogniser's final segments
    final: bool = False  # the transcript is complete
    live: bool = False  # recognised as it was spoken
    ended_by: str | None = Field(default=None, max_length=16)
    audio_closed: bool = False  # no more audio will come
    done: bool = False  # audio closed and recognition over (or never started)
    end_requested: str | None = Field(default=None, max_length=16)  # the flow's reason to stop
    created_at: NaiveDatetime = Field(default_factory=utcnow)
    updated_at: NaiveDatetime = Field(default_factory=utcnow, index=True)
