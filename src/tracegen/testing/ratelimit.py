"""Server-side RPM / TPM enforcement for the fake server, with OpenAI's ``x-ratelimit-*`` headers.

A request costs 1 request and ``prompt_tokens + n * max_tokens`` tokens (OpenAI counts the request's maximum,
not what the answer used; nothing is refunded). A request refused with 429 costs nothing. Two modes:

``rolling``
    At most ``limit`` requests / tokens admitted within any 60-second window (a sliding log of admissions).
    ``remaining`` = limit - usage inside the current window; ``reset`` = time until everything inside the
    window has aged out (the limit is back to its initial state); ``retry-after`` = time until enough usage
    ages out for the refused request to fit.

``per_second``
    Pro rata per second, as OpenAI quantizes large limits: a bucket holding at most ``limit / 60`` (one
    second's share) refilled continuously at ``limit / 60`` per second. A request fits when the bucket holds
    its cost, or when the bucket is full (a request bigger than one second's share then drives the bucket
    negative, so the long-run rate still equals the limit). ``remaining`` = whole units in the bucket;
    ``reset`` = time until the bucket is full; ``retry-after`` = time until the request fits.

In both modes ``x-ratelimit-limit-*`` is the per-minute limit, as OpenAI sends it. A request whose token cost
exceeds the per-minute token limit can never fit: it is refused 429 "Request too large" with no retry-after.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

__all__ = ["Decision", "RateLimiter", "format_duration"]

WINDOW_S = 60.0


def format_duration(seconds: float) -> str:
    """A duration as OpenAI's headers spell it (Go style): "20ms", "1s", "1.5s", "6m0s", "1h0m0s"."""
    ms = max(0, math.ceil(seconds * 1000 - 1e-6))
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest_ms = divmod(ms, 3_600_000)
    minutes, rest_ms = divmod(rest_ms, 60_000)
    secs = f"{rest_ms / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


@dataclass(frozen=True, slots=True)
class Decision:
    """Outcome of one admission attempt."""

    admitted: bool
    retry_after_s: float = 0.0
    too_large: bool = False  # the request's tokens exceed the per-minute limit: waiting will not help
    limited_by: str = ""  # "requests" | "tokens" when refused


class _Rolling:
    """Sliding 60 s log of (time, amount) admissions."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._log: deque[tuple[float, int]] = deque()

    def expire(self, now: float) -> None:
        log = self._log
        cutoff = now - WINDOW_S
        while log and log[0][0] <= cutoff:
            self.used -= log.popleft()[1]

    def fits(self, cost: int) -> bool:
        return self.used + cost <= self.limit

    def wait_s(self, cost: int, now: float) -> float:
        need = self.used + cost - self.limit
        for t, amount in self._log:
            need -= amount
            if need <= 0:
                return max(0.0, t + WINDOW_S - now)
        return WINDOW_S  # pragma: no cover - cost > limit is refused as too large first

    def take(self, cost: int, now: float) -> None:
        self._log.append((now, cost))
        self.used += cost

    def remaining(self) -> int:
        return max(0, self.limit - self.used)

    def reset_s(self, now: float) -> float:
        return max(0.0, self._log[-1][0] + WINDOW_S - now) if self._log else 0.0


class _Bucket:
    """Bucket of one second's share, refilled continuously."""

    def __init__(self, limit: int, now: float) -> None:
        self.limit = limit
        self.rate = limit / WINDOW_S
        self.capacity = self.rate
        self.level = self.capacity
        self._at = now

    def expire(self, now: float) -> None:
        if now > self._at:
            self.level = min(self.capacity, self.level + (now - self._at) * self.rate)
            self._at = now

    def fits(self, cost: int) -> bool:
        return self.level >= cost or self.level >= self.capacity - 1e-9

    def wait_s(self, cost: int, now: float) -> float:
        return max(0.0, (min(cost, self.capacity) - self.level) / self.rate)

    def take(self, cost: int, now: float) -> None:
        self.level -= cost

    def remaining(self) -> int:
        return max(0, math.floor(self.level + 1e-9))

    def reset_s(self, now: float) -> float:
        return max(0.0, (self.capacity - self.level) / self.rate)


class RateLimiter:
    """RPM and TPM limits (either may be None = unlimited); all methods take ``now`` (monotonic seconds)."""

    def __init__(
        self, requests_per_minute: int | None, tokens_per_minute: int | None, mode: str, now: float
    ) -> None:
        def make(limit: int | None) -> _Rolling | _Bucket | None:
            if limit is None:
                return None
            return _Rolling(limit) if mode == "rolling" else _Bucket(limit, now)

        self.mode = mode
        self._requests = make(requests_per_minute)
        self._tokens = make(tokens_per_minute)

    def acquire(self, tokens: int, now: float) -> Decision:
        """Admit one request costing ``tokens`` tokens now, or say why not and how long to wait."""
        req, tok = self._requests, self._tokens
        if tok is not None and tokens > tok.limit:
            return Decision(False, too_large=True, limited_by="tokens")
        if req is not None:
            req.expire(now)
        if tok is not None:
            tok.expire(now)
        req_ok = req is None or req.fits(1)
        tok_ok = tok is None or tok.fits(tokens)
        if req_ok and tok_ok:
            if req is not None:
                req.take(1, now)
            if tok is not None:
                tok.take(tokens, now)
            return Decision(True)
        wait_req = 0.0 if req_ok or req is None else req.wait_s(1, now)
        wait_tok = 0.0 if tok_ok or tok is None else tok.wait_s(tokens, now)
        return Decision(
            False,
            retry_after_s=max(wait_req, wait_tok, 0.001),
            limited_by="requests" if wait_req >= wait_tok else "tokens",
        )

    def headers(self, now: float) -> dict[str, str]:
        """The ``x-ratelimit-*`` headers as of ``now`` (only for the limits that are set)."""
        out: dict[str, str] = {}
        for name, lim in (("requests", self._requests), ("tokens", self._tokens)):
            if lim is None:
                continue
            lim.expire(now)
            out[f"x-ratelimit-limit-{name}"] = str(lim.limit)
            out[f"x-ratelimit-remaining-{name}"] = str(lim.remaining())
            out[f"x-ratelimit-reset-{name}"] = format_duration(lim.reset_s(now))
        return out

    @property
    def enabled(self) -> bool:
        return self._requests is not None or self._tokens is not None
