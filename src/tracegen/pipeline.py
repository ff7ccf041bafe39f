"""The whole job, as the CLI and ``tracegen.run()`` do it.

    planning/  (sources → mix → templates → tokens)  →  engine/ or batch/  (generate)
    →  cleaning/  (filters, answer check, dedup)  →  publish/  (export + card, push)  →  report/

Each stage is a package; a stage imports only those before it, and this module (with ``stages`` for
progressive teachers) strings them together.

Each step reads and writes the run directory (layout in the README), so every step can be rerun on its own
and a rerun of the whole job continues where it stopped. ``asyncio.run`` is called once, here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .cleaning.merge import claim_output, release_output
from .cleaning.merge import merge as merge_runs
from .cleaning.postprocess import clean, rejections_except
from .config import RunConfig
from .engine import Progress, RunDir, RunResult, generate
from .engine.preflight import check_endpoint, check_keys
from .engine.store import REHEARSAL_BASE_URL
from .errors import RunDirError
from .planning.estimate import estimate
from .planning.plan import PlanStats, build_plan, iter_plan, plan_parameters, shortfall_message, write_plan
from .planning.sources import Rejection
from .publish.export import export
from .report import write_report
from .rundir import (
    RunPaths,
    atomic_write_bytes,
    lock_run_dir,
    open_read,
    read_json,
    read_manifest,
    write_manifest,
)
from .stages import (
    combine_stages,
    is_staged,
    prepare_stage,
    stage_budget_usd,
    stage_config,
    stage_names,
    stage_path,
    stages_stats,
)

__all__ = [
    "arun",
    "batch_cancel",
    "batch_status",
    "estimate_run",
    "finish",
    "merge",
    "prepare",
    "run",
]

StageCallback = Callable[[str], None]
PLAN_STAGES = ("source", "plan")


log = logging.getLogger(__name__)


def _noop(_: str) -> None:
    return None


def _rewrite_rejections(run_dir: Path, stages: tuple[str, ...], new: list[dict[str, Any]]) -> None:
    """Replace the rejected.jsonl lines of ``stages`` with ``new``, keeping other stages' lines (atomic)."""

    path = RunPaths(run_dir).rejected
    data = b"".join(rejections_except(path, stages))
    data += "".join(json.dumps(entry, ensure_ascii=False) + "\n" for entry in new).encode("utf-8")
    try:
        atomic_write_bytes(path, data)
    except OSError as e:
        raise RunDirError(
            f"{path}: cannot write ({e.strerror}); check free disk space and permissions"
        ) from None


def prepare(
    config: RunConfig,
    *,
    extend: bool = False,
    rehearse: bool = False,
    on_stage: StageCallback = _noop,
    before_planning: Callable[[], None] | None = None,
) -> RunDir:
    """Open the run directory (refusing a changed plan) and write the plan once; reuse it on reruns.

    ``before_planning`` runs once the run directory is accepted, before the plan is read or built (the
    teacher's endpoint check: the run directory's own refusal, local and free, comes first).

    A rehearsal pins its own teacher identity, so synthetic answers never mix with real ones in one
    run directory.
    """

    public = config.public_dict()
    if rehearse:
        public["base_url"] = REHEARSAL_BASE_URL
    rd = RunDir.open(
        config.output_dir,
        plan_parameters(config, dedup_questions=config.plan_dedup_questions),
        public,
        extend=extend,
    )
    if before_planning is not None:
        before_planning()
    plan_done = rd.paths.plan.exists() and rd.paths.plan_stats.exists()
    if plan_done and not extend and not rd.replaced:
        on_stage(f"reusing the plan in {rd.paths.plan}")
        _say_shortfall(rd.path, on_stage)
        return rd
    on_stage("planning: reading the source and sampling the Orca mix")
    rejected: list[dict[str, Any]] = []

    def on_reject(r: Rejection) -> None:
        rejected.append(r.to_dict())

    with build_plan(
        config, on_reject=on_reject, spill_dir=rd.path, dedup_questions=config.plan_dedup_questions
    ) as plan:
        stats = write_plan(plan, rd.path, shard=config.shard_index())
    _rewrite_rejections(rd.path, PLAN_STAGES, rejected)
    on_stage(f"planned {stats.planned_total:,} requests into {rd.paths.plan}")
    _say_shortfall(rd.path, on_stage)
    return rd


