"""core.runner: a job runner stops when asked, even when a wake-up arrives at the same
moment (Python 3.11's wait_for swallowed that cancel and stop() never returned)."""

from __future__ import annotations

import asyncio

from core.runner import JobRunner


class IdleRunner(JobRunner):
    async def run_once(self, lane: str | None = None) -> int:
        return 0


async def test_stop_right_after_wake_returns():
    for _ in range(200):
        runner = IdleRunner(None, poll_seconds=5)
        runner.register("anything", None)
        runner.start()
        await asyncio.sleep(0)
        await asyncio.sleep(0)  # the runner now waits for a wake-up or its poll
        runner.wake()
        stopping = asyncio.ensure_future(runner.stop())
        done, _ = await asyncio.wait({stopping}, timeout=10)
        assert stopping in done, "stop() did not return"
