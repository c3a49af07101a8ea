"""The triage page's filters, sort and total, all in its URL — over a real aiohttp server on
both databases. Three cases wait in triage (made to differ in every filtered field) and two
finished ones carry a left-over triage flag: those must never show as waiting."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from sqlmodel import select

from console import queries
from core import actions
from core.cases.models import Case, Channel
from core.platform.clock import utcnow
from core.platform.db import session_scope
from tests.console.conftest import login, manual_survey


@dataclass
class Waiting:
    hotline: str  # received, no grid, no category, flagged low_confidence; created 11-20; due in 2 days
    chat: str  # received, a category but no grid; created 11-25; 5 hours overdue
    dispatched: str  # dispatched to micro1, flagged caller_hung_up; created 11-30; 1 hour overdue
    verified: str  # verified, with a stale needs_triage flag
    closed: str  # closed, with a stale needs_triage flag


def _set(session, number: str, **fields) -> None:  # noqa: ANN001
    # Arranging the clock's past: when a case came in and its deadline, set on the row itself.
    case = session.exec(select(Case).where(Case.number == number)).one()
    for name, value in fields.items():
        setattr(case, name, value)
    session.add(case)


@pytest.fixture
def waiting(engine, world) -> Waiting:
    now = utcnow()
    with session_scope(engine) as session:
        d = world.district
        chat, _ = actions.submit_petition(session, actions.Petition(
            channel=Channel.chat, description="电动车在楼道里充电", category_code="flying_lead",
            contact_phone="+8613911113333"), actor="resident:chat")
        dispatched, _ = actions.submit_petition(session, actions.Petition(
            channel=Channel.console, description="路灯不亮，电话中断了", category_code="streetlight",
            contact_phone="+8613911114444", flags=("caller_hung_up",)), actor="console:op")
        actions.dispatch(session, dispatched, actor="system", grid_id=d.grids["micro1"].id)
        closed, _ = actions.submit_petition(session, actions.Petition(
            channel=Channel.chat, description="井盖松动", category_code="streetlight",
            contact_phone="+8613911115555"), actor="resident:chat")
        actions.close(session, closed, actor="console:op", reason="not_a_petition")
        chat_number, dispatched_number, closed_number = chat.number, dispatched.number, closed.number
        session.flush()
        _set(session, world.triage_case, created_at=datetime(2026, 11, 20, 2, 0), response_due=now + timedelta(days=2))
        _set(session, chat_number, created_at=datetime(2026, 11, 25, 2, 0), response_due=now - timedelta(hours=5))
        _set(session, dispatched_number, created_at=datetime(2026, 11, 30, 2, 0),
             response_due=now - timedelta(hours=1))
        _set(session, closed_number, flags=["needs_triage"])
    manual_survey(engine, world.other_grid_case)  # takes it to verified
    with session_scope(engine) as session:
        _set(session, world.other_grid_case, flags=["needs_triage"])
    return Waiting(world.triage_case, chat_number, dispatched_number, world.other_grid_case, closed_number)


def listed(html: str) -> list[str]:
    """The case numbers of the triage table, in the order shown."""
    table = html.split('id="triage"', 1)[1].split("</table>", 1)[0]
    return re.findall(r'<td class="number"[^>]*><a href="/console/cases/([^"]+)"', table)


def total(html: str) -> str:
    return html.split('id="triage-total">', 1)[1].split("<", 1)[0]


async def page(client, query: str = "", status: int = 200) -> str:  # noqa: ANN001
    resp = await client.get(f"/console/triage{'?' + query if query else ''}")
    html = await resp.text()
    assert resp.status == status, html
    return html


async def test_triage_lists_what_waits_with_its_total_oldest_first(client, world, waiting):
    await login(client, "op")
    html = await page(client)
    assert listed(html) == [waiting.hotline, waiting.chat, waiting.dispatched]
    assert total(html) == "共 3 件"
    # Finished cases never show as waiting, whatever flag they still carry.
    assert waiting.verified not in html and waiting.closed not in html


async def test_each_filter_narrows_the_list_and_its_total(client, world, waiting):
    await login(client, "op")
    micro1 = world.district.grids["micro1"]
    expected = {
        "status=received": [waiting.hotline, waiting.chat],
        "status=dispatched": [waiting.dispatched],
        "category=flying_lead": [waiting.chat],
        "category=路灯": [waiting.dispatched],  # a category by its name too
        f"grid={micro1.code}": [waiting.dispatched],
        f"grid={world.district.grids['community'].code}": [waiting.dispatched],  # a grid includes the ones below
        "channel=hotline": [waiting.hotline],
        "channel=console": [waiting.dispatched],
        "flag=low_confidence": [waiting.hotline],
        "flag=caller_hung_up": [waiting.dispatched],
        "flag=no_grid": [waiting.hotline, waiting.chat],
        "flag=no_category": [waiting.hotline],
        "date_from=2026-11-24": [waiting.chat, waiting.dispatched],
        "date_to=2026-11-25": [waiting.hotline, waiting.chat],
        "date_from=2026-11-25&date_to=2026-11-25": [waiting.chat],
        "overdue=yes": [waiting.chat, waiting.dispatched],
        "overdue=no": [waiting.hotline],
    }
    for query, numbers in expected.items():
        html = await page(client, query)
        assert listed(html) == numbers, query
        assert total(html) == f"共 {len(numbers)} 件", query


async def test_filters_combine(client, world, waiting):
    await login(client, "op")
    html = await page(client, "status=received&overdue=yes")
    assert listed(html) == [waiting.chat] and total(html) == "共 1 件"
    html = await page(client, "channel=chat&flag=no_category")
    assert listed(html) == [] and total(html) == "共 0 件"
    assert "没有待分拨的诉求" in html
    html = await page(client, "overdue=yes&date_from=2026-11-26&flag=caller_hung_up&channel=console")
    assert listed(html) == [waiting.dispatched]


async def test_the_sort_chosen_orders_every_page(client, world, waiting, monkeypatch):
    await login(client, "op")
    everything = {"": [waiting.hotline, waiting.chat, waiting.dispatched],
                  "sort=oldest": [waiting.hotline, waiting.chat, waiting.dispatched],
                  "sort=newest": [waiting.dispatched, waiting.chat, waiting.hotline],
                  "sort=most_overdue": [waiting.chat, waiting.dispatched, waiting.hotline]}
    for query, numbers in everything.items():
        assert listed(await page(client, query)) == numbers, query
    # Two to a page: the next page keeps the filters and the sort, and continues where the first stopped.
    monkeypatch.setattr(queries, "page_size", lambda: 2)
    for query, numbers in everything.items():
        html = await page(client, query)
        assert listed(html) == numbers[:2] and total(html) == "共 3 件", query
        more = re.search(r'<a href="/console/triage\?([^"]+)" id="more">', html).group(1).replace("&amp;", "&")
        assert query in more
        html = await page(client, more)
        assert listed(html) == numbers[2:] and total(html) == "共 3 件", query
        assert 'id="more"' not in html
    # The self-refresh keeps the filters too.
    html = await page(client, "sort=most_overdue&overdue=yes")
    assert 'hx-get="/console/triage?overdue=yes&amp;sort=most_overdue"' in html


async def test_a_shared_link_shows_the_same_page_to_another_account(client, world, waiting):
    query = "status=received&sort=newest&overdue=yes&date_from=2026-11-01"
    await login(client, "op")
    first = await page(client, query)
    await login(client, "sup")
    second = await page(client, query)
    assert listed(first) == listed(second) == [waiting.chat]
    assert total(first) == total(second) == "共 1 件"
    # The form shows the filters the link holds, so the reader sees why the list is short.
    for chosen in ('<option value="received" selected', '<option value="newest" selected',
                   '<option value="yes" selected', 'name="date_from" value="2026-11-01"'):
        assert chosen in second, chosen


async def test_a_bad_value_is_said_in_the_pages_language_never_a_500(client, world, waiting):
    await login(client, "op")
    bad = {"status=verified": ("状态", "verified"), "status=closed": ("状态", "closed"),
           "status=nonsense": ("状态", "nonsense"), "channel=fax": ("渠道", "fax"),
           "flag=shouting": ("标记", "shouting"), "overdue=maybe": ("超时", "maybe"),
           "sort=sideways": ("排序", "sideways"), "grid=no-such-grid": ("网格", "no-such-grid"),
           "category=no-such": ("类别", "no-such"),
           "date_from=2026-13-01": ("起始日期", "2026-13-01"), "date_to=0001-01-01": ("截止日期", "0001-01-01")}
    for query, (field, value) in bad.items():
        html = await page(client, query, status=422)
        error = html.split('id="error">', 1)[1].split("</p>", 1)[0]
        assert field in error and value in error, (query, error)
        assert re.search(r"[\u4e00-\u9fff]", error), error
        assert listed(html) == [], query  # no list under a filter that could not be applied
    html = await page(client, "sort=sideways&lang=en", status=422)
    assert "The filter “Sort” cannot be “sideways”" in html
    html = await page(client, "status=received&after=%%%&lang=zh", status=422)  # a damaged page link: said so
    assert "这个翻页链接已损坏" in html


async def test_a_queue_says_how_many_cases_it_holds(client, world, waiting):
    await login(client, "sup")
    html = await (await client.get("/console/queues/worker/W-M1")).text()
    assert waiting.dispatched in html
    assert html.split('id="queue-total">', 1)[1].split("<", 1)[0] == "共 1 件"
