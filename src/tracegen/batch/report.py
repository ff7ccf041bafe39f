"""What a batch session reports: stats.json (the online runner's keys plus a ``batch`` section), the
:class:`~tracegen.engine.Progress` snapshots of the live display, and the :class:`~tracegen.engine.RunResult`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ..engine import Progress, RunResult
from ..engine.budget import utc_now_iso
from ..planning.prices import prices_stats

if TYPE_CHECKING:
    from .runner import BatchRunner

__all__ = ["progress", "run_result", "run_stats"]


def run_stats(r: BatchRunner) -> dict[str, Any]:
    """stats.json: the online runner's keys plus a ``batch`` section."""
    budget = r.budget
    in_flight = r.in_flight()
    statuses: dict[str, int] = {}
    for part in r.parts.values():
        if part.info is not None:
            s = part.info.status
        elif not part.state.outstanding:
            s = part.state.done or "collected"
        else:
            s = "not_created" if part.state.batch_id is None else "not_polled"
        statuses[s] = statuses.get(s, 0) + 1
    return {
        "mode": "batch",
        "planned": r.total if r.total is not None else r.read,
        "read": r.read,
        "sent": budget.requests,
        "attempts": r.attempts,
        "succeeded": r.succeeded,
        "failed": r.failed,
        "rejected": r.rejected,
        "skipped_done": r.skipped_done,
        "unfinished": r.unfinished + len(r.retry_queue),
        "length": r.n_length,
        "length_empty": r.n_length_empty,
        "usage_anomalies": r.usage_anomalies,
        "usage_mismatches": r.usage_mismatches,
        "prompt_tokens": r.prompt_tokens,
        "completion_tokens": r.completion_tokens,
        "reasoning_tokens": r.reasoning_tokens,
        "cached_tokens": r.cached_tokens,
        "cost_usd": round(r.collected_usd, 9),
        "answers_cost_usd": round(r.cost_usd, 9),
        "reserved_usd_unknown": 0.0,
        "reserved_usd_in_flight": round(sum(p.state.reserve_usd for p in in_flight), 9),
        "total_spent_usd": round(budget.committed_usd, 9),
        "budget_usd": r.config.budget_usd,
        "stop_reason": r.stop_reason or "interrupted",
        "started_at": r.started_at,
        "finished_at": utc_now_iso(),
        "elapsed_s": round(time.monotonic() - r.t0, 3),
        "tracegen_version": __version__,
        "n_429": 0,
        "n_5xx": 0,
        "n_retries": r.resubmitted,
        "n_timeouts": 0,
        "n_connection_errors": 0,
        "limits": {"requests_per_minute": None, "tokens_per_minute": None},
        "traces_total": r.done.n_traces + r.succeeded,
        "prices": prices_stats(r.prices, batch=True),
        "batch": {
            "parts_in_flight": len(in_flight),
            "requests_in_flight": sum(p.state.requests for p in in_flight),
            "batches_created": r.batches_created,
            "parts_collected": r.parts_collected,
            "files_deleted": r.files_deleted,
            "max_in_flight": r.config.batch_max_in_flight,
            "resubmitted": r.resubmitted,
            "expired_lines": r.n_expired,
            "error_lines": r.n_line_errors,
            "skipped_in_batches": r.skipped_in_batches,
            "duplicates_skipped": r.duplicates,
            "statuses": statuses,
            "poll_interval_s": r.poll_interval_s,
        },
        "config": r.config.public_dict(),
    }


def progress(r: BatchRunner) -> Progress:
    """A :class:`Progress` for the CLI's live display (rates are not meaningful for batches: 0)."""
    done = r.succeeded + r.failed + r.rejected + r.skipped_done
    budget = r.budget
    return Progress(
        done=done,
        total=r.total,
        succeeded=r.succeeded,
        failed=r.failed,
        rejected=r.rejected,
        skipped_done=r.skipped_done,
        cost_usd=budget.total_spent_usd,
        committed_usd=budget.committed_usd,
        budget_usd=r.config.budget_usd,
        projected_total_usd=None,
        requests_per_s=0.0,
        tokens_per_min=0.0,
        limit_rpm=None,
        limit_tpm=None,
        n_429=0,
        n_retries=r.resubmitted,
        in_flight=sum(p.state.requests for p in r.in_flight()),
        eta_s=None,
        elapsed_s=time.monotonic() - r.t0,
    )


def run_result(r: BatchRunner, stats: Mapping[str, Any]) -> RunResult:
    return RunResult(
        stop_reason=str(stats["stop_reason"]),
        run_dir=r.rd.path,
        planned=int(stats["planned"]),
        sent=int(stats["sent"]),
        succeeded=r.succeeded,
        failed=r.failed,
        rejected=r.rejected,
        skipped_done=r.skipped_done,
        cost_usd=r.collected_usd,
        total_spent_usd=r.budget.committed_usd,
        stats=dict(stats),
    )