def _shortfall(run_dir: Path) -> str | None:
    """What the plan in ``run_dir`` could not fill (--n or a submix's share) and why, or None."""

    try:
        stats = PlanStats.from_dict(read_json(RunPaths(run_dir).plan_stats))
    except (OSError, ValueError, TypeError, RunDirError):
        return None
    return shortfall_message(stats)


def _say_shortfall(run_dir: Path, on_stage: StageCallback) -> None:
    """Tell the run what its plan could not fill and why (a stage line starting with ``warning:``)."""
    message = _shortfall(run_dir)
    if message is not None:
        on_stage("warning: " + message)


def _check_layout(rd: RunDir, config: RunConfig) -> None:
    """A staged run directory stays staged, an unstaged one unstaged."""

    if config.stages and rd.paths.traces.exists():
        raise RunDirError(
            f"{rd.path}: holds answers of a run without stages; give the staged run a new --output-dir"
        )
    if not config.stages and is_staged(rd.path):
        raise RunDirError(
            f"{rd.path}: holds a staged run (stages/); rerun it with the same config (its stages:), "
            "or use a new --output-dir"
        )


def estimate_run(
    config: RunConfig, *, extend: bool = False, on_stage: StageCallback = _noop
) -> dict[str, Any]:
    """The dry run: plan (written to the run dir, with requests.jsonl), then estimate cost. Sends nothing.

    With stages, every stage's subset is planned (``stages/<name>/plan.jsonl`` and ``requests.jsonl``) and
    estimated at its model's prices; the top-level numbers are the totals.
    """

    rd = prepare(config, extend=extend, on_stage=on_stage)
    _check_layout(rd, config)
    if config.stages:
        return _estimate_stages(config, rd, on_stage, extend)
    est = estimate(iter_plan(rd.path), config).to_dict()
    est["run_dir"] = str(rd.path)
    est["requests_jsonl"] = str(rd.paths.requests)
    est.update(_plan_report(rd.path))
    return est


def _plan_report(run_dir: Path) -> dict[str, Any]:
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
    if (shortfall := _shortfall(run_dir)) is not None:
        report["plan_shortfall"] = shortfall
    if stats.get("absent"):
        report["absent_submixes"] = ", ".join(stats["absent"]) + " (no eligible rows; shares renormalised)"
    return report


def _estimate_stages(config: RunConfig, rd: RunDir, on_stage: StageCallback, extend: bool) -> dict[str, Any]:

    per: list[dict[str, Any]] = []
    for stage in config.stages:
        srd, scfg = prepare_stage(rd, config, stage, extend=extend)
        on_stage(f"stage {stage.name}: planned {_count_lines(srd.paths.plan):,} requests")
        est = estimate(iter_plan(srd.path), scfg).to_dict()
        est.update(stage=stage.name, run_dir=str(srd.path), requests_jsonl=str(RunPaths(srd.path).requests))
        per.append(est)
    cost: dict[str, float] = {}
    for est in per:
        for k, v in est["cost_usd"].items():
            cost[k] = cost.get(k, 0.0) + v
    total: dict[str, Any] = {
        "stages": per,
        "requests": sum(e["requests"] for e in per),
        "prompt_tokens": sum(e["prompt_tokens"] for e in per),
        "budget_usd": config.budget_usd,
        "run_dir": str(rd.path),
        "cost_usd": cost,
    }
    for est in per:
        total[f"stage_{est['stage']}"] = {
            "model": est["model"],
            "requests": est["requests"],
            "prompt_tokens": est["prompt_tokens"],
            "max_tokens": est["max_tokens"],
            **est["cost_usd"],
            "budget_usd": est["budget_usd"],
        }
    return total


def _count_lines(path: Path) -> int:
    with open_read(path) as f:
        return sum(1 for line in f if line.strip())


