"""Tables of deadlines: per-category deadlines (SLA) and the working calendar's days.
"""

from __future__ import annotations

from datetime import date

from sqlmodel import Field, SQLModel

from core.cases.models import Urgency
from core.platform.models import enum_type


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
