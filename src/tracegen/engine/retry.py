"""The one retry policy: tenacity ``AsyncRetrying`` composed of tiny callables (the SDK's retries are off).

- retried: 429 (except ``insufficient_quota``), 408, 409, 5xx, timeouts, connection errors;
- wait: exponential backoff with full jitter, ``uniform(0, min(cap_s, base_s * 2**(n-1)))``, and never less
  than the server's ``retry-after-ms`` / ``retry-after``;
- stop: after ``max_attempts`` attempts, or as soon as ``should_stop()`` says so (budget exhausted, run
  stopping) -- ``stop_after_attempt(n) | stop_when(should_stop)``;
- not retried: 400/404/422 and other 4xx (the record goes to failed.jsonl with the API's message);
- fatal for the whole run: 401/403 (:class:`AuthError`) and 429 ``insufficient_quota`` (:class:`QuotaError`),
  see :func:`fatal_error`.

``sleep`` is injectable, so tests assert a schedule instantly. :func:`call_with_retries` makes the first
attempt outside tenacity (no per-request policy copy on the happy path) and hands a failure to a copy of the
policy, which counts that failure as attempt 1.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from ..errors import AuthError, QuotaError, TeacherError, WaitTooLongError
from .client import (
    MAX_RETRY_AFTER_S,
    TeacherCallError,
    TeacherConnectionError,
    TeacherHTTPError,
    TeacherTimeout,
)

__all__ = [
    "RETRYABLE_STATUS",
    "call_with_retries",
    "fatal_error",
    "is_retryable",
    "retry_policy",
    "stop_when",
    "wait_backoff_or_retry_after",
]

RETRYABLE_STATUS = frozenset({408, 409, 429})
T = TypeVar("T")


def is_retryable(exc: BaseException) -> bool:
    """429 (not insufficient_quota), 408, 409, 5xx, timeouts and connection errors."""
    if isinstance(exc, TeacherHTTPError):
        if wait_too_long(exc):
            return False
        if exc.status == 429:
            return exc.code != "insufficient_quota"
        return exc.status in RETRYABLE_STATUS or exc.status >= 500
    return isinstance(exc, (TeacherTimeout, TeacherConnectionError))


def wait_too_long(exc: TeacherHTTPError) -> bool:
    """True when the server asks to wait longer than :data:`~.client.MAX_RETRY_AFTER_S`."""
    return exc.retry_after_s is not None and exc.retry_after_s > MAX_RETRY_AFTER_S


def fatal_error(exc: BaseException, *, model: str = "") -> TeacherError | None:
    """The run-stopping error ``exc`` stands for (401/403, insufficient_quota, a wait too long), or None."""
    if not isinstance(exc, TeacherHTTPError):
        return None
    if wait_too_long(exc):
        headers = exc.headers
        figure = next(
            (f"{h}: {headers[h]}" for h in ("retry-after-ms", "retry-after") if headers.get(h)),
            f"{exc.retry_after_s:g} s",
        )
        return WaitTooLongError(
            f"the endpoint asks to wait {exc.retry_after_s:,.0f} s before retrying (HTTP {exc.status}, "
            f"{figure[:80]}), more than the {MAX_RETRY_AFTER_S:g} s tracegen waits; rerun the same command "
            "later to resume, or lower --rpm/--tpm"
        )
    if exc.status == 401:
        return AuthError(
            f"the endpoint rejected the API key (HTTP 401: {exc.message}); "
            "check OPENAI_API_KEY (and --base-url for a compatible server)"
        )
    if exc.status == 403:
        return AuthError(
            f"permission denied (HTTP 403: {exc.message}); the key may lack access to "
            f"{model or 'this model'} or the project: check OPENAI_API_KEY / OPENAI_PROJECT"
        )
    if exc.status == 429 and exc.code == "insufficient_quota":
        return QuotaError(
            f"the account has no credit left (HTTP 429 insufficient_quota: {exc.message}); "
            "add credit or use another key, then rerun the same command to resume"
        )
    return None


class stop_when(stop_base):
    """Stop retrying as soon as ``predicate()`` is true (budget exhausted, run stopping)."""

    def __init__(self, predicate: Callable[[], bool]) -> None:
        self.predicate = predicate

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.predicate()


class wait_backoff_or_retry_after(wait_base):
    """Full-jitter exponential backoff, never shorter than the server's retry-after."""

    def __init__(self, base_s: float = 0.5, cap_s: float = 60.0, rng: Callable[[], float] = random.random):
        self.base_s = base_s
        self.cap_s = cap_s
        self.rng = rng

    def __call__(self, retry_state: RetryCallState) -> float:
        ceiling = min(self.cap_s, self.base_s * 2 ** (retry_state.attempt_number - 1))
        wait_s: float = self.rng() * ceiling
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None and outcome.failed else None
        if isinstance(exc, TeacherHTTPError) and exc.retry_after_s is not None:
            wait_s = max(wait_s, exc.retry_after_s)
        return wait_s


def retry_policy(
    max_attempts: int,
    *,
    should_stop: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    before_sleep: Callable[[RetryCallState], None] | None = None,
    base_s: float = 0.5,
    cap_s: float = 60.0,
    rng: Callable[[], float] = random.random,
) -> AsyncRetrying:
    """The engine's one policy. Copy it per request (``policy.copy()``): tenacity keeps per-call state."""
    kwargs: dict[str, Any] = {}
    if sleep is not None:
        kwargs["sleep"] = sleep
    return AsyncRetrying(
        stop=stop_after_attempt(max_attempts) | stop_when(should_stop),
        wait=wait_backoff_or_retry_after(base_s, cap_s, rng),
        retry=retry_if_exception(is_retryable),
        before_sleep=before_sleep,
        reraise=True,
        **kwargs,
    )


async def call_with_retries(
    policy: AsyncRetrying,
    attempt: Callable[[], Awaitable[T]],
    chain: list[TeacherCallError] | None = None,
) -> T:
    """Run ``attempt`` under ``policy``; append every TeacherCallError to ``chain``.

    The first attempt runs directly; only a retryable failure pays for a policy copy, which then sees that
    failure as its attempt 1 (so ``max_attempts`` and the backoff schedule count it).
    """
    try:
        return await attempt()
    except TeacherCallError as first:
        if chain is not None:
            chain.append(first)
        if not is_retryable(first):
            raise
        pending: list[BaseException] = [first]

    async def again() -> T:
        if pending:
            raise pending.pop()
        try:
            return await attempt()
        except TeacherCallError as e:
            if chain is not None:
                chain.append(e)
            raise

    result: T = await policy.copy()(again)
    return result