async def arun(
    config: RunConfig,
    *,
    extend: bool = False,
    rehearse: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
    on_stage: StageCallback = _noop,
    stop: asyncio.Event | None = None,
) -> dict[str, Any]:
    """The main job, async. Returns the run summary (``stats.json`` plus clean/export results).

    Holds the run directory's lock throughout (:mod:`tracegen.lock`): a second process is refused. The
    teacher's key and endpoint are checked first (:mod:`tracegen.engine.preflight`: no tokens billed), so a run that
    cannot reach its teacher fails before it plans anything.
    """
    if not rehearse:
        check_keys(config)
    with lock_run_dir(config.output_dir, "tracegen run"):
        return await _arun(
            config, extend=extend, rehearse=rehearse, on_progress=on_progress, on_stage=on_stage, stop=stop
        )


async def _arun(
    config: RunConfig,
    *,
    extend: bool,
    rehearse: bool,
    on_progress: Callable[[Progress], None] | None,
    on_stage: StageCallback,
    stop: asyncio.Event | None,
) -> dict[str, Any]:
    rd = prepare(
        config,
        extend=extend,
        rehearse=rehearse,
        on_stage=on_stage,
        before_planning=None if rehearse else lambda: check_endpoint(config),
    )
    _check_layout(rd, config)
    stop = stop or asyncio.Event()
    if config.stages:
        return await _arun_stages(
            config,
            rd,
            extend=extend,
            rehearse=rehearse,
            on_progress=on_progress,
            on_stage=on_stage,
            stop=stop,
        )
    with _rehearsal(config, rehearse) as (cfg, env), _graceful_interrupt(stop, on_stage):
        result = await _answer(cfg, rd, env, on_progress=on_progress, on_stage=on_stage, stop=stop)
    summary: dict[str, Any] = {"stop_reason": result.stop_reason, "run": result.stats}
    if (shortfall := _shortfall(rd.path)) is not None:
        summary["plan_shortfall"] = shortfall
    if result.succeeded + result.skipped_done > 0:
        summary.update(finish(rd.path, config=config, on_stage=on_stage))
        _report(rd.path, summary, on_stage)
    if config.push_to_hub:
        on_stage(f"pushing to the Hub: {config.push_to_hub}")
        summary["push"] = _push(rd.path, config.push_to_hub, config.private)
    return summary


async def _answer(
    cfg: RunConfig,
    rd: RunDir,
    env: dict[str, str] | None,
    *,
    on_progress: Callable[[Progress], None] | None,
    on_stage: StageCallback,
    stop: asyncio.Event,
    label: str = "",
) -> RunResult:
    """Generate the plan of ``rd`` online (one endpoint or a pool) or through the Batch API."""

    total = _count_lines(rd.paths.plan)
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
        iter_plan(rd.path), cfg, rd, on_progress=on_progress, stop=stop, total=total, env=env
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


