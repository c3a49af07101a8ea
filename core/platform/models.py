"""Tables of the platform: durable jobs, channels' key/value state, running instances and
the hotline's stream turns handed between them; and the column helpers every table module uses.

Times are stored as naive UTC (``core.platform.clock.utcnow``; ``NaiveDatetime`` tells SQLModel so); working-calendar arithmetic converts
to the district's local time zone. Rules that people tune (categories, deadlines, the
escalation ladder, the calendar) are rows or data files, not code.
"""

from __future__ import annotations

import enum
from typing import Any

import sqlalchemy as sa
from pydantic import NaiveDatetime
from sqlalchemy import JSON, Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from core.platform.clock import utcnow


def enum_type(enum_cls: type[enum.Enum]) -> sa.Enum:
    # Stored as plain strings: adding a status later needs no ALTER TYPE on PostgreSQL.
    return sa.Enum(enum_cls, native_enum=False, length=24, create_constraint=False)


def json_column(**kw: Any) -> Any:
    return Field(default=None, sa_column=Column(JSON, **kw))


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
    # Claimed lowest first (core.platform.jobs.URGENT, PROMPT, BULK): a worker's dispatch
    # message goes ahead of a reminder queued before it.
    priority: int = Field(default=1, sa_column_kwargs={"server_default": "1"})
    locked_by: str | None = Field(default=None, max_length=64)
    locked_until: NaiveDatetime | None = None
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: NaiveDatetime = Field(default_factory=utcnow)


class SendBucket(SQLModel, table=True):
    """A token bucket of outgoing messages (per bot, per chat), shared by every process on
    the database (core.platform.buckets): ``tokens`` as they were at ``stamp`` (epoch seconds)."""

    __tablename__ = "send_bucket"

    key: str = Field(primary_key=True, max_length=96)
    tokens: float = 0.0
    stamp: float = 0.0


class ChannelState(SQLModel, table=True):
    """Small durable key/value state of a channel (chat dialogs, bot data)."""

    namespace: str = Field(primary_key=True, max_length=32)
    key: str = Field(primary_key=True, max_length=128)
    data: dict | list | None = json_column()
    updated_at: NaiveDatetime = Field(default_factory=utcnow)


class Instance(SQLModel, table=True):
    """One running Gridline process and its lease: alive while ``heartbeat_at`` is fresh
    (core.platform.instances). Work an instance holds (a call, a stream) is another's to recover
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


class AudioPart(SQLModel, table=True):
    """A stretch of a call's live audio kept in the database, the last resort when neither
    the spool folder nor the media store would take it (a full or read-only disk, the bucket
    away). ``key`` is the recording's storage key; ``start`` the offset of ``data`` (pcm16)
    in the recording's audio. ``ivr.spool`` writes them while the call goes on and moves
    them into the media store as one WAV when it can; ``core.platform.uploads`` deletes them
    once that WAV is confirmed in the store."""

    __tablename__ = "audio_part"
    __table_args__ = (UniqueConstraint("key", "seq"),)

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=512, index=True)
    seq: int
    start: int
    data: bytes = Field(sa_column=Column(sa.LargeBinary, nullable=False))
    created_at: NaiveDatetime = Field(default_factory=utcnow)
