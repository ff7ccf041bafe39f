"""The FIFO of requests awaiting a permit, and the one event-loop timer that wakes its head (no polling).

Shared by :class:`~tracegen.engine.limiter.Limiter` and :class:`~tracegen.engine.pool.EndpointPool`: the
subclass decides in :meth:`WaitQueue.wake` what the head of the queue can have now (granting it by setting
its future, or calling :meth:`WaitQueue._arm` for when it could) and frees a slot in
:meth:`WaitQueue.release`.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .limiter import Permit

__all__ = ["WaitQueue"]

_INF = math.inf


class WaitQueue:
    """Waiters ``(future, tokens)`` in arrival order and at most one armed timer."""

    def __init__(self) -> None:
        self._waiters: deque[tuple[asyncio.Future[Permit], int]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = _INF

    def wake(self) -> None:
        """Grant what the head of the queue can have now; arm one timer for the rest."""
        raise NotImplementedError

    def release(self, permit: Permit, used_tokens: int | None) -> None:
        """The attempt is over: free its slot."""
        raise NotImplementedError

    async def _wait_in_line(self, tokens: int) -> Permit:
        """Queue for ``tokens`` and await the grant; a grant that raced a cancellation is released."""
        fut: asyncio.Future[Permit] = asyncio.get_running_loop().create_future()
        self._waiters.append((fut, tokens))
        self.wake()
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(fut.result(), used_tokens=0)
            raise

    def _arm(self, wait_s: float) -> None:
        """Call :meth:`wake` in ``wait_s`` seconds, unless the armed timer fires by then anyway."""
        loop = asyncio.get_running_loop()
        at = loop.time() + wait_s
        if self._timer is not None:
            if self._timer_at <= at + 1e-4:
                return
            self._timer.cancel()
        self._timer_at = at
        self._timer = loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = _INF
        self.wake()
