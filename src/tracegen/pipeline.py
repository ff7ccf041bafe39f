"""The whole job, as the CLI and ``tracegen.run()`` do it.

    planning/  (sources → mix → templates → tokens)  →  engine/ or batch/  (generate)
    →  cleaning/  (filters, answer check, dedup)  →  publish/  (export + card, push)  →  report/

Each stage is a package; a stage imports only those before it, and this module (with ``stages`` for
progressive teachers, ``run_support`` for rehearsal, Ctrl-C, the report and push) strings them together.

Every run is a list of teacher stages (:class:`Leg`): a run without ``stages:`` is the one stage whose
directory is the run directory itself (its files at the root, no ``stages/``), so estimate, run, finish and
merge have one code path each.

Each step reads and writes the run directory (layout in the README), so every step can be rerun on its own
and a rerun of the whole job continues where it stopped. ``asyncio.run`` is called once, here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._startup import no_collection

with no_collection():  # its imports allocate only long-lived objects (see _startup)
    from ._idle import when_idle
    from .cleaning.merge import claim_output, release_output
    from .cleaning.merge import merge as merge_runs
    from .cleaning.postprocess import clean, rejections_except
    from .cleaning.precheck import Prechecker
    from .config import RunConfig, StageConfig, config_of_run
    from .engine import Progress, RunDir, RunResult
    from .engine.preflight import check_endpoint, check_keys
    from .engine.store import REHEARSAL_BASE_URL
    from .errors import RunDirError
    from .planning.estimate import estimate
    from .planning.plan import build_plan, iter_plan, plan_parameters, write_plan
    from .planning.sources import Rejection
    from .run_support import (
        answer,
        batch_cancel,
        batch_status,
        count_lines,
        graceful_interrupt,
        plan_report,
        push_run,
        rehearsal,
        say_shortfall,
        shortfall,
        write_report_safely,
    )
    from .rundir import (
        RunPaths,
        atomic_write_bytes,
        lock_run_dir,
        read_manifest,
        write_manifest,
    )
    from .stages import (
        combine_stages,
        estimate_totals,
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
        say_shortfall(rd.path, on_stage)
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
    say_shortfall(rd.path, on_stage)
    return rd


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


# ---- the stages of a run -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Leg:
    """One teacher stage of a run. A run without ``stages:`` is one leg: the run directory itself."""

    rd: RunDir
    config: RunConfig  #: the stage's settings (the real teacher's, even when rehearsing)
    stage: StageConfig | None = None  #: None: the run's only stage, at the run directory's root
    index: int = 0

    @property
    def label(self) -> str:
        """The prefix of this stage's progress lines (none for an unstaged run)."""
        return f"stage {self.stage.name}: " if self.stage is not None else ""

    def live_config(self, cfg: RunConfig, run_dir: Path) -> RunConfig:
        """The stage's settings over ``cfg``: where requests go (the rehearsal's fake server, if any)."""
        if self.stage is None:
            return cfg
        return stage_config(cfg, cfg.stages[self.index], run_dir)


def _legs(config: RunConfig, rd: RunDir, *, extend: bool) -> Iterator[Leg]:
    """The run's stages in order, each prepared (its plan written) only when reached."""
    if not config.stages:
        yield Leg(rd, config)
        return
    for i, stage in enumerate(config.stages):
        srd, scfg = prepare_stage(rd, config, stage, extend=extend)
        yield Leg(srd, scfg, stage, i)


def _stage_dirs(run: Path, config: RunConfig) -> list[tuple[str | None, Path]]:
    """The (stage name, directory) of every stage of a run directory on disk; (None, run) when unstaged."""
    if not is_staged(run):
        return [(None, run)]
    return [(name, stage_path(run, name)) for name in stage_names(run, config)]


# ---- estimate ----------------------------------------------------------------------------------------------
def estimate_run(
    config: RunConfig, *, extend: bool = False, on_stage: StageCallback = _noop
) -> dict[str, Any]:
    """The dry run: plan (written to the run dir, with requests.jsonl), then estimate cost. Sends nothing.

    With stages, every stage's subset is planned (``stages/<name>/plan.jsonl`` and ``requests.jsonl``) and
    estimated at its model's prices; the top-level numbers are the totals.
    """

    rd = prepare(config, extend=extend, on_stage=on_stage)
    _check_layout(rd, config)
    per: list[dict[str, Any]] = []
    for leg in _legs(config, rd, extend=extend):
        if leg.stage is not None:
            on_stage(f"{leg.label}planned {count_lines(leg.rd.paths.plan):,} requests")
        est = estimate(iter_plan(leg.rd.path), leg.config).to_dict()
        if leg.stage is not None:
            est["stage"] = leg.stage.name
        est.update(run_dir=str(leg.rd.path), requests_jsonl=str(leg.rd.paths.requests))
        per.append(est)
    if not config.stages:
        return {**per[0], **plan_report(rd.path)}
    return estimate_totals(config, rd.path, per)


