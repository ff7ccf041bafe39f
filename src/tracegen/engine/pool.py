"""Several endpoints served as one pool: each with its own limiter, a circuit breaker, one budget overall.

Orca collected its traces over several Azure endpoints for weeks: throughput under rate limits is the
bottleneck, so every endpoint should be kept busy. The engine sees one limiter and one client; with
``endpoints:`` in the config they are an :class:`EndpointPool`:

- Dispatch. Each endpoint (:class:`Member`) has its own :class:`~tracegen.engine.limiter.Limiter` (its
  RPM/TPM/concurrency, learning from its own ``x-ratelimit-*`` headers and 429s). :meth:`EndpointPool.acquire`
  grants a request to the endpoint whose limiter can admit it soonest (ties: fewer failures in a row, then
  the least loaded), so requests go where capacity is. Waiters queue FIFO at the pool; one timer wakes the head (no polling).
- Easing off (circuit breaker). ``failures_to_open`` failures in a row on one endpoint (5xx, 429, timeouts,
  connection errors) open its circuit: it gets nothing for ``cooldown_s`` (doubling on each failed trial, up
  to ``max_cooldown_s``); then one trial request goes there (half-open); a success closes the circuit.
- Retiring. A 401/403, a 429 ``insufficient_quota`` or a 404 (unknown model / deployment) from one endpoint
  takes *that endpoint* out of the pool with one logged line naming it and its key variable (never the key),
  and the request is sent again elsewhere (raised as a retryable, not-billed connection error). When the
  last endpoint leaves, the original error is raised and :meth:`EndpointPool.dead_error` says why every
  endpoint left (AuthError if any rejected its key), so the run stops.

The retry policy and the budget stay the engine's, single: the pool never retries and never spends.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import AuthError, ConfigError, EndpointError, MissingKeyError, QuotaError, TracegenError
from ..redact import redact_url
from ._waitqueue import WaitQueue
from .classify import is_auth_failure, is_quota_exhausted
from .client import (
    ChatClient,
    ChatResult,
    Endpoint,
    TeacherCallError,
    TeacherConnectionError,
    TeacherHTTPError,
    client_for,
)
from .limiter import Limiter, Permit

if TYPE_CHECKING:
    from ..config import EndpointConfig
    from .settings import EngineSettings, Teacher

__all__ = ["EndpointPool", "Member", "PoolPermit", "make_pool"]

log = logging.getLogger("tracegen.engine.pool")

CLOSED, OPEN, HALF_OPEN, DEAD = "closed", "open", "half_open", "dead"
_INF = math.inf


class Member:
    """One endpoint of a pool: its client and limiter, circuit-breaker state and counters. No key here."""

    def __init__(
        self,
        name: str,
        client: ChatClient,
        limiter: Limiter,
        *,
        base_url: str = "",
        model: str | None = None,
        key_env: str | None = None,
    ) -> None:
        self.name = name
        self.client = client
        self.limiter = limiter
        self.base_url = base_url
        self.model = model
        self.key_env = key_env
        self.state = CLOSED
        self.failures_in_row = 0
        self.open_until = -_INF
        self.cooldown_s = 0.0
        self.trial = False
        self.dead_kind: str | None = None
        """auth | quota | endpoint, once retired."""
        self.dead_reason: str | None = None
        # counters
        self.sent = 0
        self.succeeded = 0
        self.errors = 0
        self.n_429 = 0
        self.n_5xx = 0
        self.n_connection = 0
        self.trips = 0

    def stats(self) -> dict[str, Any]:
        """Counters and state, JSON-able; no key, URL without credentials."""
        return {
            "name": self.name,
            "base_url": self.base_url,
            "model": self.model,
            "state": self.state,
            "sent": self.sent,
            "succeeded": self.succeeded,
            "errors": self.errors,
            "n_429": self.n_429,
            "n_5xx": self.n_5xx,
            "n_connection_errors": self.n_connection,
            "circuit_trips": self.trips,
            "dead_reason": self.dead_reason,
            "requests_per_minute": self.limiter.requests_per_minute,
            "tokens_per_minute": self.limiter.tokens_per_minute,
        }


class PoolPermit(Permit):
    """A permit of one member's limiter, with the member it was granted on."""

    __slots__ = ("inner", "member", "trial")

    def __init__(self, inner: Permit, member: Member, trial: bool) -> None:
        super().__init__(inner.tokens, inner.seq, inner.tok_seq, inner.sent_at)
        self.inner = inner
        self.member = member
        self.trial = trial