async def _arun_stages(
    config: RunConfig,
    rd: RunDir,
    *,
    extend: bool,
    rehearse: bool,
    on_progress: Callable[[Progress], None] | None,
    on_stage: StageCallback,
    stop: asyncio.Event,
) -> dict[str, Any]:
    """Each stage in order, in its own sub run directory (see :mod:`tracegen.stages`)."""

    answered = 0
    sent = tokens = 0
    with _rehearsal(config, rehearse) as (cfg, env), _graceful_interrupt(stop, on_stage):
        for stage, live in zip(config.stages, cfg.stages, strict=True):
            label = f"stage {stage.name}: "
            srd, _ = prepare_stage(rd, config, stage, extend=extend)  # checked against the real settings
            scfg = stage_config(cfg, live, rd.path)  # sent where the rehearsal (if any) points
            caps: dict[str, Any] = {"budget_usd": stage_budget_usd(cfg, stage, rd.path)}
            if cfg.max_requests is not None:  # caps of one session count over all stages
                caps["max_requests"] = cfg.max_requests - sent
            if cfg.max_total_tokens is not None:
                caps["max_total_tokens"] = cfg.max_total_tokens - tokens
            if any(v is not None and v <= 0 for v in caps.values()):
                on_stage(f"{label}skipped: nothing left of the run's budget / caps")
                continue
            result = await _answer(
                scfg.model_copy(update=caps),
                srd,
                env,
                on_progress=on_progress,
                on_stage=on_stage,
                stop=stop,
                label=label,
            )
            answered += result.succeeded + result.skipped_done
            sent += int(result.stats.get("sent", 0))
            tokens += int(result.stats.get("prompt_tokens", 0)) + int(
                result.stats.get("completion_tokens", 0)
            )
            if result.stop_reason not in ("completed", "budget") or stop.is_set():
                break  # interrupted, or a run-wide cap reached: later stages wait for the rerun
    names = stage_names(rd.path, config)
    stats = stages_stats(rd.path, names, config)
    rd.write_stats(stats)
    summary: dict[str, Any] = {
        "stop_reason": stats["stop_reason"],
        "run": {k: v for k, v in stats.items() if not isinstance(v, (dict, list))},
        **{k: v for k, v in stats.items() if k.startswith("stage_")},
    }
    if answered > 0:
        summary.update(finish(rd.path, config=config, on_stage=on_stage))
        _report(rd.path, summary, on_stage)
    if config.push_to_hub:
        on_stage(f"pushing to the Hub: {config.push_to_hub}")
        summary["push"] = _push(rd.path, config.push_to_hub, config.private)
    return summary


def run(
    config: RunConfig,
    *,
    extend: bool = False,
    rehearse: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
    on_stage: StageCallback = _noop,
) -> dict[str, Any]:
    """The main job: plan, generate within the budget, clean, export, push. Rerun to resume."""
    return asyncio.run(
        arun(config, extend=extend, rehearse=rehearse, on_progress=on_progress, on_stage=on_stage)
    )


def _report(run: Path, summary: dict[str, Any], on_stage: StageCallback) -> None:
    """Write RUN_DIR/report.html; a failure is logged, never fatal (the data is already safe on disk)."""

    try:
        summary["report"] = str(write_report(run))
        on_stage(f"report: {summary['report']}")
    except Exception as e:  # the report is a view: it must not turn a finished run into a failed one
        log.warning(
            "could not write the run report (%s: %s); try `tracegen report %s`", type(e).__name__, e, run
        )


@contextlib.contextmanager
def _rehearsal(config: RunConfig, rehearse: bool) -> Iterator[tuple[RunConfig, dict[str, str] | None]]:
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
def _graceful_interrupt(stop: asyncio.Event, on_stage: StageCallback) -> Iterator[None]:
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


