"""A circuit breaker for a run that is failing: most recent attempts failed with the same error.

A bad key on a gateway that answers 400 or 500 instead of 401, a misspelt model behind a proxy that says
500, an upstream that is gone: every record would spend all its attempts on the same error and the run
would "complete" with everything in failed.jsonl. The breaker watches the outcome of every attempt (not
rate-limit 429s, 503s or timeouts: those are load signals the limiter handles) in a sliding window of the last
``window`` outcomes; once it has seen ``min_outcomes`` of them and ``share`` of the window are failures with
the same :func:`~.classify.error_signature`, it trips, and the run stops with one message naming the error.

With the defaults (10 outcomes, window 50, share 0.9): a run whose first 10 attempts fail the same way stops
after those 10; later, 45 of the last 50. A server failing 60% of requests at random does not trip it
(retries get most records through).
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Any

from .classify import error_signature

__all__ = ["CircuitBreaker"]

_OK = ("ok",)


class CircuitBreaker:
    """Counts attempt outcomes; :meth:`failure` returns True when the run should stop."""

    def __init__(self, *, window: int = 50, min_outcomes: int = 10, share: float = 0.9) -> None:
        self.window = window
        self.min_outcomes = min_outcomes
        self.share = share
        self._recent: deque[tuple[Any, ...]] = deque(maxlen=window)
        self._counts: Counter[tuple[Any, ...]] = Counter()
        self.tripped: tuple[int, int] | None = None
        """(same, of) when tripped: that many of the last ``of`` outcomes failed with the same error."""

    def _push(self, sig: tuple[Any, ...]) -> None:
        recent = self._recent
        if len(recent) == recent.maxlen:
            old = recent.popleft()
            self._counts[old] -= 1
        recent.append(sig)
        self._counts[sig] += 1

    def success(self) -> None:
        """An attempt got an answer."""
        # a window already full of successes stays as it is: pushing one more would change nothing
        if self.tripped is None and self._counts[_OK] < self.window:
            self._push(_OK)

    def failure(self, exc: BaseException) -> bool:
        """An attempt failed with ``exc``; True if this trips the breaker (once)."""
        if self.tripped is not None:
            return False
        sig = error_signature(exc)
        self._push(sig)
        n = len(self._recent)
        same = self._counts[sig]
        if n >= self.min_outcomes and same >= self.share * n:
            self.tripped = (same, n)
            return True
        return False
