"""Ending a background task: cancelled, and cancelled again until it has ended. A cancel
that lands just as a wait or a database call completes can be absorbed, and a stop must
not wait for ever (seen with the job runner on PostgreSQL)."""

from __future__ import annotations

import asyncio


async def cancel_and_wait(task: asyncio.Task, *, every: float = 1.0) -> None:
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=every)
