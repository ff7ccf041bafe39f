"""The exit code a script can trust, from a run's outcome (the CLI exits with it; the library never exits).

====  ==========================================================================================
code  meaning
====  ==========================================================================================
0     finished what it set out to do (failures, if any, at most ``max_failure_rate`` of the records)
1     user error: a bad flag, config, input or run directory (and command-line usage errors)
3     stopped by the budget or another user-set cap (``--max-requests``, ``--max-total-tokens``)
      with work left: rerun with a larger cap to go on
4     the run failed: stopped by a teacher error (auth, quota, an endpoint that does not speak the
      API, the circuit breaker), every request failed, or failures exceeded ``max_failure_rate``
130   interrupted (Ctrl-C / SIGTERM)
====  ==========================================================================================

A failure is a record in failed.jsonl after all its attempts (a rerun retries it); content-filter
rejections are answers, not failures.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import ConfigError, TeacherCallError, TeacherError, TracegenError

__all__ = [
    "EXIT_CAP",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USER_ERROR",
    "error_exit_code",
    "run_exit",
]

EXIT_OK = 0
EXIT_USER_ERROR = 1
EXIT_CAP = 3
EXIT_FAILED = 4
EXIT_INTERRUPTED = 130

#: stop reasons that mean "a cap the user set was reached" (stats.json ``stop_reason``; "max_tokens" is
#: how run directories written before "max_total_tokens" name the token cap).
CAP_REASONS = frozenset({"budget", "max_requests", "max_total_tokens", "max_tokens", "not started"})
#: stop reasons that mean "the teacher refused the run" (normally raised as a TeacherError).
FAILED_REASONS = frozenset({"auth", "quota", "endpoint", "circuit_breaker"})


def error_exit_code(err: TracegenError) -> int:
    """4 for an error of the teacher (auth, quota, endpoint, circuit breaker), 1 for the user's.

    A missing key is the user's (a :class:`ConfigError` too): nothing was sent. A :class:`TeacherCallError`
    (one call failed) is handled inside the library; should one escape, the run failed: 4, not the user's 1.
    """
    if isinstance(err, TeacherCallError):
        return EXIT_FAILED
    if isinstance(err, TeacherError) and not isinstance(err, ConfigError):
        return EXIT_FAILED
    return EXIT_USER_ERROR


def run_exit(summary: Mapping[str, Any], max_failure_rate: float) -> tuple[int, str | None]:
    """(exit code, one line saying why when it is not 0) for a run summary (``stop_reason`` + ``run``)."""
    reason = str(summary.get("stop_reason") or "completed")
    run: Mapping[str, Any] = summary.get("run") or {}
    succeeded = int(run.get("succeeded") or 0)
    failed = int(run.get("failed") or 0)
    rejected = int(run.get("rejected") or 0)
    finished = succeeded + failed + rejected
    if reason == "interrupted":
        return EXIT_INTERRUPTED, "interrupted: rerun the same command to continue where it stopped"
    if reason in FAILED_REASONS:
        return EXIT_FAILED, f"the run was stopped by the teacher ({reason}); see the error above"
    if failed and succeeded + rejected == 0:
        return EXIT_FAILED, (
            f"every request failed ({failed} in failed.jsonl): see the errors there; a rerun retries them"
        )
    if failed and failed > max_failure_rate * finished:
        return EXIT_FAILED, (
            f"{failed} of {finished} records failed ({failed / finished:.1%}), more than "
            f"--max-failure-rate {max_failure_rate:g}: see failed.jsonl; a rerun retries them"
        )
    if reason in CAP_REASONS:
        return EXIT_CAP, f"stopped by {reason} with work left: raise it and rerun the same command to go on"
    return EXIT_OK, None
