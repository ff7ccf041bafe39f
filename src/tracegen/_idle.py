"""Work for the event loop's idle time: what a run can do while it only waits for answers.

A turn of the loop (``await asyncio.sleep(0)``) that takes longer than :data:`BUSY_S` means other callbacks
were queued -- answers streaming in, requests going out: the engine is busy and the idle work waits
:data:`BACK_OFF_S` before it looks again. Busy is not the same as CPU-bound: when the server is the
bottleneck, answers keep the loop busy while the process still waits on the network part of the time. So
after a back-off the work also goes ahead when the process left at least :data:`SPARE_MIN` of it unused
(wall time minus the process's CPU time), for as long as it left unused (at most :data:`MAX_GRANT_S`): idle
work takes the core's spare time and no more, and none when the engine uses all of it.

With 1 s answers the client's core is mostly idle, and clean's per-answer work
(:mod:`tracegen.cleaning.precheck`) and the finish step's one-time set-up (:func:`when_idle`) cost the run
no time; with a client-bound engine they yield to it and run at the end.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

__all__ = ["BACK_OFF_S", "BUSY_S", "MAX_GRANT_S", "SPARE_MIN", "idle_turn", "when_idle"]

log = logging.getLogger(__name__)

#: A turn of the event loop longer than this means the engine is busy (seconds).
BUSY_S = 0.0005
#: How long idle work waits then before it looks again (seconds).
BACK_OFF_S = 0.01
#: The share of a back-off the process must have spent off the CPU for its spare time to be taken.
SPARE_MIN = 0.05
#: The most spare time granted at once (seconds): the engine's answers wait that long at most.
MAX_GRANT_S = 0.01


async def idle_turn(slice_s: float = 0.0, *, spare: bool = True) -> float:
    """Wait for a turn of the event loop that finds the engine idle (then grant ``slice_s``), or, with
    ``spare``, for a back-off in which the process left the core spare (then grant that spare time, at most
    MAX_GRANT_S). Returns the seconds the caller may work before it awaits again.

    Spare time comes in gaps of a few milliseconds between answers: only work cut in slices that short may
    take it. A job that holds the loop longer (an import) waits for an idle turn, or the server would run
    out of requests while the loop is held."""
    clock, cpu = time.perf_counter, time.process_time
    while True:
        t = clock()
        await asyncio.sleep(0)
        if clock() - t <= BUSY_S:
            return slice_s
        t, c = clock(), cpu()
        await asyncio.sleep(BACK_OFF_S)
        wall = clock() - t
        unused = wall - (cpu() - c)
        if spare and unused >= SPARE_MIN * wall:
            return min(unused, MAX_GRANT_S)


async def when_idle(*jobs: Callable[[], object], after_s: float = 0.0) -> None:
    """Run each job at an idle turn of the loop (after ``after_s``); a job's failure is logged, not raised.
    A job runs whole, so it never takes spare time between answers (see :func:`idle_turn`)."""
    if after_s > 0:
        await asyncio.sleep(after_s)
    for job in jobs:
        await idle_turn(spare=False)
        try:
            job()
        except Exception:  # a warm-up is an optimisation: its failure must not touch the run
            log.debug("idle job %r failed", job, exc_info=True)