# ---- run ---------------------------------------------------------------------------------------------------
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
    """Each stage in order (an unstaged run: its one stage), then finish, report and push."""
    rd = prepare(
        config,
        extend=extend,
        rehearse=rehearse,
        on_stage=on_stage,
        before_planning=None if rehearse else lambda: check_endpoint(config),
    )
    _check_layout(rd, config)
    stop = stop or asyncio.Event()
    results: list[RunResult] = []
    precheck = Prechecker(config.filters, config.dedup_config())  # clean's per-answer work, done early
    warm = asyncio.create_task(when_idle(_warm_finish, after_s=WARM_AFTER_S))
    try:
        with rehearsal(config, rehearse) as (cfg, env), graceful_interrupt(stop, on_stage):
            async with precheck.running():
                async for result in _answer_legs(
                    config,
                    cfg,
                    rd,
                    env=env,
                    extend=extend,
                    on_progress=on_progress,
                    on_stage=on_stage,
                    stop=stop,
                    on_traces=precheck.feed,
                ):
                    results.append(result)
    finally:
        warm.cancel()
    summary = _run_summary(config, rd, results)
    if sum(r.succeeded + r.skipped_done for r in results) > 0:
        summary.update(finish(rd.path, config=config, on_stage=on_stage, prechecked=precheck))
        write_report_safely(rd.path, summary, on_stage)
    if config.push_to_hub:
        on_stage(f"pushing to the Hub: {config.push_to_hub}")
        summary["push"] = push_run(rd.path, config.push_to_hub, config.private)
    return summary


#: The finish step's set-up waits this long into generation (the first wave is out) for an idle turn.
WARM_AFTER_S = 0.2


def _warm_finish() -> None:
    """Import the export (pyarrow) and pay pyarrow's first-use set-up while the run waits for answers."""
    from .publish.export_writers import warm_up

    warm_up()


async def _answer_legs(
    config: RunConfig,
    cfg: RunConfig,
    rd: RunDir,
    *,
    env: dict[str, str] | None,
    extend: bool,
    on_progress: Callable[[Progress], None] | None,
    on_stage: StageCallback,
    stop: asyncio.Event,
    on_traces: Callable[[list[bytes]], None],
) -> AsyncIterator[RunResult]:
    """Generate each stage in order (an unstaged run: its one stage): each stage's result as it ends.

    ``config`` holds the real settings (checked against each stage's run directory), ``cfg`` where requests
    are sent (a rehearsal points it at the fake server).
    """
    sent = tokens = 0
    for leg in _legs(config, rd, extend=extend):  # each checked against the real settings
        live = leg.live_config(cfg, rd.path)  # sent where the rehearsal (if any) points
        budget = cfg.budget_usd if leg.stage is None else stage_budget_usd(cfg, leg.stage, rd.path)
        caps: dict[str, Any] = {"budget_usd": budget}
        if cfg.max_requests is not None:  # caps of one session count over all stages
            caps["max_requests"] = cfg.max_requests - sent
        if cfg.max_total_tokens is not None:
            caps["max_total_tokens"] = cfg.max_total_tokens - tokens
        if any(v is not None and v <= 0 for v in caps.values()):
            on_stage(f"{leg.label}skipped: nothing left of the run's budget / caps")
            continue
        result = await answer(
            live.model_copy(update=caps),
            leg.rd,
            env,
            on_progress=on_progress,
            on_stage=on_stage,
            stop=stop,
            label=leg.label,
            on_traces=on_traces,
        )
        yield result
        sent += int(result.stats.get("sent", 0))
        tokens += int(result.stats.get("prompt_tokens", 0)) + int(result.stats.get("completion_tokens", 0))
        if result.stop_reason not in ("completed", "budget") or stop.is_set():
            break  # interrupted, or a run-wide cap reached: later stages wait for the rerun


def _run_summary(config: RunConfig, rd: RunDir, results: list[RunResult]) -> dict[str, Any]:
    """The summary of the generation: the one stage's stats, or a staged run's totals (written to stats.json)."""
    if not config.stages:
        (result,) = results
        summary: dict[str, Any] = {"stop_reason": result.stop_reason, "run": result.stats}
        if (message := shortfall(rd.path)) is not None:
            summary["plan_shortfall"] = message
        return summary
    stats = stages_stats(rd.path, stage_names(rd.path, config), config)
    rd.write_stats(stats)
    return {
        "stop_reason": stats["stop_reason"],
        "run": {k: v for k, v in stats.items() if k == "to_finish" or not isinstance(v, (dict, list))},
        **{k: v for k, v in stats.items() if k.startswith("stage_")},
    }


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


