"""Work for the event loop's idle time: what a run can do while it only waits for answers.

A turn of the loop (``await asyncio.sleep(0)``) that takes longer than :data:`BUSY_S` means other callbacks
were queued -- answers streaming in, requests going out: the engine is busy and the idle work waits
:data:`BACK_OFF_S` before it looks again. With 1 s answers the client's core is mostly idle, and clean's
per-answer work (:mod:`tracegen.cleaning.precheck`) and the finish step's one-time set-up
(:func:`when_idle`) cost the run no time; at zero latency they yield to the engine and run at the end.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

__all__ = ["BACK_OFF_S", "BUSY_S", "idle_turn", "when_idle"]

log = logging.getLogger(__name__)

#: A turn of the event loop longer than this means the engine is busy (seconds).
BUSY_S = 0.0005
#: How long idle work waits then before it looks again (seconds).
BACK_OFF_S = 0.02


async def idle_turn() -> None:
    """Return at the first turn of the event loop that finds the engine idle."""
    clock = time.perf_counter
    while True:
        t = clock()
        await asyncio.sleep(0)
        if clock() - t <= BUSY_S:
            return
        await asyncio.sleep(BACK_OFF_S)


async def when_idle(*jobs: Callable[[], object], after_s: float = 0.0) -> None:
    """Run each job at an idle turn of the loop (after ``after_s``); a job's failure is logged, not raised."""
    if after_s > 0:
        await asyncio.sleep(after_s)
    for job in jobs:
        await idle_turn()
        try:
            job()
        except Exception:  # a warm-up is an optimisation: its failure must not touch the run
            log.debug("idle job %r failed", job, exc_info=True)
