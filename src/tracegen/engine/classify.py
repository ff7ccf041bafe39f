"""What a failed call means, as tiny predicates that survive gateways (LiteLLM, API managers, Azure).

A gateway often rewrites the upstream error: LiteLLM turns OpenAI's ``429 insufficient_quota`` into
``{"code": "429", "type": "throttling_error"}`` and keeps only the message ("You exceeded your current
quota…"); some answer a bad key with 400 or 500. So each question is answered by type, code *or* message::

    is_quota_exhausted   the account has no credit (stop the run: QuotaError)
    is_auth_failure      the key is wrong or lacks permission (stop the run: AuthError)
    is_rate_limited      a 429 that is not quota: slow down and retry (does not use up a record's attempts)
    is_retryable         rate limits, 408/409, 5xx, timeouts, connection errors (not quota, not auth)

Predicates compose like tenacity's (``a | b``, ``a & b``, ``~a``). Each looks at a :class:`TeacherHTTPError`
(status, code, error type, message) or a connection/timeout error; nothing else in the engine searches
message text.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .client import MAX_RETRY_AFTER_S, TeacherConnectionError, TeacherHTTPError, TeacherTimeout

__all__ = [
    "AUTH_CODES",
    "QUOTA_CODES",
    "QUOTA_PHRASES",
    "Predicate",
    "error_signature",
    "is_auth_failure",
    "is_quota_exhausted",
    "is_rate_limited",
    "is_retryable",
]

#: Codes / types that mean "no credit left": OpenAI's, and its older billing codes.
QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached", "billing_not_active"})
#: Message phrases (lower case) that mean "no credit left", whatever status or code a gateway put around them:
#: OpenAI ("You exceeded your current quota, please check your plan and billing details"; "Your account is
#: not active, please check your billing details"), LiteLLM's rewrite (keeps OpenAI's message), Azure API
#: Management ("Out of call volume quota. Quota will be replenished in …"). Rate-limit texts ("Rate limit
#: reached", Azure's "exceeded token rate limit of your current … pricing tier") contain none of them.
QUOTA_PHRASES = (
    "exceeded your current quota",
    "check your plan and billing details",
    "insufficient_quota",
    "billing hard limit",
    "your account is not active",
    "out of call volume quota",
)
#: Codes / types that mean "the key is wrong" even when a gateway answers 400 or 500.
AUTH_CODES = frozenset(
    {"invalid_api_key", "authentication_error", "auth_error", "permission_error", "401", "403"}
)
RETRYABLE_STATUS = frozenset({408, 409, 429})


class Predicate:
    """A yes/no question about an exception; ``|``, ``&`` and ``~`` combine them (tenacity style)."""

    __slots__ = ("fn", "name")

    def __init__(self, fn: Callable[[BaseException], bool], name: str = "") -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "predicate")

    def __call__(self, exc: BaseException) -> bool:
        return self.fn(exc)

    def __or__(self, other: Predicate) -> Predicate:
        return Predicate(lambda e: self(e) or other(e), f"({self.name} | {other.name})")

    def __and__(self, other: Predicate) -> Predicate:
        return Predicate(lambda e: self(e) and other(e), f"({self.name} & {other.name})")

    def __invert__(self) -> Predicate:
        return Predicate(lambda e: not self(e), f"~{self.name}")

    def __repr__(self) -> str:
        return f"Predicate({self.name})"


def _http(exc: BaseException) -> TeacherHTTPError | None:
    return exc if isinstance(exc, TeacherHTTPError) else None


def _labels(e: TeacherHTTPError) -> set[str]:
    return {str(v).lower() for v in (e.code, e.error_type) if v}


def predicate(fn: Callable[[BaseException], bool]) -> Predicate:
    return Predicate(fn, fn.__name__)


@predicate
def quota_by_code(exc: BaseException) -> bool:
    """``code`` or ``type`` is insufficient_quota (or an OpenAI billing code)."""
    e = _http(exc)
    return e is not None and bool(_labels(e) & QUOTA_CODES)


@predicate
def quota_by_message(exc: BaseException) -> bool:
    """The message says the quota / credit is gone (any status: gateways relay it as 429, 403, 500…)."""
    e = _http(exc)
    if e is None or e.status < 400:
        return False
    text = e.message.lower()
    return any(p in text for p in QUOTA_PHRASES)


@predicate
def auth_by_status(exc: BaseException) -> bool:
    e = _http(exc)
    return e is not None and e.status in (401, 403)


@predicate
def auth_by_code(exc: BaseException) -> bool:
    """A gateway answering a bad key with 400/500 but an auth code or type (LiteLLM: ``auth_error``)."""
    e = _http(exc)
    return e is not None and e.status >= 400 and bool(_labels(e) & AUTH_CODES)


@predicate
def status_429(exc: BaseException) -> bool:
    e = _http(exc)
    return e is not None and e.status == 429


@predicate
def transient_status(exc: BaseException) -> bool:
    e = _http(exc)
    return e is not None and (e.status in RETRYABLE_STATUS or e.status >= 500)


@predicate
def no_answer(exc: BaseException) -> bool:
    """A timeout or a connection error: nothing (usable) came back."""
    return isinstance(exc, (TeacherTimeout, TeacherConnectionError))


@predicate
def waits_too_long(exc: BaseException) -> bool:
    """The server asks to wait longer than tracegen will (the run stops: WaitTooLongError)."""
    e = _http(exc)
    return e is not None and e.retry_after_s is not None and e.retry_after_s > MAX_RETRY_AFTER_S


is_quota_exhausted = quota_by_code | quota_by_message
is_auth_failure = (auth_by_status | auth_by_code) & ~is_quota_exhausted
is_rate_limited = status_429 & ~is_quota_exhausted & ~is_auth_failure
is_retryable = (transient_status & ~is_quota_exhausted & ~is_auth_failure & ~waits_too_long) | no_answer


def error_signature(exc: BaseException) -> tuple[Any, ...]:
    """What makes two failures "the same error" for the circuit breaker: kind, status, code."""
    e = _http(exc)
    if e is not None:
        return ("http", e.status, e.code or e.error_type)
    return (type(exc).__name__,)
