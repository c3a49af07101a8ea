"""Waiting in tests: for a condition or an event, with a generous deadline, never a fixed sleep.

The deadline only bounds a test that is going to fail; a passing test returns as soon as
the condition holds, so the deadline is long enough for a busy two-core machine::

    await until(lambda: rig.cases(), message="the hang-up became a case")
    case = (await until(rig.cases))[0]         # returns the condition's (truthy) value
    await until(bot.ready)                     # an asyncio.Event
    wait_until(lambda: path.exists())          # the same from synchronous code
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["DEADLINE_S", "bound_socket", "until", "wait_until"]

DEADLINE_S = 15.0
POLL_S = 0.02

T = TypeVar("T")


def _describe(condition: object, message: str) -> str:
    return message or getattr(condition, "__qualname__", None) or repr(condition)


async def until(
    condition: Callable[[], T | Awaitable[T]] | asyncio.Event,
    *,
    timeout: float = DEADLINE_S,
    message: str = "",
    interval: float = POLL_S,
) -> T | bool:
    """Wait until ``condition()`` is truthy (it may be a coroutine function) or the
    event is set; returns the truthy value. Raises ``AssertionError`` at the deadline."""
    if isinstance(condition, asyncio.Event):
        try:
            await asyncio.wait_for(condition.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"not set within {timeout} s: {_describe(condition, message)}") from None
        return True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"not met within {timeout} s: {_describe(condition, message)}")
        await asyncio.sleep(interval)


def wait_until(
    condition: Callable[[], T] | threading.Event,
    *,
    timeout: float = DEADLINE_S,
    message: str = "",
) -> T | bool:
    """``until`` for synchronous code (threads, subprocesses)."""
    if isinstance(condition, threading.Event):
        if not condition.wait(timeout):
            raise AssertionError(f"not set within {timeout} s: {_describe(condition, message)}")
        return True
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not met within {timeout} s: {_describe(condition, message)}")
        time.sleep(POLL_S)


def bound_socket(host: str = "127.0.0.1") -> socket.socket:
    """A listening socket on a free port, held from the start (``web.SockSite``): no window
    between finding a free port and binding it for another test to take."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(128)
    return sock