# ---- finish ------------------------------------------------------------------------------------------------
def finish(
    run_dir: str | Path,
    *,
    config: RunConfig | None = None,
    formats: list[str] | None = None,
    output_dir: str | Path | None = None,
    on_stage: StageCallback = _noop,
    prechecked: Prechecker | None = None,
) -> dict[str, Any]:
    """Clean (filters + dedup) and export a run directory. Calls no API; safe to rerun.

    A staged run directory: each stage is cleaned on its own (dedup within a stage: the stages answer the
    same pairs on purpose), their clean.jsonl are combined in stage order and exported as one dataset with
    one config per stage. ``prechecked``: answer checks and filter verdicts already computed while the
    teacher answered (:mod:`tracegen.cleaning.precheck`); the output is the same without it.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise RunDirError(f"{run}: no such run directory")
    with lock_run_dir(run, "tracegen export"):
        return _finish(run, config, formats, output_dir, on_stage, prechecked)


def _finish(
    run: Path,
    config: RunConfig | None,
    formats: list[str] | None,
    output_dir: str | Path | None,
    on_stage: StageCallback,
    prechecked: Prechecker | None = None,
) -> dict[str, Any]:

    cfg = config or config_of_run(run)
    staged = is_staged(run)
    stages = _stage_dirs(run, cfg)
    answered = [(name, path) for name, path in stages if RunPaths(path).traces.exists()]
    if not answered and staged:
        raise RunDirError(f"{run}: no stage has answers yet (stages/*/traces.jsonl); run it first")
    if not answered:
        raise RunDirError(f"{run}: no traces.jsonl: not a run directory, or nothing was answered yet")
    cleaned: dict[str, Any] = {}
    for name, path in answered:
        on_stage(f"cleaning{'' if name is None else f' stage {name}'}: quality filters, answer check, dedup")
        cleaned = clean(
            path, cfg.filters, cfg.dedup_config(), prechecked=prechecked, hand_off=not staged
        ).to_dict()
    if staged:  # the stages' clean.jsonl, combined in stage order
        cleaned = combine_stages(run, [name for name, _ in stages if name is not None], cfg)
    fmts = tuple(formats or cfg.export_formats)
    on_stage(f"exporting {', '.join(fmts)}{', one config per stage' if staged else ''}")
    from .publish.export import export  # pyarrow: imported by the run while it waits (_warm_finish)

    exported = export(run, output_dir, formats=fmts)
    return {"clean": cleaned, "export": exported.to_dict()}


# ---- merge -------------------------------------------------------------------------------------------------
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
    """Merge stage by stage (an unstaged run: its one stage, at the root), then finish the output once."""

    staged = [is_staged(d) for d in run_dirs]
    if any(staged) and not all(staged):
        raise RunDirError(
            "cannot merge staged run directories (with stages/) with unstaged ones; merge each kind"
        )
    configs = [config_of_run(d) for d in run_dirs]
    if any(staged):
        claim_output(output)  # an interrupted merge is redone from scratch (the root merge claims its own)
    merged: dict[str | None, Any] = {}
    for name, inputs in _merge_inputs(run_dirs, configs, any(staged)):
        target = output if name is None else stage_path(output, name)
        merged[name] = merge_runs(inputs, target, clean_output=False).to_dict()  # finish() cleans once
    if not merged:
        raise RunDirError("no stage of these run directories has answers (stages/*/traces.jsonl)")
    config = None
    if any(staged):
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
        config = configs[0].model_copy(update={"budget_usd": budget})
    summary: dict[str, Any] = {"merge": merged.get(None, merged)}
    summary.update(finish(output, config=config))
    release_output(output)  # a kill before this: the rerun redoes the merge
    return summary


def _merge_inputs(
    run_dirs: list[Path], configs: list[RunConfig], staged: bool
) -> Iterator[tuple[str | None, list[Path]]]:
    """Each stage's name and the directories to merge into it: all of them for the one unstaged stage, else
    every run's stage directory that holds answers."""
    if not staged:
        yield None, run_dirs  # merge_runs checks each
        return
    names: list[str] = []
    for d, cfg in zip(run_dirs, configs, strict=True):
        names += [n for n in stage_names(d, cfg) if n not in names]
    for name in names:
        inputs = [stage_path(d, name) for d in run_dirs if RunPaths(stage_path(d, name)).traces.is_file()]
        if inputs:
            yield name, inputs
