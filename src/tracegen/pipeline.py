"""The whole job, as the CLI and ``tracegen.run()`` do it.

    plan (sources → mix → templates → tokens)  →  generate (engine)  →  clean (filters, dedup)
    →  export (parquet/jsonl + card)  →  push (optional)

Each step reads and writes the run directory (layout in the README), so every step can be rerun on its own
and a rerun of the whole job continues where it stopped. ``asyncio.run`` is called once, here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .config import RunConfig
from .engine import Progress, RunDir, generate, make_client
from .errors import RunDirError
from .records import Record
from .sources import Rejection

__all__ = [
    "arun",
    "batch_cancel",
    "batch_status",
    "estimate_run",
    "finish",
    "merge",
    "prepare",
    "push",
    "run",
]

StageCallback = Callable[[str], None]
PLAN_STAGES = ("source", "plan")


def _noop(_: str) -> None:
    return None


def _rewrite_rejections(run_dir: Path, stages: tuple[str, ...], new: list[dict[str, Any]]) -> None:
    """Replace the rejected.jsonl lines of ``stages`` with ``new``, keeping other stages' lines (atomic)."""
    path = run_dir / "rejected.jsonl"
    kept: list[str] = []
    if path.exists():
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    stage = json.loads(line).get("stage")
                except json.JSONDecodeError:
                    continue  # a torn last line from a crash
                if stage not in stages:
                    kept.append(line if line.endswith("\n") else line + "\n")
    tmp = path.with_suffix(".jsonl.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(kept)
            for entry in new:
                f.write(json.dumps(entry, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise RunDirError(
            f"{path}: cannot write ({e.strerror}); check free disk space and permissions"
        ) from None


def prepare(config: RunConfig, *, extend: bool = False, on_stage: StageCallback = _noop) -> RunDir:
    """Open the run directory (refusing a changed plan) and write the plan once; reuse it on reruns."""
    from .plan import build_plan, plan_parameters, write_plan

    rd = RunDir.open(
        config.output_dir,
        plan_parameters(config, dedup_questions=config.plan_dedup_questions),
        config.public_dict(),
        extend=extend,
    )
    plan_done = (rd.path / "plan.jsonl").exists() and (rd.path / "plan_stats.json").exists()
    if plan_done and not extend:
        on_stage(f"reusing the plan in {rd.path / 'plan.jsonl'}")
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
    on_stage(f"planned {stats.planned_total:,} requests into {rd.path / 'plan.jsonl'}")
    return rd


def estimate_run(config: RunConfig, *, on_stage: StageCallback = _noop) -> dict[str, Any]:
    """The dry run: plan (written to the run dir, with requests.jsonl), then estimate cost. Sends nothing."""
    from .estimate import estimate
    from .plan import iter_plan

    rd = prepare(config, on_stage=on_stage)
    est = estimate(iter_plan(rd.path), config).to_dict()
    est["run_dir"] = str(rd.path)
    est["requests_jsonl"] = str(rd.path / "requests.jsonl")
    return est


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
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
    """The main job, async. Returns the run summary (``stats.json`` plus clean/export results)."""
    from .plan import iter_plan

    rd = prepare(config, extend=extend, on_stage=on_stage)
    total = _count_lines(rd.path / "plan.jsonl")
    stop = stop or asyncio.Event()
    with _rehearsal(config, rehearse) as (cfg, env), _graceful_interrupt(stop, on_stage):
        client = make_client(cfg, env) if env is not None else None
        if cfg.mode == "batch":
            from .batch import run_batches

            on_stage("Batch API mode: uploading and polling batches")
            result = await run_batches(iter_plan(rd.path), cfg, rd, on_stage=on_stage, stop=stop, env=env)
        else:
            on_stage(f"asking {cfg.model} ({total:,} planned requests)")
            try:
                result = await generate(
                    iter_plan(rd.path),
                    cfg,
                    rd,
                    client=client,
                    on_progress=on_progress,
                    stop=stop,
                    total=total,
                )
            finally:
                if client is not None:
                    await client.aclose()
    summary: dict[str, Any] = {"stop_reason": result.stop_reason, "run": result.stats}
    if result.succeeded + result.skipped_done > 0:
        summary.update(finish(rd.path, config=config, on_stage=on_stage))
    if config.push_to_hub:
        on_stage(f"pushing to the Hub: {config.push_to_hub}")
        summary["push"] = push(rd.path, config.push_to_hub, private=config.private)
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


@contextlib.contextmanager
def _rehearsal(config: RunConfig, rehearse: bool) -> Iterator[tuple[RunConfig, dict[str, str] | None]]:
    """With ``rehearse``, answer with the in-package fake server: no key, no network, no cost."""
    if not rehearse:
        yield config, None
        return
    from .testing import FakeOptions, FakeServer

    opts = FakeOptions(
        requests_per_minute=int(config.requests_per_minute) if config.requests_per_minute else None,
        tokens_per_minute=int(config.tokens_per_minute) if config.tokens_per_minute else None,
    )
    with FakeServer(opts) as srv:
        cfg = config.model_copy(update={"base_url": srv.base_url})
        yield cfg, {"OPENAI_API_KEY": "sk-tracegen-rehearsal", "OPENAI_BASE_URL": srv.base_url}


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
    """Clean (filters + dedup) and export a run directory. Calls no API; safe to rerun."""
    from .dedup import DedupConfig
    from .export import export
    from .filters import FilterConfig
    from .postprocess import clean

    run = Path(run_dir)
    if not (run / "traces.jsonl").exists():
        raise RunDirError(f"{run}: no traces.jsonl: not a run directory, or nothing was answered yet")
    cfg = config or _config_of(run)
    on_stage("cleaning: quality filters, answer check, dedup")
    cleaned = clean(run, FilterConfig(**cfg.filters), DedupConfig(**cfg.dedup))
    fmts = tuple(formats or cfg.export_formats)
    on_stage(f"exporting {', '.join(fmts)}")
    exported = export(run, output_dir, formats=fmts)
    return {"clean": cleaned.to_dict(), "export": exported.to_dict()}


def _config_of(run: Path) -> RunConfig:
    """The RunConfig a run directory was made with (from manifest.json)."""
    try:
        manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
        return RunConfig.model_validate(manifest.get("config") or {})
    except (OSError, ValueError):
        return RunConfig(output_dir=run)


def push(
    path: str | Path, repo_id: str, *, private: bool = True, config_name: str | None = None
) -> dict[str, Any]:
    """Push the exported dataset of ``path`` (a run dir or export dir) with its card to the Hub."""
    from .hub import push as hub_push

    return hub_push(path, repo_id, private=private, config_name=config_name).to_dict()


def merge(run_dirs: list[Path], output: Path) -> dict[str, Any]:
    """Combine run directories with global dedup into ``output`` (then export it)."""
    from .merge import merge as merge_runs

    result = merge_runs(run_dirs, output)
    summary: dict[str, Any] = {"merge": result.to_dict()}
    summary.update(finish(output))
    return summary


def batch_status(run_dir: Path) -> list[dict[str, Any]]:
    """Every Batch API job of a run directory with its status and request counts."""
    from .batch import status

    rows: list[dict[str, Any]] = status(run_dir)
    return rows


def batch_cancel(run_dir: Path) -> list[dict[str, Any]]:
    """Cancel every batch of the run still in flight."""
    from .batch import cancel

    rows: list[dict[str, Any]] = cancel(run_dir)
    return rows


def records_of(run_dir: str | Path) -> Iterator[Record]:
    """The answered records of a run directory, in plan order (after cleaning if it was cleaned)."""
    from .export import read_records

    return read_records(run_dir)[1]
