"""Tables only the console uses: its users, the grids they may see, and their sessions.
"""

from __future__ import annotations

from pydantic import NaiveDatetime
from sqlmodel import Field, SQLModel

from core.platform.clock import utcnow
from core.platform.models import json_column


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
