"""What a batch session reports: stats.json (the online runner's keys plus a ``batch`` section, and at a
budget stop ``to_finish``: every request left reserved at once, see :func:`~tracegen.engine.core.finish_figures`), the
:class:`~tracegen.engine.Progress` snapshots of the live display, and the :class:`~tracegen.engine.RunResult`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..engine import Progress, RunResult

if TYPE_CHECKING:
    from .runner import BatchRunner

__all__ = ["progress", "run_result", "run_stats"]


def run_stats(r: BatchRunner) -> dict[str, Any]:
    """stats.json: the keys every session reports (:meth:`~tracegen.engine.core.Core.base_stats`), plus
    the batch's own and a ``batch`` section."""
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
    stats = r.base_stats(
        sent=budget.requests,
        unfinished=r.unfinished + len(r.retry_queue),
        cost_usd=r.collected_usd,
        total_spent_usd=budget.committed_usd,
        reserved_usd_unknown=0.0,
        limits={"requests_per_minute": None, "tokens_per_minute": None},
    )
    stats["mode"] = "batch"
    stats["reserved_usd_in_flight"] = round(sum(p.state.reserve_usd for p in in_flight), 9)
    stats["batch"] = {
        "parts_in_flight": len(in_flight),
        "requests_in_flight": sum(p.state.requests for p in in_flight),
        "batches_created": r.batches_created,
        "parts_collected": r.parts_collected,
        "files_deleted": r.files_deleted,
        "max_in_flight": r.limits.batch_max_in_flight,
        "resubmitted": r.n_retries,
        "expired_lines": r.n_expired,
        "error_lines": r.n_line_errors,
        "skipped_in_batches": r.skipped_in_batches,
        "duplicates_skipped": r.duplicates,
        "statuses": statuses,
        "poll_interval_s": r.poll_interval_s,
    }
    stats["config"] = r.settings.public_dict()
    if stats["stop_reason"] == "budget" and r.left is not None:
        left, worst = r.left
        planned = r.total if r.total is not None else r.read + r.drained
        stats["planned"] = planned
        # failed requests are not left (they were sent), but a rerun sends them again: room for them too
        worst += r.failed_worst_usd
        stats["to_finish"] = r.to_finish(planned, left, spent_usd=budget.committed_usd, all_worst_usd=worst)
    return stats


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
        budget_usd=r.limits.budget_usd,
        projected_total_usd=None,
        requests_per_s=0.0,
        tokens_per_min=0.0,
        limit_rpm=None,
        limit_tpm=None,
        n_429=0,
        n_retries=r.n_retries,
        in_flight=sum(p.state.requests for p in r.in_flight()),
        eta_s=None,
        elapsed_s=time.monotonic() - r.t0,
    )


def run_result(r: BatchRunner, stats: Mapping[str, Any]) -> RunResult:
    return r.result_of(stats, cost_usd=r.collected_usd, total_spent_usd=r.budget.committed_usd)
