"""Fuzzing the console's search: query strings of every filter with any text, dates near and
beyond the calendar's ends, damaged page cursors, through the real app on both databases.
Whatever is asked: no 5xx, no ERROR record, no traceback in the log."""

from __future__ import annotations

import asyncio
import base64
import logging
from datetime import date, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from console.queries import SearchFilters
from tests.console.conftest import login

# Any text a URL can carry (lone surrogates cannot be encoded at all), NUL included.
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
DATES = st.one_of(st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31)).map(date.isoformat),
                  st.sampled_from(["0001-01-01", "9999-12-31", "2026-02-30", "2026-11-20", "20261120", "-1"]), TEXT)
CURSORS = st.one_of(
    TEXT,
    st.tuples(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)).map(datetime.isoformat),
              st.integers(min_value=-(2**70), max_value=2**70))
    .map(lambda at_id: base64.urlsafe_b64encode(f"{at_id[0]}|{at_id[1]}".encode()).decode().rstrip("=")),
)
FILTERS = {name: DATES if name.startswith("date_") else TEXT for name in SearchFilters.__dataclass_fields__}
QUERIES = st.fixed_dictionaries({}, optional={**FILTERS, "after": CURSORS, "lang": st.sampled_from(["zh", "en", "xx"]),
                                             "unknown": TEXT})


async def test_any_search_is_answered_without_a_server_error(client, world, caplog):
    await login(client, "op")
    loop = asyncio.get_running_loop()

    async def search(query: dict) -> int:
        resp = await client.get("/console/search", params=query)
        await resp.read()
        return resp.status

    @settings(max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(QUERIES)
    def ask(query: dict) -> None:
        caplog.clear()
        status = asyncio.run_coroutine_threadsafe(search(query), loop).result()
        assert status < 500, (query, status)
        bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
        assert not bad, (query, [r.getMessage() for r in bad])

    await asyncio.to_thread(ask)
