"""What the engine reports: progress snapshots while it runs, and the result at the end."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["STOP_REASONS", "Progress", "RunResult"]

#: Why a run ended (stats.json ``stop_reason``).
STOP_REASONS = (
    "completed",  # every planned record is done, failed or rejected
    "budget",  # the next reservation did not fit the dollar budget
    "max_requests",  # --max-requests reached
    "max_total_tokens",  # --max-total-tokens reached (stats.json before 13: "max_tokens")
    "interrupted",  # stop event / Ctrl-C / cancellation
    "auth",  # 401/403
    "quota",  # 429 insufficient_quota
    "endpoint",  # the endpoint cannot be reached or does not know the model
    "run_dir",  # the run directory became unwritable (disk full, ...)
    "circuit_breaker",  # most recent requests failed with the same error
)


@dataclass(frozen=True, slots=True)
class Progress:
    """A snapshot of a running generation, emitted at most every ~0.5 s (the CLI renders it)."""

    done: int
    """Records finished this run: succeeded + failed + rejected + skipped_done."""
    total: int | None
    """Planned records, when known."""
    succeeded: int
    failed: int
    rejected: int
    skipped_done: int
    cost_usd: float
    """Dollars spent by the run directory (all sessions; unknown outcomes charged at reservation)."""
    committed_usd: float
    """cost_usd + reservations of requests in flight."""
    budget_usd: float | None
    projected_total_usd: float | None
    """cost_usd + the remaining records at the mean cost per answer so far, capped where the budget stops."""
    requests_per_s: float
    tokens_per_min: float
    limit_rpm: float | None
    limit_tpm: float | None
    n_429: int
    n_retries: int
    in_flight: int
    eta_s: float | None
    """Time to the end of the plan, or to the expected budget stop when the budget runs out first."""
    elapsed_s: float
    affordable: int | None = None
    """When the budget is expected to stop the run first: how many more requests it pays for (else None)."""
    reserved_tokens_per_min: float = 0.0
    """Tokens/min the limiter reserved (prompt + max_tokens per request, refunded on the answer): what a
    --tpm limit is measured against, versus ``tokens_per_min`` actually billed."""


@dataclass(frozen=True, slots=True)
class RunResult:
    """The outcome of :func:`tracegen.engine.generate`; ``stats`` is what stats.json holds."""

    stop_reason: str
    run_dir: Path
    planned: int
    sent: int
    succeeded: int
    failed: int
    rejected: int
    skipped_done: int
    cost_usd: float
    """Dollars billed this session (settled usage + unknown outcomes at reservation)."""
    total_spent_usd: float
    """Dollars the run directory has spent over all sessions (what counts against the budget)."""
    stats: dict[str, Any] = field(repr=False)
