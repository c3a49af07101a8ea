"""The wait helpers: return as soon as the condition holds, fail clearly at the deadline."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tests.support.waiting import until, wait_until


async def test_until_returns_the_value_once_it_holds():
    items: list[int] = []
    asyncio.get_running_loop().call_later(0.05, items.append, 7)
    assert await until(lambda: items) == [7]


async def test_until_awaits_coroutine_conditions_and_events():
    event = asyncio.Event()
    asyncio.get_running_loop().call_soon(event.set)
    assert await until(event) is True

    async def ready() -> str:
        return "yes"

    assert await until(ready) == "yes"


async def test_until_fails_with_the_message_at_the_deadline():
    with pytest.raises(AssertionError, match="not met within 0.1 s: the case was filed"):
        await until(lambda: False, timeout=0.1, message="the case was filed")
    with pytest.raises(AssertionError, match="not set within 0.1 s"):
        await until(asyncio.Event(), timeout=0.1)


def test_wait_until_from_synchronous_code():
    done = threading.Event()
    threading.Timer(0.05, done.set).start()
    assert wait_until(done) is True
    assert wait_until(lambda: done.is_set() and "ok") == "ok"
    with pytest.raises(AssertionError, match="not met within 0.1 s"):
        wait_until(lambda: None, timeout=0.1)
