"""Client-side rate limiting: RPM and TPM token buckets, a concurrency cap, and AIMD under overload.

- Buckets. A request *reserves* 1 request and ``prompt_tokens + max_tokens`` tokens. The unused part of the
  tokens is refunded when the answer arrives (:meth:`Limiter.release`) -- *unless the server reports
  ``x-ratelimit-remaining-tokens``*: OpenAI (and the fake server) count ``prompt + max_tokens`` against TPM
  and refund nothing, so refunding locally would overshoot their limit and earn 429s; once the server shows
  its own count, the limiter counts the same way. Each bucket refills continuously at ``headroom x limit /
  60`` per second (headroom 0.98 absorbs clock skew and network jitter) and holds at most ``burst_s`` seconds'
  worth (default 0.5 s: providers enforce per-minute limits in sub-minute slices -- OpenAI per second -- so a
  minute-sized burst would be answered with 429s, and half the server's one-second slice leaves margin). A request larger than the bucket passes when the bucket is full and leaves it in
  debt, so the mean rate holds.
- Awaiting, not polling. Waiters queue FIFO; the head computes when it can go (pause end, bucket refill) and
  one ``loop.call_later`` timer wakes it; releases, refunds and new limits wake it early. Nothing loops on
  ``sleep``. A waiter that needs a concurrency slot waits for a release, with no timer at all.
- Server headers. ``x-ratelimit-limit-{requests,tokens}`` teach the limits when the command line gave none
  (and lower them when the server's are lower). ``x-ratelimit-remaining-*`` correct the bucket downward:
  the server's remaining count at the time it saw the request, minus what we sent after it (refill
  meanwhile ignored: conservative), caps our own level (another client on the same key, a different count).
- Overload (AIMD). A 429 (not insufficient_quota) pauses *everybody* until its retry-after (1 s if none), empties
  the buckets and multiplies the rate by ``decrease`` (0.7). 503 and a rising latency (EWMA > max(4x its
  floor, floor + 2 s)) cut too, without the pause (latency more gently: x0.9, at most every 5 s). Only
  signals about requests sent *after* the last cut cut again, so one burst of 429s is one cut. The rate then
  recovers additively (``recover_per_s`` of the limit per second after the pause) back to 1.0x.
- Finding the rate when nobody tells it (AIMD on the request rate). A gateway's 429s often carry no
  ``x-ratelimit-*`` headers and the command line gave no ``--rpm``. The first such 429 sets a *found* request
  limit from what the server admitted: when that 429's pause ends (the burst's answers are in by then), the
  2xx answers from ``w`` seconds before the 429 until now, per ``w`` + latency seconds, where ``w`` is the
  retry-after clamped to [1, 60] s (a gateway that says "come back in 60 s" counts per minute; one that says
  1 s, or nothing, counts per second). Later 429s about requests sent after the last cut multiply it by
  ``FOUND_DECREASE`` (0.85); between them it grows additively by ``FOUND_GROWTH / w`` (3 % / w) of its
  value at the cut per second after the pause, so it settles just under the server's rate with 429s a
  small fraction. A limit taught by
  headers or the command line replaces it. Before any 429, with no limit known, the factor scales the
  concurrency window instead (503s and latency).

The clock is injectable (``clock``); timers run on the event loop, and :meth:`wake` re-evaluates waiters
(tests advance a fake clock and call it).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ._waitqueue import WaitQueue

__all__ = ["Limiter", "LimiterState", "Permit", "parse_reset_s"]

_EPS = 1e-9
#: Longest pause a retry-after may impose on the limiter (the run stops beyond it; see client.py).
MAX_PAUSE_S = 900.0
#: Found-rate AIMD: the cut on a 429, and the growth per second (of the rate at the last cut, divided by
#: the server's window in seconds).
FOUND_DECREASE = 0.85
FOUND_GROWTH = 0.03
_INF = math.inf


class Permit:
    """One granted request slot: what it reserved and where it stood in the dispatch order."""

    __slots__ = ("sent_at", "seq", "tok_seq", "tokens")

    def __init__(self, tokens: int, seq: int, tok_seq: int, sent_at: float) -> None:
        self.tokens = tokens
        self.seq = seq
        self.tok_seq = tok_seq
        self.sent_at = sent_at


class _Bucket:
    __slots__ = ("capacity", "level", "rate_per_s", "updated")

    def __init__(self, rate_per_s: float, capacity: float, now: float) -> None:
        self.rate_per_s = rate_per_s
        self.capacity = capacity
        self.level = capacity
        self.updated = now

    def refill(self, now: float, factor: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate_per_s * factor)
            self.updated = now

    def wait_s(self, amount: float, factor: float) -> float:
        need = min(amount, self.capacity)
        if self.level >= need - _EPS:
            return 0.0
        return (need - self.level) / (self.rate_per_s * factor)


@dataclass(frozen=True, slots=True)
class LimiterState:
    """A snapshot for progress displays."""

    requests_per_minute: float | None
    tokens_per_minute: float | None
    factor: float
    in_flight: int
    window: int
    paused_s: float
    n_overload: int


def parse_reset_s(raw: str) -> float | None:
    """``x-ratelimit-reset-*`` durations: "1s", "6m0s", "20ms", "1h2m3.5s", or plain seconds."""
    raw = raw.strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        pass
    else:  # negative, NaN or infinite: ignored
        return value if math.isfinite(value) and value >= 0 else None
    total = 0.0
    num = ""
    i = 0
    while i < len(raw):
        c = raw[i]
        if c.isdigit() or c == ".":
            num += c
            i += 1
            continue
        unit = "ms" if raw.startswith("ms", i) else c
        i += len(unit)
        if not num:
            return None
        scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}.get(unit)
        if scale is None:
            return None
        total += float(num) * scale
        num = ""
    return total if not num else None


class Limiter(WaitQueue):
    """RPM/TPM buckets + concurrency cap + AIMD; :meth:`acquire` awaits capacity. See the module docs."""

    def __init__(
        self,
        *,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        concurrency: int = 256,
        clock: Callable[[], float] = time.monotonic,
        burst_s: float = 0.5,
        headroom: float = 0.98,
        decrease: float = 0.7,
        recover_per_s: float = 0.05,
        min_factor: float = 0.05,
    ) -> None:
        super().__init__()
        self._clock = clock
        self._burst_s = burst_s
        self._headroom = headroom
        self._server_counts_tokens = False
        self._decrease = decrease
        self._recover_per_s = recover_per_s
        self._min_factor = min_factor
        self.concurrency = concurrency
        self._cfg_rpm = requests_per_minute
        self._cfg_tpm = tokens_per_minute
        self._hdr_rpm: float | None = None
        self._hdr_tpm: float | None = None
        # found rate (AIMD on the request rate when no limit is known): see the module docs
        self._found_rpm: float | None = None
        self._found_base = 0.0  # its value at the last cut; grows from there
        self._found_window_s = 1.0
        self._found_pending = False  # first 429 seen: measure what was admitted when its pause ends
        self._found_t429 = 0.0
        self._admitted: deque[list[float]] = deque()  # [second, 2xx answers in it], last 60 s
        now = clock()
        self._req: _Bucket | None = None
        self._tok: _Bucket | None = None
        self._set_rates(now)
        self._in_flight = 0
        self._seq = 0
        self._tok_seq = 0
        self._paused_until = -_INF
        self._cut_at = -_INF
        self._cut_factor = 1.0
        self.n_overload = 0
        self._lat_ewma: float | None = None
        self._lat_floor = _INF
        self._lat_n = 0

    # ---- limits --------------------------------------------------------------------------------------
    @staticmethod
    def _min(a: float | None, b: float | None) -> float | None:
        if a is None:
            return b
        return a if b is None else min(a, b)

    @property
    def requests_per_minute(self) -> float | None:
        """The request limit in force (command line, lowered or taught by the server's headers, or found)."""
        known = self._min(self._cfg_rpm, self._hdr_rpm)
        return self._found_rpm if known is None else known

    @property
    def found_requests_per_minute(self) -> float | None:
        """The request rate found from 429s without limit headers (None: not needed so far)."""
        return self._found_rpm

    @property
    def tokens_per_minute(self) -> float | None:
        """The token limit in force."""
        return self._min(self._cfg_tpm, self._hdr_tpm)

    def _set_rates(self, now: float) -> None:
        for name, limit in (("_req", self.requests_per_minute), ("_tok", self.tokens_per_minute)):
            bucket: _Bucket | None = getattr(self, name)
            if limit is None:
                continue
            rate = limit / 60.0 * self._headroom
            capacity = max(1.0, rate * self._burst_s)
            if bucket is None:
                setattr(self, name, _Bucket(rate, capacity, now))
            elif bucket.rate_per_s != rate:
                bucket.refill(now, self.factor(now))
                bucket.rate_per_s = rate
                bucket.capacity = capacity
                bucket.level = min(bucket.level, capacity)

    def factor(self, now: float | None = None) -> float:
        """Rate multiplier in (0, 1]: cut on overload, recovering additively after the pause."""
        if self._cut_factor >= 1.0:
            return 1.0
        now = self._clock() if now is None else now
        since = now - max(self._cut_at, self._paused_until)
        if since <= 0:
            return self._cut_factor
        f = self._cut_factor + self._recover_per_s * since
        if f >= 1.0:
            self._cut_factor = 1.0
            return 1.0
        return f

    def _window(self, now: float) -> int:
        if self._req is None and self._tok is None:
            return max(1, int(self.concurrency * self.factor(now)))
        return self.concurrency

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def refunds_unused_tokens(self) -> bool:
        """Whether an answer gives back the unused part of its reservation (not once the server counts them)."""
        return self._tok is not None and not self._server_counts_tokens

    def state(self) -> LimiterState:
        """Limits as known now, rate factor, requests in flight, remaining pause."""
        now = self._clock()
        return LimiterState(
            requests_per_minute=self.requests_per_minute,
            tokens_per_minute=self.tokens_per_minute,
            factor=self.factor(now),
            in_flight=self._in_flight,
            window=self._window(now),
            paused_s=max(0.0, self._paused_until - now),
            n_overload=self.n_overload,
        )

    # ---- acquiring -----------------------------------------------------------------------------------
    def _wait_s(self, tokens: int, now: float) -> float:
        if now < self._paused_until:
            return self._paused_until - now
        if self._found_pending:
            self._found_pending = False  # the pause is over: the burst's answers are in, measure
            w = self._found_window_s
            n = self._admitted_since(self._found_t429 - w)
            self._found_rpm = self._found_base = max(1.0, n * 60.0 / (w + (self._lat_ewma or 0.0)))
            self._cut_at = now
            self._set_rates(now)
        elif self._found_rpm is not None:
            self._grow(now)
        f = self.factor(now)
        if self._in_flight >= self._window(now):
            return _INF
        wait = 0.0
        req, tok = self._req, self._tok
        if req is not None:
            req.refill(now, f)
            wait = req.wait_s(1, f)
        if tok is not None:
            tok.refill(now, f)
            wait = max(wait, tok.wait_s(tokens, f))
        return wait

    def _grant(self, tokens: int, now: float) -> Permit:
        if self._req is not None:
            self._req.level -= 1
        if self._tok is not None:
            self._tok.level -= tokens
        self._in_flight += 1
        self._seq += 1
        self._tok_seq += tokens
        return Permit(tokens, self._seq, self._tok_seq, now)

    def wait_s(self, tokens: int) -> float:
        """Seconds until :meth:`try_acquire` could grant ``tokens`` (inf: a slot must be released first).

        Used by an endpoint pool to send each request where capacity is soonest.
        """
        if self._waiters:
            return _INF
        return self._wait_s(tokens, self._clock())

    def try_acquire(self, tokens: int) -> Permit | None:
        """Grant now if capacity allows (and nobody is queued), else None; never waits."""
        if self._waiters:
            return None
        now = self._clock()
        if self._wait_s(tokens, now) > 0.0:
            return None
        return self._grant(tokens, now)

    @property
    def max_request_tokens(self) -> float | None:
        """The largest request (prompt + max_tokens) this limiter can ever pass to the server: its TPM."""
        return self.tokens_per_minute

    async def acquire(self, tokens: int) -> Permit:
        """Wait for a slot and ``tokens`` of TPM capacity (prompt + max_tokens); returns the permit."""
        if not self._waiters:
            now = self._clock()
            if self._wait_s(tokens, now) <= 0.0:
                return self._grant(tokens, now)
        return await self._wait_in_line(tokens)

    def wake(self) -> None:
        """Grant whatever the head of the queue can have now; arm one timer for the rest."""
        waiters = self._waiters
        if not waiters:
            return
        now = self._clock()
        while waiters:
            fut, tokens = waiters[0]
            if fut.done():
                waiters.popleft()
                continue
            wait = self._wait_s(tokens, now)
            if wait <= 0.0:
                waiters.popleft()
                fut.set_result(self._grant(tokens, now))
                continue
            if wait != _INF:
                self._arm(wait)
            return

    # ---- answers -------------------------------------------------------------------------------------
    def release(self, permit: Permit, used_tokens: int | None) -> None:
        """The attempt is over: free its slot; refund tokens it did not use (None: keep them all).

        No refund once the server reports remaining tokens: it counts the reservation, not the usage.
        """
        self._in_flight -= 1
        tok = self._tok
        if (
            tok is not None
            and used_tokens is not None
            and used_tokens < permit.tokens
            and not self._server_counts_tokens
        ):
            tok.level = min(tok.capacity, tok.level + (permit.tokens - used_tokens))
        if self._waiters:
            self.wake()

    def observe(
        self,
        permit: Permit,
        *,
        status: int | None,
        headers: Mapping[str, str] | None,
        retry_after_s: float | None = None,
        latency_s: float | None = None,
    ) -> None:
        """Learn from one answer (before :meth:`release`): rate-limit headers, 429/503, latency."""
        now = self._clock()
        if headers:
            self._learn(permit, headers, now)
        if retry_after_s is not None:  # a longer wait stops the run instead (retry.fatal_error)
            retry_after_s = min(retry_after_s, MAX_PAUSE_S)
        if status == 429:
            pause_s = 1.0 if retry_after_s is None else retry_after_s
            if self._finding_rate():
                self._find_rate(permit, now, pause_s)
                self._overload(permit, now, pause_s=pause_s, cut=1.0)
            else:
                self._overload(permit, now, pause_s=pause_s, cut=self._decrease)
        elif status == 503:
            self._overload(permit, now, pause_s=retry_after_s or 0.0, cut=self._decrease)
        elif latency_s is not None and status is not None and status < 300:
            self._count_admitted(now)
            self._latency(permit, now, latency_s)
        if self._waiters:
            self.wake()

    def _overload(self, permit: Permit, now: float, *, pause_s: float, cut: float) -> None:
        self.n_overload += 1
        if pause_s > 0:
            self._paused_until = max(self._paused_until, now + pause_s)
            for bucket in (self._req, self._tok):
                if bucket is not None:
                    bucket.refill(now, self.factor(now))
                    bucket.level = min(bucket.level, 0.0)
        if permit.sent_at > self._cut_at:
            self._cut_factor = max(self._min_factor, self.factor(now) * cut)
            self._cut_at = now

    # ---- finding the rate (AIMD on requests per minute) ------------------------------------------------
    def _count_admitted(self, now: float) -> None:
        sec = math.floor(now)
        admitted = self._admitted
        if admitted and admitted[-1][0] == sec:
            admitted[-1][1] += 1
        else:
            admitted.append([sec, 1.0])
            while admitted and admitted[0][0] < sec - 60:
                admitted.popleft()

    def _admitted_since(self, since: float) -> float:
        return sum(c for sec, c in self._admitted if sec + 1 > since)

    def _finding_rate(self) -> bool:
        """No limit known from the command line or headers: the request rate must be found from 429s."""
        return all(v is None for v in (self._cfg_rpm, self._hdr_rpm, self._cfg_tpm, self._hdr_tpm))

    def _find_rate(self, permit: Permit, now: float, pause_s: float) -> None:
        if self._found_pending:
            return
        if self._found_rpm is None:
            # answers of the same burst may still be on their way: count them when the pause is over
            self._found_window_s = min(60.0, max(1.0, pause_s))
            self._found_pending = True
            self._found_t429 = now
            self._cut_at = now
            self._paused_until = max(self._paused_until, now + max(pause_s, 1.0))
            return
        if permit.sent_at > self._cut_at:
            self._grow(now)
            found = max(1.0, self._found_rpm * FOUND_DECREASE)
        else:
            return  # the same burst: one cut
        self._found_rpm = self._found_base = found
        self._cut_at = now
        self._set_rates(now)

    def _grow(self, now: float) -> None:
        """Additive increase since the last cut (after its pause): ``0.1 / window`` of the base per second."""
        since = now - max(self._cut_at, self._paused_until)
        if since <= 0 or self._found_rpm is None:
            return
        target = self._found_base * (1.0 + since * FOUND_GROWTH / self._found_window_s)
        if target > self._found_rpm * 1.01:
            self._found_rpm = target
            self._set_rates(now)

    def _latency(self, permit: Permit, now: float, latency_s: float) -> None:
        ewma = latency_s if self._lat_ewma is None else 0.9 * self._lat_ewma + 0.1 * latency_s
        self._lat_ewma = ewma
        self._lat_n += 1
        if self._lat_n < 20:
            return
        self._lat_floor = min(self._lat_floor, ewma)
        if ewma > max(4.0 * self._lat_floor, self._lat_floor + 2.0) and now - self._cut_at > 5.0:
            self.n_overload += 1
            self._cut_factor = max(self._min_factor, self.factor(now) * 0.9)
            self._cut_at = now

    def _learn(self, permit: Permit, headers: Mapping[str, str], now: float) -> None:
        changed = False
        for attr, key in (
            ("_hdr_rpm", "x-ratelimit-limit-requests"),
            ("_hdr_tpm", "x-ratelimit-limit-tokens"),
        ):
            raw = headers.get(key)
            if raw:
                try:
                    value = float(raw)
                except ValueError:
                    continue
                if not (1.0 <= value < 1e12):  # zero, negative, NaN, infinite or absurd: ignored
                    continue
                if getattr(self, attr) != value:
                    setattr(self, attr, value)
                    changed = True
        if changed:
            self._found_rpm = None  # the server told its limit: nothing to find
            self._set_rates(now)
        if self._req is None and self._tok is None:  # no bucket to correct
            return
        f = self.factor(now)
        for bucket, key, sent_after in (
            (self._req, "x-ratelimit-remaining-requests", self._seq - permit.seq),
            (self._tok, "x-ratelimit-remaining-tokens", self._tok_seq - permit.tok_seq),
        ):
            if bucket is None:
                continue
            raw = headers.get(key)
            if not raw:
                continue
            if bucket is self._tok:
                self._server_counts_tokens = True
            try:
                remaining = float(raw)
            except ValueError:
                continue
            if not (0.0 <= remaining < 1e12):  # negative, NaN, infinite or absurd: ignored
                continue
            estimate = remaining - sent_after  # refill since the server counted is ignored: conservative
            bucket.refill(now, f)
            if estimate < bucket.level:
                bucket.level = max(estimate, -bucket.capacity)  # never more than one window in debt
