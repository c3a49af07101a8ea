"""Fuzzing Open311: query parameters of requests.json/.xml and POST bodies of requests.json
with any text, dates near and beyond the calendar's ends, numbers of every kind, through the
real app on both databases. Whatever is sent: no 5xx, no ERROR record, no traceback; every
answer is the spec's list (or list of errors)."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.console.test_open311 import api, world  # noqa: F401  (fixtures)

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
W3C = st.one_of(
    st.builds(lambda at, minutes: at.replace(tzinfo=timezone(timedelta(minutes=minutes))).isoformat(),
              st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
              st.integers(min_value=-23 * 60, max_value=23 * 60)),
    st.sampled_from(["9999-12-31T00:00:00Z", "0001-01-01T00:00:00+08:00", "2026-11-01T00:00:00Z",
                     "2026-11-01T00:00:00", "2026-11-01"]),
    TEXT,
)
NUMBERS = st.one_of(st.floats().map(repr), st.integers(min_value=-(10**30), max_value=10**30).map(str),
                    st.sampled_from(["nan", "inf", "-inf", "1e999", "26.39", "117.79"]), TEXT)
GET_QUERIES = st.fixed_dictionaries({}, optional={
    "start_date": W3C, "end_date": W3C, "status": st.one_of(st.sampled_from(["open", "closed", "open,closed"]), TEXT),
    "service_code": st.one_of(st.sampled_from(["streetlight", "flying_lead"]), TEXT),
    "service_request_id": TEXT, "jurisdiction_id": TEXT})
POST_FORMS = st.fixed_dictionaries({"client_request_id": st.one_of(st.from_regex(r"[A-Za-z0-9]{1,20}", fullmatch=True),
                                                                   TEXT)}, optional={
    "service_code": st.one_of(st.sampled_from(["streetlight", "flying_lead"]), TEXT),
    "lat": NUMBERS, "long": NUMBERS, "address_string": TEXT, "address_id": TEXT, "description": TEXT,
    "phone": TEXT, "first_name": TEXT, "last_name": TEXT, "email": TEXT, "account_id": TEXT,
    "jurisdiction_id": TEXT, "api_key": TEXT})


async def test_any_request_is_answered_without_a_server_error(api, world, caplog):  # noqa: F811
    loop = asyncio.get_running_loop()

    async def send(method: str, fmt: str, data: dict) -> tuple[int, str]:
        if method == "GET":
            resp = await api.get(f"/open311/v2/requests.{fmt}", params=data)
        else:
            resp = await api.post(f"/open311/v2/requests.{fmt}", data=data)
        return resp.status, await resp.text()

    @settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.one_of(st.tuples(st.just("GET"), st.sampled_from(["json", "xml"]), GET_QUERIES),
                     st.tuples(st.just("POST"), st.just("json"), POST_FORMS),
                     st.tuples(st.just("POST"), st.just("json"), POST_FORMS.map(
                         lambda form: {**form, "api_key": world.keys["city"]}))))
    def request(call: tuple[str, str, dict]) -> None:
        caplog.clear()
        status, body = asyncio.run_coroutine_threadsafe(send(*call), loop).result()
        assert status < 500, (call, status, body)
        if call[1] == "json":
            assert isinstance(json.loads(body), list), body
        bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
        assert not bad, (call, [r.getMessage() for r in bad])

    await asyncio.to_thread(request)
