"""Tables only the chat channel uses: the inbox of accepted updates, each chat's version,
and the message ids already handled.
"""

from __future__ import annotations

import sqlalchemy as sa
from pydantic import NaiveDatetime
from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from core.platform.clock import utcnow
from core.platform.models import json_column


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
