"""The one retry policy: tenacity ``AsyncRetrying`` composed of tiny callables (the SDK's retries are off).

- retried: 429 (except quota exhaustion), 408, 409, 5xx, timeouts, connection errors (what counts as what:
  :mod:`.classify`, which recognises errors a gateway rewrote);
- wait: exponential backoff with full jitter, ``uniform(0, min(cap_s, base_s * 2**(n-1)))``, and never less
  than the server's retry-after in any of its forms (:mod:`.retry_after`);
- stop: after ``max_attempts`` failures that are not rate limits, after ``rate_limited_attempts`` rate-limit
  429s (a record must not fail because the limiter is still finding the server's rate, yet a server that
  answers 429 forever cannot hold a record for ever), or as soon as ``should_stop()`` says so (budget
  exhausted, run stopping) -- ``stop_after_failures(n, m) | stop_when(should_stop)``;
- not retried: 400/404/422 and other 4xx (the record goes to failed.jsonl with the API's message);
- fatal for the whole run: auth failures (:class:`AuthError`) and quota exhaustion (:class:`QuotaError`),
  by status, code, type or message -- see :func:`fatal_error`.

``sleep`` is injectable, so tests assert a schedule instantly. :func:`call_with_retries` makes the first
attempt outside tenacity (no per-request policy copy on the happy path) and hands a failure to a copy of the
policy, which counts that failure as attempt 1.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from ..errors import AuthError, QuotaError, TeacherError, WaitTooLongError
from .classify import RETRYABLE_STATUS, is_auth_failure, is_quota_exhausted, is_rate_limited, is_retryable
from .client import MAX_RETRY_AFTER_S, TeacherCallError, TeacherHTTPError

__all__ = [
    "RETRYABLE_STATUS",
    "call_with_retries",
    "fatal_error",
    "is_retryable",
    "rate_limited_attempts",
    "retry_failed",
    "retry_policy",
    "stop_after_failures",
    "stop_when",
    "wait_backoff_or_retry_after",
]

T = TypeVar("T")


def wait_too_long(exc: TeacherHTTPError) -> bool:
    """True when the server asks to wait longer than :data:`~.client.MAX_RETRY_AFTER_S`."""
    return exc.retry_after_s is not None and exc.retry_after_s > MAX_RETRY_AFTER_S


def fatal_error(exc: BaseException, *, model: str = "") -> TeacherError | None:
    """The run-stopping error ``exc`` stands for (auth failure, quota exhaustion, a wait too long), or None."""
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
    what = f"HTTP {exc.status}{f' {exc.code}' if exc.code else ''}: {exc.message}"
    if is_quota_exhausted(exc):
        return QuotaError(
            f"the account has no credit left ({what}); "
            "add credit or use another key, then rerun the same command to resume"
        )
    if not is_auth_failure(exc):
        return None
    if exc.status == 403:
        return AuthError(
            f"permission denied ({what}); the key may lack access to "
            f"{model or 'this model'} or the project: check OPENAI_API_KEY / OPENAI_PROJECT"
        )
    return AuthError(
        f"the endpoint rejected the API key ({what}); "
        "check OPENAI_API_KEY (and --base-url for a compatible server)"
    )


def rate_limited_attempts(max_attempts: int) -> int:
    """How many rate-limit 429s one record may meet before it fails: 4x max_attempts, at least 32."""
    return max(32, 4 * max_attempts)


class stop_after_failures(stop_base):
    """Stop after ``max_attempts`` failures that are not rate limits, or ``max_rate_limited`` 429s.

    The counts live on the call's ``RetryCallState`` (one per request), so the policy stays shareable.
    """

    def __init__(self, max_attempts: int, max_rate_limited: int) -> None:
        self.max_attempts = max_attempts
        self.max_rate_limited = max_rate_limited

    def __call__(self, retry_state: RetryCallState) -> bool:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None and outcome.failed else None
        limited: int = getattr(retry_state, "_tracegen_rate_limited", 0)
        if exc is not None and is_rate_limited(exc):
            limited += 1
            retry_state._tracegen_rate_limited = limited  # type: ignore[attr-defined]
            return limited >= self.max_rate_limited
        return retry_state.attempt_number - limited >= self.max_attempts


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
        stop=stop_after_failures(max_attempts, rate_limited_attempts(max_attempts)) | stop_when(should_stop),
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
    except TeacherCallError as e:
        first = e
    return await retry_failed(policy, first, attempt, chain)


async def retry_failed(
    policy: AsyncRetrying,
    first: TeacherCallError,
    attempt: Callable[[], Awaitable[T]],
    chain: list[TeacherCallError] | None = None,
) -> T:
    """The rest of :func:`call_with_retries` once its first attempt failed with ``first`` (for a caller
    that awaits the first attempt itself): ``first`` is appended to ``chain`` and re-raised unless
    retryable; else ``policy`` runs ``attempt`` again, seeing ``first`` as its attempt 1."""
    if chain is not None:
        chain.append(first)
    if not is_retryable(first):
        raise first
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
