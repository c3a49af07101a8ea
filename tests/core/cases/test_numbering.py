"""Case numbers (core/cases/numbering.py): per day, never given twice; on PostgreSQL a number
is taken without holding the day's counter row for the rest of the petition's transaction,
so petitions filed at once do not wait for each other's routing and dispatch."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text

from core.actions import Petition
from core.cases import intake
from core.cases.models import Channel
from core.cases.numbering import next_case_number
from core.platform.db import session_scope
from tests.core.district import build_district


def petition(key: str, n: int = 0) -> Petition:
    return Petition(channel=Channel.hotline, description="路灯不亮了", idempotency_key=key,
                    contact_phone=f"199{n:08d}")  # each from its own phone: no flood lock between them


def district(engine) -> None:
    intake.invalidate_routing()
    with session_scope(engine) as session:
        build_district(session)


def test_numbers_of_petitions_filed_at_once_are_unique_and_follow_each_other(engine):
    district(engine)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda n: intake.file_petition(engine, petition(f"at-once-{n}", n)), range(40)))
    numbers = sorted(r.case.number for r in results)
    assert len(set(numbers)) == 40
    day = numbers[0][:6]
    assert numbers == [f"{day}{n:04d}" for n in range(1, 41)]  # nothing failed: no gap either


def test_a_petition_is_numbered_and_committed_while_another_is_still_open(engine):
    """The first petition's transaction has taken its number and is still open (routing,
    dispatch): another petition takes the next number and commits meanwhile. (SQLite has one
    writer at a time: there the second waits, as it always did.)"""
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL: SQLite takes one writer at a time")
    district(engine)
    first_numbered = threading.Event()
    first_may_commit = threading.Event()
    numbers: dict[str, str] = {}

    def first() -> None:
        with session_scope(engine) as session:
            numbers["first"] = next_case_number(session)
            first_numbered.set()
            assert first_may_commit.wait(60)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert first_numbered.wait(60)
        done = {}
        second = threading.Thread(target=lambda: done.setdefault("case", intake.file_petition(engine, petition("b", 99))))
        second.start()
        second.join(60)
        filed_meanwhile = not second.is_alive()
    finally:
        first_may_commit.set()
        thread.join(60)
        second.join(60)
    assert filed_meanwhile, "the second petition waited for the first one's transaction"
    assert int(done["case"].case.number[-4:]) == int(numbers["first"][-4:]) + 1
    with engine.connect() as conn:
        assert conn.execute(text('SELECT count(*) FROM "case"')).scalar() == 1