class EndpointPool(WaitQueue):
    """Endpoints as one limiter + client for the engine; see the module docstring."""

    def __init__(
        self,
        members: list[Member],
        *,
        concurrency: int | None = None,
        failures_to_open: int = 5,
        cooldown_s: float = 5.0,
        max_cooldown_s: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not members:
            raise ConfigError("an endpoint pool needs at least one endpoint")
        super().__init__()
        self.members = members
        self.concurrency = (
            concurrency if concurrency is not None else sum(m.limiter.concurrency for m in members)
        )
        self.failures_to_open = failures_to_open
        self.base_cooldown_s = cooldown_s
        self.max_cooldown_s = max_cooldown_s
        self._clock = clock
        self._in_flight = 0

    # ---- the limiter side (what the engine's dispatch calls) -------------------------------------------
    def _alive(self) -> list[Member]:
        return [m for m in self.members if m.state != DEAD]

    @staticmethod
    def _sum(values: list[float | None]) -> float | None:
        return (
            None if not values or any(v is None for v in values) else sum(v for v in values if v is not None)
        )

    @property
    def requests_per_minute(self) -> float | None:
        """Sum of the live endpoints' request limits (None if any is unlimited/unknown)."""
        return self._sum([m.limiter.requests_per_minute for m in self._alive()])

    @property
    def tokens_per_minute(self) -> float | None:
        """Sum of the live endpoints' token limits (None if any is unlimited/unknown)."""
        return self._sum([m.limiter.tokens_per_minute for m in self._alive()])

    @property
    def max_request_tokens(self) -> float | None:
        """The largest request one live endpoint can take (None: no limit known somewhere)."""
        caps = [m.limiter.max_request_tokens for m in self._alive()]
        return None if not caps or any(c is None for c in caps) else max(c for c in caps if c is not None)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def all_dead(self) -> bool:
        """Every endpoint has been taken out of the pool."""
        return not self._alive()

    def _admits(self, m: Member, now: float) -> bool:
        if m.state == DEAD:
            return False
        if m.state == OPEN:
            if now < m.open_until:
                return False
            m.state = HALF_OPEN  # cool-down over: one trial request
            m.trial = False
        return not (m.state == HALF_OPEN and m.trial)

    def _pick(self, tokens: int, now: float) -> tuple[Member | None, float]:
        """The member that can take ``tokens`` soonest and its wait; or None and when to look again."""
        if self._in_flight >= self.concurrency:
            return None, _INF
        candidates = [m for m in self.members if self._admits(m, now)]
        fitting = [
            m
            for m in candidates
            if m.limiter.max_request_tokens is None or tokens <= (m.limiter.max_request_tokens or 0)
        ]
        best: Member | None = None
        best_key: tuple[float, float, float] = (_INF, _INF, _INF)
        for m in fitting or candidates:
            # soonest first; among equals, the one failing less, then the less loaded
            load = m.limiter.in_flight / max(1, m.limiter.concurrency)
            key = (m.limiter.wait_s(tokens), float(m.failures_in_row), load)
            if key < best_key:
                best, best_key = m, key
        wait = best_key[0]
        for m in self.members:  # an open circuit's cool-down end is a moment to look again
            if m.state == OPEN:
                wait = min(wait, max(0.0, m.open_until - now))
        return best, wait

    def _try_grant(self, tokens: int) -> Permit | None:
        now = self._clock()
        best, wait = self._pick(tokens, now)
        if best is None or wait > 0.0:
            if wait != _INF:
                self._arm(max(wait, 1e-3))
            return None
        inner = best.limiter.try_acquire(tokens)
        if inner is None:  # the member's own view changed between wait_s and now: look again soon
            self._arm(1e-3)
            return None
        trial = best.state == HALF_OPEN
        if trial:
            best.trial = True
        best.sent += 1
        self._in_flight += 1
        return PoolPermit(inner, best, trial)

    async def acquire(self, tokens: int) -> Permit:
        """Wait until some endpoint can take ``tokens``; the permit names the endpoint."""
        if not self._waiters:
            permit = self._try_grant(tokens)
            if permit is not None:
                return permit
        return await self._wait_in_line(tokens)

    def wake(self) -> None:
        """Grant what the head of the queue can have now; arm one timer for the rest."""
        waiters = self._waiters
        while waiters:
            fut, tokens = waiters[0]
            if fut.done():
                waiters.popleft()
                continue
            permit = self._try_grant(tokens)
            if permit is None:
                return
            waiters.popleft()
            fut.set_result(permit)

    def observe(
        self,
        permit: Permit,
        *,
        status: int | None,
        headers: Mapping[str, str] | None,
        retry_after_s: float | None = None,
        latency_s: float | None = None,
    ) -> None:
        """Pass one answer's signals (headers, 429/503, latency) to its endpoint's limiter."""
        p = _pool_permit(permit)
        p.member.limiter.observe(
            p.inner, status=status, headers=headers, retry_after_s=retry_after_s, latency_s=latency_s
        )
        self.wake()

    def release(self, permit: Permit, used_tokens: int | None) -> None:
        """The attempt is over: free its slot on its endpoint and in the pool."""
        p = _pool_permit(permit)
        p.member.limiter.release(p.inner, used_tokens)
        self._in_flight -= 1
        if p.trial:
            p.member.trial = False
        self.wake()

    # ---- the client side ---------------------------------------------------------------------------------
    async def complete(
        self, permit: Permit, body: dict[str, Any], request_id: str, *, payload: bytes | None = None
    ) -> ChatResult:
        """Send on the permit's endpoint; keep its breaker; retire it on 401/403/quota/404 (see module)."""
        m = _pool_permit(permit).member
        try:
            result = await m.client.complete(body, request_id, payload=payload)
        except TeacherHTTPError as e:
            m.errors += 1
            kind = _retire_kind(e)
            if kind is not None:
                self._retire(m, e, kind)
            if e.status == 429:
                m.n_429 += 1
                self._failure(m, str(e))
            elif e.status >= 500:
                m.n_5xx += 1
                self._failure(m, str(e))
            raise
        except TeacherCallError as e:
            m.errors += 1
            m.n_connection += 1
            self._failure(m, str(e))
            raise
        m.succeeded += 1
        m.failures_in_row = 0
        if m.state in (OPEN, HALF_OPEN):
            log.info("endpoint %s answers again: back in the pool", m.name)
            m.state = CLOSED
            m.cooldown_s = 0.0
            self.wake()
        return result

    def _failure(self, m: Member, what: str) -> None:
        if m.state == DEAD:
            return
        m.failures_in_row += 1
        if m.state == HALF_OPEN or (m.state == CLOSED and m.failures_in_row >= self.failures_to_open):
            m.cooldown_s = (
                self.base_cooldown_s if m.cooldown_s == 0.0 else min(self.max_cooldown_s, m.cooldown_s * 2)
            )
            m.state = OPEN
            m.open_until = self._clock() + m.cooldown_s
            m.trips += 1
            log.warning(
                "endpoint %s: %d failures in a row (last: %s); easing off for %.0f s",
                m.name,
                m.failures_in_row,
                what,
                m.cooldown_s,
            )
        self.wake()

    def _retire(self, m: Member, e: TeacherHTTPError, kind: str) -> None:
        """Take ``m`` out of the pool; raise a retryable error unless it was the last endpoint."""
        if m.state != DEAD:
            m.state = DEAD
            m.dead_kind = kind
            m.dead_reason = f"HTTP {e.status}{f' ({e.code})' if e.code else ''}: {e.message}"
            key = f"; check ${m.key_env}" if m.key_env and kind != "endpoint" else ""
            log.error(
                "endpoint %s taken out of the pool (%s)%s; %d other endpoint(s) carry on",
                m.name,
                m.dead_reason,
                key,
                len(self._alive()),
            )
        self.wake()
        if self._alive():
            raise TeacherConnectionError(
                f"endpoint {m.name} left the pool ({m.dead_reason}); sent again on another endpoint",
                sent=False,
            ) from None

    def dead_error(self) -> TracegenError:
        """Why the run must stop once every endpoint left: AuthError > QuotaError > EndpointError."""
        reasons = "; ".join(f"{m.name}: {m.dead_reason}" for m in self.members)
        kinds = {m.dead_kind for m in self.members}
        envs = sorted({f"${m.key_env}" for m in self.members if m.key_env})
        if "auth" in kinds:
            return AuthError(
                f"every endpoint of the pool was taken out ({reasons}); check the keys in "
                f"{', '.join(envs) or 'the endpoints'} and each endpoint's base_url / model"
            )
        if "quota" in kinds:
            return QuotaError(
                f"every endpoint of the pool was taken out ({reasons}); add credit or other keys, "
                "then rerun the same command to resume"
            )
        return EndpointError(
            f"every endpoint of the pool was taken out ({reasons}); check each endpoint's base_url, "
            "model / azure_deployment"
        )

    def stats(self) -> list[dict[str, Any]]:
        """Per-endpoint counters and states (stats.json ``endpoints``)."""
        return [m.stats() for m in self.members]

    async def aclose(self) -> None:
        """Close every endpoint's client."""
        for m in self.members:
            try:
                await m.client.aclose()
            except Exception:  # closing one must not keep the others open
                log.debug("closing endpoint %s failed", m.name, exc_info=True)


def _pool_permit(permit: Permit) -> PoolPermit:
    if not isinstance(permit, PoolPermit):
        raise TypeError("an EndpointPool only takes back its own permits")
    return permit


def _retire_kind(e: TeacherHTTPError) -> str | None:
    if is_quota_exhausted(e):
        return "quota"
    if is_auth_failure(e):
        return "auth"
    if e.status == 404:
        return "endpoint"
    return None


# ---- building a pool from the config ---------------------------------------------------------------------
def _member_client(teacher: Teacher, e: EndpointConfig, endpoint: Endpoint, concurrency: int) -> ChatClient:
    if e.azure_deployment:
        from .client_azure import AzureChatClient

        return AzureChatClient(
            endpoint,
            deployment=e.azure_deployment,
            api_version=e.api_version,
            concurrency=concurrency,
            timeout_s=teacher.timeout_s,
        )
    return client_for(
        teacher.transport,
        endpoint,
        concurrency=concurrency,
        timeout_s=teacher.timeout_s,
        max_response_bytes=teacher.max_response_bytes,
    )


def make_pool(
    settings: EngineSettings,
    env: Mapping[str, str] | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> EndpointPool:
    """The pool of the teacher's ``endpoints`` that serve its ``model``, keys read from ``env``.

    Raises AuthError naming the variable when an endpoint's ``api_key_env`` is not set.
    """
    env = os.environ if env is None else env
    teacher, run_concurrency = settings.teacher, settings.limits.concurrency
    members: list[Member] = []
    for e in teacher.endpoints:
        if not e.serves(teacher.model):
            continue
        key: str | None = None
        if e.api_key_env:
            key = env.get(e.api_key_env) or None
            if key is None:
                raise MissingKeyError(
                    f"endpoint {e.label()}: environment variable {e.api_key_env} is not set; export it with "
                    "this endpoint's key (or set api_key_env: null for a server that needs none)"
                )
        endpoint = Endpoint(base_url=e.base_url.rstrip("/"), api_key=key)
        concurrency = e.concurrency or run_concurrency
        limiter = Limiter(
            requests_per_minute=e.requests_per_minute,
            tokens_per_minute=e.tokens_per_minute,
            concurrency=concurrency,
            clock=clock,
        )
        members.append(
            Member(
                e.label(),
                _member_client(teacher, e, endpoint, concurrency),
                limiter,
                base_url=redact_url(e.base_url),
                model=e.model,
                key_env=e.api_key_env,
            )
        )
    if not members:
        raise ConfigError(f"no endpoint serves model {teacher.model!r}: add one with model: {teacher.model}")
    return EndpointPool(members, concurrency=run_concurrency, clock=clock)
