"""A staged run stopped by its budget: what is left in every stage, and the run budget that finishes them all.

Each stage is an ordinary run directory with its own stats.json; the run's ``to_finish`` (stats.json of the
run directory, see :func:`tracegen.stages.stages_stats`) adds the stages up:

- ``requests_left`` / ``requests_planned`` / ``more_usd``: the sums over the stages (``more_usd`` at each
  stage's own mean price: an answer of gpt-4 costs what gpt-4's answers cost);
- ``finish_budget_usd``: the sum of what each stage needs -- a finished stage its spend, an unfinished one its
  own finish budget (its spend, plus what is left, plus the room its reservations need:
  :func:`~tracegen.engine.core.finish_figures`). A stage's budget is the run budget less every *other*
  stage's spend (:func:`~tracegen.stages.stage_budget_usd`), so with this run budget each stage, when it runs,
  finds at least its own finish budget: the stages before it spent what they needed, the ones after it no
  more than they have spent so far. (An over-estimate by the other stages' reservation room: safe.)
- ``stage_budgets_usd``: stages whose own ``budget_usd`` (a cap in the config) is below what they need; no run
  budget finishes them until that cap is raised.

A stage that stopped by the budget has its figures in its own stats.json; a stage not started yet (or stopped
for another reason) is walked request by request over its plan: what is not answered is left, at the mean
cost of its answers so far, or -- none yet -- at the expected answer length, with the budget need taken as
every left request's worst case (nothing is known of this teacher's answers yet: the safe figure).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import RunConfig
from .engine.core import Pricer, Request, cents_up, finish_figures
from .engine.store import RunDir
from .errors import TracegenError
from .planning.params import expected_reasoning_tokens
from .planning.tokens import encoding_for_model
from .rundir import read_plan

__all__ = ["StageLeft", "run_to_finish", "stage_left", "walk_stage"]


@dataclass(frozen=True)
class StageLeft:
    """One stage's share of the run's ``to_finish``. ``need_usd`` None: unknown (no cost figure)."""

    name: str
    planned: int
    left: int
    more_usd: float
    need_usd: float | None
    cap_usd: float | None = None
    """The stage's own ``budget_usd`` (a cap), if any."""


def stage_left(
    name: str, stats: Mapping[str, Any] | None, spent_usd: float, cap_usd: float | None
) -> StageLeft | None:
    """The stage's figures from its stats.json (finished, or stopped by the budget); None: walk its plan."""
    if not isinstance(stats, Mapping):
        return None
    planned = int(stats.get("planned") or 0)
    if stats.get("stop_reason") == "completed":
        return StageLeft(name, planned, 0, 0.0, spent_usd, cap_usd)
    tf = stats.get("to_finish")
    if stats.get("stop_reason") == "budget" and isinstance(tf, Mapping):
        left = int(tf.get("requests_left", 0))
        need = tf.get("finish_budget_usd") if left else spent_usd
        if need is None:  # nothing answered yet, online: no mean to go by
            return None
        more = float(tf.get("more_usd", 0.0))
        return StageLeft(name, int(tf.get("requests_planned", planned)), left, more, need, cap_usd)
    return None


def walk_stage(name: str, path: Path, scfg: RunConfig, spent_usd: float) -> StageLeft:
    """The stage's figures from its plan: every request not answered is left (see the module docstring)."""
    batch = scfg.mode == "batch"
    try:
        pricer = Pricer(scfg, batch=batch)
    except TracegenError:  # no price for the stage's model: count what is left, no dollars
        pricer = None
    encoding = encoding_for_model(scfg.model, scfg.price_file)
    done = RunDir(path, {}).load_done()
    expected_out = min(scfg.expected_output_tokens + expected_reasoning_tokens(scfg), scfg.max_tokens)
    planned = left = 0
    worst = worst_one = expected = 0.0
    seen: set[bytes] = set()
    pricing = pricer.pricing if pricer is not None else None
    for rec in read_plan(path):
        planned += 1
        if pricing is None:
            continue
        req = Request(rec, scfg, pricing, encoding, batch=batch)
        if req.digest in done.keys or req.digest in seen:
            continue
        seen.add(req.digest)
        left += 1
        worst += req.res_usd
        worst_one = max(worst_one, req.res_usd)
        expected += pricing.cost_usd(req.prompt_tokens, expected_out)
    if pricing is None:
        return StageLeft(name, planned, planned - done.n_traces - done.n_rejected, 0.0, None, scfg.budget_usd)
    answered = done.n_traces + done.n_rejected
    mean = done.cost_usd / answered if answered else (expected / left if left else None)
    figures = finish_figures(
        planned,
        left,
        mean_usd=mean,
        spent_usd=spent_usd,
        last_worst_usd=worst_one,
        all_worst_usd=worst if batch or not answered else None,
    )
    need = figures.get("finish_budget_usd", spent_usd if not left else None)
    return StageLeft(name, planned, left, float(figures.get("more_usd", 0.0)), need, scfg.budget_usd)


def run_to_finish(stages: Sequence[StageLeft]) -> dict[str, Any]:
    """The run's ``to_finish``: the stages added up (module docstring)."""
    out: dict[str, Any] = {
        "requests_left": sum(s.left for s in stages),
        "requests_planned": sum(s.planned for s in stages),
    }
    if not out["requests_left"] or any(s.need_usd is None for s in stages):
        return out
    out["more_usd"] = round(sum(s.more_usd for s in stages), 4)
    out["finish_budget_usd"] = cents_up(sum(float(s.need_usd or 0.0) for s in stages))
    capped = {
        s.name: cents_up(s.need_usd)
        for s in stages
        if s.left and s.need_usd is not None and s.cap_usd is not None and s.need_usd > s.cap_usd
    }
    if capped:
        out["stage_budgets_usd"] = capped
    return out
