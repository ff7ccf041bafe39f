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
    └── HubError                  pushing to / reading from the Hugging Face Hub failed
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "BadRecordError",
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
    "TeacherError",
    "TracegenError",
    "WaitTooLongError",
]


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
