"""Fuzzing the Telegram webhook: updates built from the recorded real ones (tests/chat/fixtures),
with keys dropped and values of the wrong type, posted to the real bot (PTB against the fake
Bot API). Whatever arrives: no 5xx, no ERROR record, no traceback in the log, and the update
leaves the inbox (handled, or ignored at the edge)."""

from __future__ import annotations

import asyncio
import copy
import logging

import aiohttp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chat import inbox
from tests.support.fake_bot_api import load_fixture
from tests.support.waiting import until

USER = 9401
RECORDED = ("update_text", "update_command", "update_location", "update_contact", "update_voice", "update_photo",
            "update_sticker", "update_document", "update_callback_query")

# Values of every JSON type, some at the edges: what a mutated field becomes.
ODD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.lists(st.one_of(st.integers(), st.text(max_size=5)), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def recorded(name: str) -> dict:
    """A recorded update, sent by USER in their private chat (the fake Bot API knows them)."""
    update = load_fixture(name)
    body = update.get("message") or update["callback_query"]
    user = {"id": USER, "is_bot": False, "first_name": "Fu", "language_code": "zh-hans"}
    body["from"] = user
    message = body if "message" in update else body["message"]
    message["chat"] = {"id": USER, "type": "private", "first_name": "Fu"}
    return update


def paths(value: object, prefix: tuple = ()) -> list[tuple]:
    out = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        if prefix + (key,) == ("update_id",):
            continue
        out.append(prefix + (key,))
        out += paths(child, prefix + (key,))
    return out


@st.composite
def mutated_updates(draw) -> dict:
    update = recorded(draw(st.sampled_from(RECORDED)))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        candidates = paths(update)
        if not candidates:
            break
        path = draw(st.sampled_from(candidates))
        parent = update
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()):
            if isinstance(parent, dict):
                del parent[path[-1]]
            else:
                parent.pop(path[-1])
        else:
            replacement = draw(ODD_VALUES)
            # A string stays a string only where any text is fine (what a resident types):
            # elsewhere a new value is of another type than the recorded one.
            if isinstance(replacement, str) and path[-1] not in ("text", "caption"):
                replacement = [replacement]
            parent[path[-1]] = replacement
    return update


async def test_mutated_updates_never_raise(harness, caplog):
    h = harness
    h.fake.add_user(USER, "Fu", language_code="zh-hans")
    loop = asyncio.get_running_loop()
    headers = {"X-Telegram-Bot-Api-Secret-Token": h.services.settings.telegram_secret}
    session = aiohttp.ClientSession()

    async def deliver(update: dict) -> int:
        update = {**copy.deepcopy(update), "update_id": h.fake.next_update_id()}
        async with session.post(h.url + "/telegram/webhook", json=update, headers=headers) as resp:
            status = resp.status
        await until(lambda: not inbox.pending_ids(h.engine), timeout=20)
        return status

    @settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(mutated_updates())
    def post(update: dict) -> None:
        caplog.clear()
        status = asyncio.run_coroutine_threadsafe(deliver(update), loop).result()
        assert status < 500, update
        bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
        assert not bad, (update, [r.getMessage() for r in bad])

    try:
        await asyncio.to_thread(post)
    finally:
        await session.close()
