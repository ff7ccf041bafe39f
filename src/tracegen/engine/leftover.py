"""What is left of a run directory's plan, walked request by request: its ``to_finish`` when no session's
counters say it (a stage of a staged run not started yet, or stopped before any answer had a cost).

Every planned request not answered (traces.jsonl, rejected.jsonl) is left, once. Its cost: the mean cost of
the run directory's answers so far, or -- none yet -- the expected answer length at the teacher's prices
(``expected_output_tokens``, as the dry run). With no answer to go by, the budget figure takes the worst case
of every left request (prompt + ``max_tokens``), as a batch does anyway: nothing is known of this teacher's
answers yet, and an over-estimate is the safe side (:func:`~.core.finish_figures`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..errors import TracegenError
from ..planning.params import expected_reasoning_tokens
from ..planning.tokens import encoding_for_model
from ..rundir import read_plan
from .core import Pricer, Request, finish_figures
from .settings import EngineSettings
from .store import RunDir

__all__ = ["plan_to_finish"]


def plan_to_finish(run_dir: Path, config: RunConfig, spent_usd: float) -> dict[str, Any]:
    """``to_finish`` of ``run_dir``'s plan for ``config``'s teacher (module docstring); ``spent_usd``: its
    spend."""
    batch = config.mode == "batch"
    settings = EngineSettings.of(config)
    teacher = settings.teacher
    done = RunDir(run_dir, {}).load_done()
    try:
        pricing = Pricer(teacher, batch=batch, budget_usd=settings.limits.budget_usd).pricing
    except TracegenError:  # no price for the model: count what is left, no dollars
        planned = sum(1 for _ in read_plan(run_dir))
        left = max(0, planned - done.n_traces - done.n_rejected)
        return {"requests_left": left, "requests_planned": planned}
    encoding = encoding_for_model(teacher.model, teacher.price_file)
    expected_out = min(config.expected_output_tokens + expected_reasoning_tokens(config), teacher.max_tokens)
    planned = left = 0
    worst = worst_one = expected = 0.0
    seen: set[bytes] = set()
    for rec in read_plan(run_dir):
        planned += 1
        req = Request(rec, teacher, pricing, encoding, batch=batch)
        if req.digest in done.keys or req.digest in seen:
            continue
        seen.add(req.digest)
        left += 1
        worst += req.res_usd
        worst_one = max(worst_one, req.res_usd)
        expected += pricing.cost_usd(req.prompt_tokens, expected_out)
    answered = done.n_traces + done.n_rejected
    mean = done.cost_usd / answered if answered else (expected / left if left else None)
    return finish_figures(
        planned,
        left,
        mean_usd=mean,
        spent_usd=spent_usd,
        last_worst_usd=worst_one,
        all_worst_usd=worst if batch or not answered else None,
    )
