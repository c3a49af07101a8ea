"""Tables of people: departments, workers and their grids, residents, staff chats and
invitations, Open311 keys, and the audit trail of changes that are not case changes.
"""

from __future__ import annotations

import enum

from pydantic import NaiveDatetime
from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from core.platform.clock import utcnow
from core.platform.models import enum_type, json_column


class WorkerRole(enum.StrEnum):
    grid_worker = "grid_worker"
    grid_leader = "grid_leader"
    micro_leader = "micro_leader"


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


# Login rate limiting counts recent failures per address.
Index("ix_auditentry_action_remote_at", AuditEntry.action, AuditEntry.remote, AuditEntry.at)


class StaffChat(SQLModel, table=True):
    """A Telegram chat linked to a grid worker, or to a department's contact person: it gets
    their dispatch messages, checks and reminders, and its buttons act for them. A chat is
    a staff chat or a resident's chat, never both (``core.people.staff``)."""

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
