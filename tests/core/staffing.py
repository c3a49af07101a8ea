"""Helpers for the staff tests on the hand-made district (``tests/core/district.py``)."""

from __future__ import annotations

from core import actions
from core.actions import Petition
from core.cases.models import Channel
from core.people import staff
from core.places.models import Grid
from core.platform.db import session_scope


def link(engine, chat_id: int, code: str) -> None:
    with session_scope(engine) as session:
        staff.link_chat(session, chat_id, staff.staff_by_code(session, code), via="test", actor="test")


def dispatched(engine, grid: Grid) -> str:
    """A 路灯 case dispatched to ``grid``; its number."""
    with session_scope(engine) as session:
        case, _ = actions.submit_petition(session, Petition(channel=Channel.chat, description="路灯坏了",
                                                            category_code="streetlight"))
        actions.dispatch(session, case, actor="op", grid_id=grid.id)
        return case.number
