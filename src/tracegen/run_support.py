"""What a run does around its stages: rehearsal, Ctrl-C, the plan's report, one stage's generation (online
or Batch API), the report page, push, batch jobs.

:mod:`tracegen.pipeline` strings the stages together; this module holds the helpers it calls around them,
so the orchestration reads as the job's steps. None of them sends a request to the teacher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .config import RunConfig
from .engine import Progress, RunDir, RunResult, generate
from .errors import RunDirError
from .planning.plan import PlanStats, iter_plan, shortfall_message
from .report import write_report
from .rundir import RunPaths, open_read, read_json

__all__ = [
    "answer",
    "batch_cancel",
    "batch_status",
    "count_lines",
    "graceful_interrupt",
    "plan_report",
    "push_run",
    "rehearsal",
    "say_shortfall",
    "shortfall",
    "write_report_safely",
]

StageCallback = Callable[[str], None]

log = logging.getLogger(__name__)


# ---- the plan's report -------------------------------------------------------------------------------------
def shortfall(run_dir: Path) -> str | None:
    """What the plan in ``run_dir`` could not fill (--n or a submix's share) and why, or None."""

    try:
        stats = PlanStats.from_dict(read_json(RunPaths(run_dir).plan_stats))
    except (OSError, ValueError, TypeError, RunDirError):
        return None
    return shortfall_message(stats)


def say_shortfall(run_dir: Path, on_stage: StageCallback) -> None:
    """Tell the run what its plan could not fill and why (a stage line starting with ``warning:``)."""
    message = shortfall(run_dir)
    if message is not None:
        on_stage("warning: " + message)


def plan_report(run_dir: Path) -> dict[str, Any]:
    """What the plan took and left out: quotas, shortfalls, absent submixes, drops (from plan_stats.json)."""
    try:
        stats = read_json(RunPaths(run_dir).plan_stats)
    except (OSError, ValueError, RunDirError):
        return {}
    report: dict[str, Any] = {
        "quota_per_submix": stats.get("quota", {}),
        "shortfall_per_submix": {k: v for k, v in stats.get("shortfall", {}).items() if v},
        "dropped_before_sending": {k: v for k, v in stats.get("dropped", {}).items() if v},
    }
    if stats.get("redistributed"):
        report["redistributed_per_submix"] = stats["redistributed"]
    if (message := shortfall(run_dir)) is not None:
        report["plan_shortfall"] = message
    if stats.get("absent"):
        report["absent_submixes"] = ", ".join(stats["absent"]) + " (no eligible rows; shares renormalised)"
    return report


def count_lines(path: Path) -> int:
    """Non-blank lines of a (JSONL) file."""
    with open_read(path) as f:
        return sum(1 for line in f if line.strip())


# ---- around the generation ---------------------------------------------------------------------------------
@contextlib.contextmanager
def rehearsal(config: RunConfig, rehearse: bool) -> Iterator[tuple[RunConfig, dict[str, str] | None]]:
    """With ``rehearse``, answer with the in-package fake server: no key, no network, no cost."""
    if not rehearse:
        yield config, None
        return
    from .testing import FakeOptions, FakeServer  # lazy: the fake server loads only to rehearse

    def options(rpm: float | None, tpm: float | None) -> FakeOptions:
        return FakeOptions(
            requests_per_minute=int(rpm) if rpm else None, tokens_per_minute=int(tpm) if tpm else None
        )

    key = "sk-tracegen-rehearsal"
    if config.endpoints:  # one fake server per endpoint, with that endpoint's limits
        with contextlib.ExitStack() as servers:
            endpoints, env = [], {}
            for e in config.endpoints:
                srv = servers.enter_context(FakeServer(options(e.requests_per_minute, e.tokens_per_minute)))
                endpoints.append(e.model_copy(update={"base_url": srv.base_url, "azure_deployment": None}))
                if e.api_key_env:
                    env[e.api_key_env] = key
            yield config.model_copy(update={"endpoints": endpoints}), env
        return
    with FakeServer(options(config.requests_per_minute, config.tokens_per_minute)) as srv:
        stages = [s.model_copy(update={"base_url": None}) for s in config.stages]
        cfg = config.model_copy(update={"base_url": srv.base_url, "stages": stages})
        yield cfg, {"OPENAI_API_KEY": key, "OPENAI_BASE_URL": srv.base_url}


@contextlib.contextmanager
def graceful_interrupt(stop: asyncio.Event, on_stage: StageCallback) -> Iterator[None]:
    """First Ctrl-C: stop dispatching, let requests in flight finish, flush. Second: stop at once."""
    try:
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()
    except RuntimeError:
        yield
        return

    def on_sigint() -> None:
        if stop.is_set() and main is not None:
            main.cancel()
            return
        on_stage("interrupted: finishing requests in flight (Ctrl-C again to stop at once)")
        stop.set()

    try:
        loop.add_signal_handler(signal.SIGINT, on_sigint)
        loop.add_signal_handler(signal.SIGTERM, on_sigint)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or Windows
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        loop.remove_signal_handler(signal.SIGTERM)


# ---- the generation: online or through the Batch API ---------------------------------------------
async def answer(
    cfg: RunConfig,
    rd: RunDir,
    env: dict[str, str] | None,
    *,
    on_progress: Callable[[Progress], None] | None,
    on_stage: StageCallback,
    stop: asyncio.Event,
    label: str = "",
    on_traces: Callable[[list[bytes]], None] | None = None,
) -> RunResult:
    """Generate the plan of ``rd`` online (one endpoint or a pool) or through the Batch API.

    ``on_traces``: see :func:`~tracegen.engine.generate` (online mode only).
    """

    total = count_lines(rd.paths.plan)
    if cfg.mode == "batch":
        from .batch import run_batches  # lazy: the openai SDK loads only for the Batch API

        on_stage(f"{label}Batch API mode: uploading and polling batches")
        result: RunResult = await run_batches(
            iter_plan(rd.path),
            cfg,
            rd,
            on_stage=on_stage,
            on_progress=on_progress,
            stop=stop,
            env=env,
            total=total,
            # the fake server finishes a batch in about a second: poll it often when rehearsing
            poll_interval_s=min(cfg.batch_poll_interval_s, 1.0) if env is not None else None,
        )
        return result
    _refuse_online_over_open_batches(rd)
    where = f" over {len(cfg.endpoints)} endpoints" if cfg.endpoints else ""
    on_stage(f"{label}asking {cfg.model}{where} ({total:,} planned requests)")
    return await generate(
        iter_plan(rd.path),
        cfg,
        rd,
        on_progress=on_progress,
        stop=stop,
        total=total,
        env=env,
        on_traces=on_traces,
    )


def _refuse_online_over_open_batches(rd: RunDir) -> None:
    """Online mode cannot know which requests a batch still in flight will answer: it would pay twice."""
    if not rd.paths.batches.exists():
        return
    from .batch import outstanding_parts  # lazy: openai SDK

    parts = outstanding_parts(rd.path)
    if parts:
        raise RunDirError(
            f"{rd.path}: {parts} Batch API part(s) are still in flight or uncollected; answering online now "
            "could pay twice for them: rerun with --mode batch to collect them first "
            "(or `tracegen batch cancel` it, then --mode batch to harvest the partial results)"
        )


# ---- after the generation ----------------------------------------------------------------------------------
def write_report_safely(run: Path, summary: dict[str, Any], on_stage: StageCallback) -> None:
    """Write RUN_DIR/report.html; a failure is logged, never fatal (the data is already safe on disk)."""

    try:
        summary["report"] = str(write_report(run))
        on_stage(f"report: {summary['report']}")
    except Exception as e:  # the report is a view: it must not turn a finished run into a failed one
        log.warning(
            "could not write the run report (%s: %s); try `tracegen report %s`", type(e).__name__, e, run
        )


def push_run(run: Path, repo_id: str, private: bool) -> dict[str, Any]:
    """Push a finished run (``push_to_hub``); what the summary records of it."""
    from .publish.hub import push  # lazy: huggingface_hub loads only to push

    return push(run, repo_id, private=private).to_dict()


# ---- Batch API jobs ----------------------------------------------------------------------------------------
def batch_status(run_dir: Path) -> list[dict[str, Any]]:
    """Every Batch API job of a run directory with its status and request counts."""
    from .batch import status  # lazy: openai SDK

    rows: list[dict[str, Any]] = status(run_dir)
    return rows


def batch_cancel(run_dir: Path) -> list[dict[str, Any]]:
    """Cancel every batch of the run still in flight."""
    from .batch import cancel  # lazy: openai SDK

    rows: list[dict[str, Any]] = cancel(run_dir)
    return rows