def finish(
    run_dir: str | Path,
    *,
    config: RunConfig | None = None,
    formats: list[str] | None = None,
    output_dir: str | Path | None = None,
    on_stage: StageCallback = _noop,
) -> dict[str, Any]:
    """Clean (filters + dedup) and export a run directory. Calls no API; safe to rerun.

    A staged run directory: each stage is cleaned on its own (dedup within a stage: the stages answer the
    same pairs on purpose), their clean.jsonl are combined in stage order and exported as one dataset with
    one config per stage.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise RunDirError(f"{run}: no such run directory")
    with lock_run_dir(run, "tracegen export"):
        return _finish(run, config, formats, output_dir, on_stage)


def _finish(
    run: Path,
    config: RunConfig | None,
    formats: list[str] | None,
    output_dir: str | Path | None,
    on_stage: StageCallback,
) -> dict[str, Any]:

    cfg = config or _config_of(run)
    if is_staged(run):
        names = stage_names(run, cfg)
        answered = [n for n in names if RunPaths(stage_path(run, n)).traces.exists()]
        if not answered:
            raise RunDirError(f"{run}: no stage has answers yet (stages/*/traces.jsonl); run it first")
        for name in answered:
            on_stage(f"cleaning stage {name}: quality filters, answer check, dedup")
            clean(stage_path(run, name), cfg.filters, cfg.dedup_config())
        cleaned_stages = combine_stages(run, names, cfg)
        fmts = tuple(formats or cfg.export_formats)
        on_stage(f"exporting {', '.join(fmts)}, one config per stage")
        exported = export(run, output_dir, formats=fmts)
        return {"clean": cleaned_stages, "export": exported.to_dict()}
    if not RunPaths(run).traces.exists():
        raise RunDirError(f"{run}: no traces.jsonl: not a run directory, or nothing was answered yet")
    on_stage("cleaning: quality filters, answer check, dedup")
    cleaned = clean(run, cfg.filters, cfg.dedup_config())
    fmts = tuple(formats or cfg.export_formats)
    on_stage(f"exporting {', '.join(fmts)}")
    exported = export(run, output_dir, formats=fmts)
    return {"clean": cleaned.to_dict(), "export": exported.to_dict()}


def _config_of(run: Path) -> RunConfig:
    """The RunConfig a run directory was made with (from manifest.json)."""
    try:
        manifest = read_manifest(run) or {}
        return RunConfig.model_validate(manifest.get("config") or {})
    except (OSError, ValueError, RunDirError):
        return RunConfig(output_dir=run)


def _push(run: Path, repo_id: str, private: bool) -> dict[str, Any]:
    """Push a finished run (``push_to_hub``); what the summary records of it."""
    from .publish.hub import push  # lazy: huggingface_hub loads only to push

    return push(run, repo_id, private=private).to_dict()


def merge(run_dirs: Sequence[str | Path], output: str | Path) -> dict[str, Any]:
    """Combine run directories with global dedup into ``output``, then clean and export it (``tracegen merge``).

    Staged run directories (shards of one staged run) are merged stage by stage into
    ``output/stages/<name>``, with global dedup within each stage, and exported as one dataset.
    Returns the summary ``tracegen merge --json`` prints: ``merge``, ``clean``, ``export``.
    """
    dirs, out = [Path(d) for d in run_dirs], Path(output)
    with contextlib.ExitStack() as locks:
        for d in dict.fromkeys([*dirs, out]):
            if d.is_dir():
                locks.enter_context(lock_run_dir(d, "tracegen merge"))
        return _merge(dirs, out)


def _merge(run_dirs: list[Path], output: Path) -> dict[str, Any]:

    staged = [is_staged(d) for d in run_dirs]
    if any(staged):
        return _merge_stages(run_dirs, output, all(staged))
    result = merge_runs(run_dirs, output, clean_output=False)  # finish() cleans once
    summary: dict[str, Any] = {"merge": result.to_dict()}
    summary.update(finish(output))
    release_output(output)  # a kill before this: the rerun redoes the merge
    return summary


def _merge_stages(run_dirs: list[Path], output: Path, all_staged: bool) -> dict[str, Any]:

    if not all_staged:
        raise RunDirError(
            "cannot merge staged run directories (with stages/) with unstaged ones; merge each kind"
        )
    claim_output(output)  # an interrupted merge is redone from scratch
    configs = [_config_of(d) for d in run_dirs]
    names: list[str] = []
    for d, cfg in zip(run_dirs, configs, strict=True):
        names += [n for n in stage_names(d, cfg) if n not in names]
    merged: dict[str, Any] = {}
    for name in names:
        inputs = [stage_path(d, name) for d in run_dirs if RunPaths(stage_path(d, name)).traces.is_file()]
        if inputs:
            merged[name] = merge_runs(inputs, stage_path(output, name), clean_output=False).to_dict()
    if not merged:
        raise RunDirError("no stage of these run directories has answers (stages/*/traces.jsonl)")
    first = read_manifest(run_dirs[0]) or {}
    manifest = {
        "merged": True,
        "merged_from": [d.name for d in run_dirs],
        "config": first.get("config", {}),
        "plan_params": first.get("plan_params", {}),
        "tracegen_version": first.get("tracegen_version"),
    }
    write_manifest(output, manifest)
    budgets = [c.budget_usd for c in configs]
    budget = sum(b for b in budgets if b is not None) if all(b is not None for b in budgets) else None
    summary: dict[str, Any] = {"merge": merged}
    summary.update(finish(output, config=configs[0].model_copy(update={"budget_usd": budget})))
    release_output(output)
    return summary


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
