"""Idle-time work (tracegen/_idle.py): it runs when the loop is idle or the core has spare time, yields while
the engine keeps the core busy, never fails."""

from __future__ import annotations

import asyncio
import time

import pytest

from tracegen import _idle


async def test_idle_work_waits_while_the_loop_is_busy_and_runs_when_it_is_idle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Spare time is measured as wall minus process CPU: on a loaded test machine, time preempted by other
    # processes would count as spare. The spare-time grant is tested below; here only the loop's turns.
    monkeypatch.setattr(_idle, "SPARE_MIN", 2.0)
    ran: list[float] = []
    busy_until = time.perf_counter() + 0.3

    async def busy() -> None:  # a callback queued at every turn, each computing for 2 ms
        while time.perf_counter() < busy_until:
            spin(0.002)
            await asyncio.sleep(0)

    await asyncio.gather(busy(), _idle.when_idle(lambda: ran.append(time.perf_counter())))
    assert len(ran) == 1 and ran[0] >= busy_until  # not while the other task kept the core busy


def spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


async def test_a_loop_busy_but_waiting_grants_its_spare_time() -> None:
    """Answers arriving at every turn keep the loop busy; when handling them leaves the core half idle (the
    server is the bottleneck), idle work gets that spare time, at most MAX_GRANT_S at once."""
    grants: list[float] = []
    stop = time.perf_counter() + 1.0

    async def busy_half() -> None:  # each turn: 1 ms of CPU, then 1 ms waiting (as on a socket)
        while time.perf_counter() < stop:
            spin(0.001)
            time.sleep(0.001)
            await asyncio.sleep(0)

    async def idle_work() -> None:
        grants.append(await _idle.idle_turn(0.002))

    await asyncio.gather(busy_half(), idle_work())
    assert len(grants) == 1 and 0.002 <= grants[0] <= _idle.MAX_GRANT_S


async def test_a_failing_job_is_logged_and_the_next_one_runs() -> None:
    ran: list[str] = []

    def broken() -> None:
        raise RuntimeError("warm-up bug")

    await _idle.when_idle(broken, lambda: ran.append("next"))
    assert ran == ["next"]
