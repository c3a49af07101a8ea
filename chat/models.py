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


class WebChatDevice(SQLModel, table=True):
    """A phone's browser in the web chat (``chat.resident_web``): no account, a signed
    HttpOnly cookie names the row. The dialog's state and the draft are written after every
    step, with ``version`` raised, so a reload or another instance continues it."""

    __tablename__ = "web_chat_device"

    id: str = Field(primary_key=True, max_length=40)
    resident_id: int | None = Field(default=None, index=True)
    language: str = Field(default="zh", max_length=8)
    state: str | None = Field(default=None, max_length=16)
    draft: dict | None = json_column()
    messages: dict | None = json_column()  # {"items": [...]}: the conversation the page shows
    grid_hint: str | None = Field(default=None, max_length=64)  # from a grid's QR code: a hint only
    phone: str | None = Field(default=None, max_length=32)  # verified by an SMS code
    phone_verified_at: NaiveDatetime | None = None
    # A page's progress stream is open until then (refreshed while it runs): progress goes by
    # SMS only when it has passed.
    live_until: NaiveDatetime | None = None
    version: int = Field(default=0, sa_type=sa.BigInteger)
    created_at: NaiveDatetime = Field(default_factory=utcnow)
    updated_at: NaiveDatetime = Field(default_factory=utcnow)


class WebChatRequest(SQLModel, table=True):
    """A post of the page already answered: its idempotency key (made by the page, kept
    with a message queued offline) and the answer, so a post sent again is answered the
    same and does nothing twice."""

    __tablename__ = "web_chat_request"

    device_id: str = Field(primary_key=True, max_length=40)
    key: str = Field(primary_key=True, max_length=64)
    answer: dict | None = json_column()
    at: NaiveDatetime = Field(default_factory=utcnow, index=True)


class WebChatSecret(SQLModel, table=True):
    """The key that signs the web chat's device cookies, CSRF tokens and grid codes: made
    once by the first instance, shared by all (``GRIDLINE_WEB_CHAT_SECRET`` overrides it)."""

    __tablename__ = "web_chat_secret"

    id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    secret: str = Field(max_length=128)


class WebChatPhoneCode(SQLModel, table=True):
    """A code sent by SMS to verify a number for a device: kept as an HMAC only, with its
    expiry and the wrong tries; the rows of the last hour count the sends per device and
    per number."""

    __tablename__ = "web_chat_phone_code"

    id: int | None = Field(default=None, primary_key=True)
    device_id: str = Field(max_length=40, index=True)
    phone: str = Field(max_length=32, index=True)  # E.164
    code_hash: str = Field(max_length=64)
    created_at: NaiveDatetime = Field(default_factory=utcnow, index=True)
    expires_at: NaiveDatetime
    attempts: int = 0
    used_at: NaiveDatetime | None = None
