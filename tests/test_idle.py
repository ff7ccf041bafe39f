"""Idle-time work (tracegen/_idle.py): it runs when the loop is idle, yields while it is busy, never fails."""

from __future__ import annotations

import asyncio
import time

from tracegen import _idle


async def test_idle_work_waits_while_the_loop_is_busy_and_runs_when_it_is_idle() -> None:
    ran: list[float] = []
    busy_until = time.perf_counter() + 0.3

    async def busy() -> None:  # a callback queued at every turn, each holding the loop 2 ms
        while time.perf_counter() < busy_until:
            time.sleep(0.002)
            await asyncio.sleep(0)

    await asyncio.gather(busy(), _idle.when_idle(lambda: ran.append(time.perf_counter())))
    assert len(ran) == 1 and ran[0] >= busy_until  # not while the other task kept the loop busy


async def test_a_failing_job_is_logged_and_the_next_one_runs() -> None:
    ran: list[str] = []

    def broken() -> None:
        raise RuntimeError("warm-up bug")

    await _idle.when_idle(broken, lambda: ran.append("next"))
    assert ran == ["next"]
