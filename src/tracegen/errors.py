"""The tracegen error tree.

Every error tracegen raises on purpose is a ``TracegenError``. Its message is one line that says what is
wrong and how to fix it; the CLI prints that line and exits with code 1, no traceback. Messages never
contain secrets (API keys, tokens, Authorization headers).

::

    TracegenError                 base class: catch this to catch everything tracegen raises on purpose
    ├── ConfigError               a flag, config file, template set or price table is invalid
    ├── SourceError               a prompt source cannot be read, or a record in it is malformed
    │   └── BadRecordError        one record is malformed (names file, line/row and field)
    ├── PlanError                 the plan cannot be built (no eligible rows, prompt too long, ...)
    ├── RunDirError               the run directory is unusable: plan mismatch, unwritable, disk full
    │   └── SettingChangedError   a plan parameter or teacher setting differs from what money was spent on
    ├── TeacherError              the teacher endpoint refuses the whole run
    │   ├── AuthError             401/403: the API key is missing, wrong or lacks permission
    │   │   └── MissingKeyError   no key configured at all (also a ConfigError: nothing was sent)
    │   ├── QuotaError            429 insufficient_quota: the account has no credit left
    │   ├── EndpointError         the endpoint cannot be reached or does not speak the OpenAI API
    │   ├── WaitTooLongError      the endpoint asks to wait (retry-after) longer than tracegen will
    │   └── FailingRunError       most requests fail with the same error (circuit breaker)
    ├── BatchError                a Batch API job cannot be created, polled or collected
    │   └── BatchCallError        a Files/Batches call failed for good (``cause``: the last TeacherCallError)
    ├── HubError                  pushing to / reading from the Hugging Face Hub failed
    └── TeacherCallError          internal: ONE call to the teacher failed (the engine decides what follows)
        ├── TeacherHTTPError      the endpoint answered with a non-2xx status (``status``, ``code``)
        ├── TeacherConnectionError  no usable answer: refused, reset, dropped mid-answer, unreadable body
        │   └── TeacherProtocolError  the answer is not an OpenAI chat completion
        └── TeacherTimeout        no answer within ``timeout_s``

A ``TeacherCallError`` is the clients' neutral error (:mod:`tracegen.engine.client`): the engine retries the
call, fails the record (failed.jsonl) or stops the run with a ``TeacherError``; it is not meant to leave the
library. Should one escape anyway, the CLI counts it as a failed run (exit 4, :mod:`tracegen.outcome`), never
as the user's mistake (exit 1). Every other ``TracegenError`` exits 1 except ``TeacherError`` (4).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .redact import redact

__all__ = [
    "AuthError",
    "BadRecordError",
    "BatchCallError",
    "BatchError",
    "ConfigError",
    "EndpointError",
    "FailingRunError",
    "HubError",
    "MissingKeyError",
    "PlanError",
    "QuotaError",
    "RunDirError",
    "SettingChangedError",
    "SourceError",
    "TeacherCallError",
    "TeacherConnectionError",
    "TeacherError",
    "TeacherHTTPError",
    "TeacherProtocolError",
    "TeacherTimeout",
    "TracegenError",
    "WaitTooLongError",
]

#: Longest error message kept (failed.jsonl, terminal); redacted whole before it is cut.
MAX_ERROR_MESSAGE_CHARS = 1000


class TracegenError(Exception):
    """Base class of every error tracegen raises on purpose."""


class ConfigError(TracegenError):
    """A flag, config file, template set or price table is invalid."""


class SourceError(TracegenError):
    """A prompt source cannot be read."""


class BadRecordError(SourceError):
    """One source record is malformed; the message names file, line (or row) and field."""

    def __init__(self, where: str, field: str, problem: str) -> None:
        self.where = where
        self.field = field
        self.problem = problem
        super().__init__(
            f"{where}: field {field!r} {problem} "
            "(fix the record, or pass --skip-bad-records to log it to rejected.jsonl and go on)"
        )


class PlanError(TracegenError):
    """The plan cannot be built."""


class RunDirError(TracegenError):
    """The run directory is unusable: plan mismatch, unwritable, or the disk is full."""


class SettingChangedError(RunDirError):
    """A plan parameter or teacher setting differs from the one a run directory has already spent money on.

    ``field`` is the RunConfig field (``"rehearse"`` when a rehearsal meets a real run or the reverse),
    ``old`` the value the money was spent with (rerun with it to continue), ``new`` the value given now.
    """

    def __init__(self, what: str, remedy: str, *, path: str, field: str, old: object, new: object) -> None:
        super().__init__(f"{what}: {remedy}")
        self.what = what
        self.remedy = remedy
        self.path = path
        self.field = field
        self.old = old
        self.new = new


class TeacherError(TracegenError):
    """The teacher endpoint refuses the whole run."""


class AuthError(TeacherError):
    """401/403: the API key is missing, wrong, or lacks permission."""


class MissingKeyError(AuthError, ConfigError):
    """No API key is configured (the environment variable is unset): a user error, found before sending."""


class QuotaError(TeacherError):
    """429 insufficient_quota: the account has no credit left."""


class EndpointError(TeacherError):
    """The endpoint cannot be reached or does not speak the OpenAI API."""


class WaitTooLongError(TeacherError):
    """The endpoint asks to wait (retry-after) longer than tracegen will; the message has its figure."""


class FailingRunError(TeacherError):
    """Most recent requests failed with the same error (circuit breaker); the message names it."""


class BatchError(TracegenError):
    """A Batch API job cannot be created, polled or collected."""


class HubError(TracegenError):
    """Pushing to or reading from the Hugging Face Hub failed."""


# ---- one call to the teacher (internal: the engine handles these) -------------------------------------------
class TeacherCallError(TracegenError):
    """One call to the teacher failed; the engine retries it, fails the record or stops the run."""

    sent: bool | None = None

    def describe(self) -> dict[str, Any]:
        """The error as failed.jsonl stores it: type, status, code, message."""
        return {"type": type(self).__name__, "status": None, "code": None, "message": str(self)}


class TeacherHTTPError(TeacherCallError):
    """The endpoint answered with a non-2xx status."""

    def __init__(
        self,
        status: int,
        code: str | None,
        message: str,
        retry_after_s: float | None = None,
        headers: Mapping[str, str] | None = None,
        error_type: str | None = None,
    ) -> None:
        message = redact(message)
        if len(message) > MAX_ERROR_MESSAGE_CHARS:
            message = message[:MAX_ERROR_MESSAGE_CHARS] + "…"
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s
        self.headers: Mapping[str, str] = headers if headers is not None else {}
        self.error_type = error_type
        """The body's ``error.type`` (``code`` falls back to it), for :mod:`.classify`."""
        self.sent = True
        super().__init__(f"HTTP {status}{f' ({code})' if code else ''}: {message}")

    def describe(self) -> dict[str, Any]:
        return {
            "type": type(self).__name__,
            "status": self.status,
            "code": self.code,
            "message": self.message,
        }


class TeacherConnectionError(TeacherCallError):
    """No usable answer: connection refused or reset, dropped mid-answer, or an unreadable body."""

    def __init__(self, message: str, *, sent: bool | None) -> None:
        self.sent = sent
        super().__init__(message)


class TeacherProtocolError(TeacherConnectionError):
    """The answer is not an OpenAI chat completion (not JSON, no ``choices``, wrong shape, too large)."""

    def __init__(self, message: str, *, billed: bool = False) -> None:
        super().__init__(message, sent=True)
        self.billed = billed


class TeacherTimeout(TeacherCallError):
    """No answer within ``timeout_s``."""

    def __init__(self, message: str = "request timed out", *, sent: bool | None = None) -> None:
        self.sent = sent
        super().__init__(message)


class BatchCallError(BatchError):
    """A Files/Batches call failed for good; ``cause`` is the last neutral error (status, code)."""

    def __init__(self, message: str, cause: TeacherCallError) -> None:
        super().__init__(message)
        self.cause = cause

    @property
    def rejected(self) -> bool:
        """True when the endpoint surely refused the call (a 4xx that no retry or wait will change)."""
        c = self.cause
        return isinstance(c, TeacherHTTPError) and 400 <= c.status < 500 and c.status not in (408, 409, 429)
