"""Readable case numbers: the local date and a per-day sequence (``2611170001``), short
enough to read out digit by digit on the phone, sortable, and unique without a global
counter row."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session

from core.cases.models import CaseSequence
from core.platform.clock import utcnow


def local_day(at: datetime, tz: str) -> str:
    return at.replace(tzinfo=ZoneInfo("UTC")).astimezone(ZoneInfo(tz)).strftime("%y%m%d")


def next_case_number(session: Session, at: datetime | None = None, tz: str = "Asia/Shanghai") -> str:
    """YYMMDD + a per-day sequence of at least four digits."""
    day = local_day(at or utcnow(), tz)
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = (
        insert(CaseSequence)
        .values(day=day, last=1)
        .on_conflict_do_update(index_elements=["day"], set_={"last": CaseSequence.last + 1})
        .returning(CaseSequence.last)
    )
    seq = session.execute(stmt).scalar_one()
    return f"{day}{seq:04d}"
