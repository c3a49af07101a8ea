"""console.queries: keyset pagination (every row once, in order, across pages, while new
cases arrive), the triage predicate, search filters, and the partial triage index."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import text
from sqlmodel import select

from console import queries
from console.access import principal_for
from console.models import ConsoleUser
from core import actions
from core.cases.models import Channel
from core.errors import InvalidInput
from core.platform import clock
from core.platform.db import session_scope


def _p(session, name="op"):
    return principal_for(session, session.exec(select(ConsoleUser).where(ConsoleUser.name == name)).one())


def _file(session, n: int, start: datetime, **kw) -> list[str]:
    numbers = []
    for i in range(n):
        clock.freeze(start + timedelta(seconds=i // 2))  # pairs share a timestamp: the id breaks ties
        case, _ = actions.submit_petition(session, actions.Petition(channel=Channel.chat, description=f"第{i}件 路灯",
                                                                    **kw))
        numbers.append(case.number)
    clock.freeze(None)
    return numbers


def _all_pages(fetch) -> list[str]:
    seen, after = [], None
    for _ in range(100):
        page = fetch(after)
        seen += [c.number for c in page.rows]
        if page.next_cursor is None:
            return seen
        after = page.next_cursor
    raise AssertionError("pagination did not end")


def test_search_pages_newest_first_with_every_case_once(engine, world):
    with session_scope(engine) as session:
        numbers = _file(session, 23, datetime(2026, 11, 20, 2, 0))
    with session_scope(engine) as session:
        p = _p(session)
        f = queries.SearchFilters(text="路灯", channel="chat")
        seen = _all_pages(lambda after: queries.search(session, p, f, after, limit=5))
    assert seen == list(reversed(numbers))


def test_a_new_case_does_not_shift_the_next_page(engine, world):
    with session_scope(engine) as session:
        _file(session, 10, datetime(2026, 11, 20, 2, 0))
    with session_scope(engine) as session:
        p = _p(session)
        f = queries.SearchFilters(text="路灯")
        first = queries.search(session, p, f, None, limit=4)
        _file(session, 1, datetime(2026, 11, 21, 2, 0))  # newer than everything
        second = queries.search(session, p, f, first.next_cursor, limit=4)
    assert not {c.number for c in first.rows} & {c.number for c in second.rows}
    assert min(c.created_at for c in first.rows) >= max(c.created_at for c in second.rows)


def test_triage_pages_oldest_first_and_leaves_out_what_needs_nobody(engine, world):
    with session_scope(engine) as session:
        flagged = _file(session, 7, datetime(2026, 11, 20, 2, 0), flags=("caller_hung_up",))
        ready = _file(session, 3, datetime(2026, 11, 20, 3, 0), category_code="streetlight")
        for number in ready:  # a grid and a category, no flag: nobody needs to look
            case = actions.get_case(session, number)
            actions.locate(session, case, actor="t", grid_id=world.district.grids["micro1"].id, reason="t")
        other_flag = _file(session, 1, datetime(2026, 11, 20, 4, 0), category_code="streetlight",
                           flags=("recovered_after_restart",))
        actions.locate(session, actions.get_case(session, other_flag[0]), actor="t",
                       grid_id=world.district.grids["micro1"].id, reason="t")
    with session_scope(engine) as session:
        seen = _all_pages(lambda after: queries.triage(session, _p(session), after, limit=3))
    assert seen == [*flagged, world.triage_case]  # the fixture's case was filed now, after these
    assert not set(ready) & set(seen) and other_flag[0] not in seen  # a flag the rules do not list


def test_search_filters(engine, world):
    with session_scope(engine) as session:
        p = _p(session)

        def numbers(**kw):
            return [c.number for c in queries.search(session, p, queries.SearchFilters(**kw), None).rows]

        assert numbers(number=world.triage_case) == [world.triage_case]
        assert numbers(phone="138 0013 8000") == [world.triage_case]
        assert numbers(grid=world.district.grids["area"].code) == [world.other_grid_case]
        assert numbers(category="flying_lead") == [world.other_grid_case]
        assert numbers(status="dispatched", channel="chat") == [world.other_grid_case]
        assert numbers(text="50%_off") == []  # LIKE wildcards are literal
        assert set(numbers(date_from="2020-01-01", date_to="2099-01-01")) == {world.triage_case, world.other_grid_case}
        assert numbers(date_to="2020-01-01") == []
        with pytest.raises(InvalidInput):
            numbers(phone="abc")
        viewer = _p(session, "viewer")
        with pytest.raises(InvalidInput):
            queries.search(session, viewer, queries.SearchFilters(phone="13800138000"), None)


def test_queues_nearest_deadline_first(engine, world):
    with session_scope(engine) as session:
        for _ in range(3):
            case, _ = actions.submit_petition(session, actions.Petition(channel=Channel.chat, description="飞线",
                                                                        category_code="flying_lead"))
            actions.dispatch(session, case, actor="t", grid_id=world.district.grids["micro2"].id)
    with session_scope(engine) as session:
        p = _p(session)
        page = queries.queue(session, p, worker_id=world.district.workers["W-M2"].id, limit=2)
        rest = queries.queue(session, p, worker_id=world.district.workers["W-M2"].id, after=page.next_cursor)
        rows = page.rows + rest.rows
        assert len(rows) == 4 and [c.resolution_due for c in rows] == sorted(c.resolution_due for c in rows)
        assert page.total == rest.total == 4  # the whole queue, on every page


def test_triage_reads_the_partial_index(engine, world):
    flags = queries.triage_flags()
    with session_scope(engine) as session:
        if engine.dialect.name == "sqlite":
            plan = session.exec(text(
                'EXPLAIN QUERY PLAN SELECT id FROM "case" WHERE ' + queries.TRIAGE_INDEX_PREDICATE +
                " AND (grid_id IS NULL OR CAST(flags AS TEXT) LIKE :f) ORDER BY created_at, id LIMIT 51"),
                params={"f": f'%"{flags[0]}"%'}).all()
            compiled = " ".join(str(r[-1]) for r in plan)
        else:
            session.exec(text("SET LOCAL enable_seqscan = off"))
            plan = session.exec(text(
                'EXPLAIN SELECT id FROM "case" WHERE ' + queries.TRIAGE_INDEX_PREDICATE +
                " AND (grid_id IS NULL OR CAST(flags AS TEXT) LIKE '%\"needs_triage\"%') "
                "ORDER BY created_at, id LIMIT 51")).all()
            compiled = " ".join(str(r[0]) for r in plan)
    assert "ix_case_triage" in compiled, compiled
