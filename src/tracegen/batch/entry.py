"""The public entry points: :func:`run_batches`, :func:`status`, :func:`cancel` (and their async forms)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import openai

from ..config import RunConfig, config_of_run
from ..engine import Progress, RunDir, RunResult, generate, resolve_endpoint, retry_policy
from ..engine.client import teacher_client
from ..engine.settings import EngineSettings, Teacher
from ..errors import RunDirError
from ..records import Record
from ..rundir import lock_run_dir
from .api import CANCELLABLE, BatchApi, BatchInfo, open_client
from .journal import JOURNAL_NAME, Journal
from .parts import MAX_BYTES_PER_FILE, MAX_REQUESTS_PER_FILE
from .rows import batch_row
from .runner import BatchRunner, Checkpoint, StageCallback

__all__ = ["acancel", "astatus", "cancel", "outstanding_parts", "run_batches", "status"]

#: Attempts per Files/Batches API call (transient errors); the engine's backoff between them.
API_ATTEMPTS = 6


def _api(
    teacher: Teacher,
    env: Mapping[str, str] | None,
    client: openai.AsyncOpenAI | None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
) -> BatchApi:
    endpoint = resolve_endpoint(teacher, env)
    sdk = client if client is not None else open_client(endpoint, timeout_s=teacher.timeout_s)
    policy = retry_policy(max(API_ATTEMPTS, 2), sleep=sleep)
    return BatchApi(sdk, endpoint, policy)


async def run_batches(
    records: Iterable[Record],
    config: RunConfig,
    run_dir: RunDir | Path | str,
    *,
    on_stage: StageCallback | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_batches: Callable[[list[dict[str, Any]]], None] | None = None,
    stop: asyncio.Event | None = None,
    env: Mapping[str, str] | None = None,
    client: openai.AsyncOpenAI | None = None,
    poll_interval_s: float | None = None,
    max_requests_per_file: int = MAX_REQUESTS_PER_FILE,
    max_bytes_per_file: int = MAX_BYTES_PER_FILE,
    finish_online: bool | None = None,
    total: int | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    checkpoint: Checkpoint | None = None,
) -> RunResult:
    """Answer ``records`` through the OpenAI Batch API into ``run_dir``, within the config's budget.

    Rerunning on the same run directory resumes: batches in flight are polled again (never re-created),
    records already answered (online or in batch) are skipped. Returns when every record is answered,
    failed or rejected (``stop_reason="completed"``), when the budget or a cap leaves nothing that fits
    (``"budget"``, ``"max_requests"``, ``"max_total_tokens"``), or when ``stop`` is set or a batch is cancelled
    (``"interrupted"``: batches in flight keep running; rerun to collect them).

    ``poll_interval_s``: default ``config.batch_poll_interval_s`` (30 s). ``max_requests_per_file`` /
    ``max_bytes_per_file``: the Batch API's limits (50,000 / 200 MB), lower for tests. ``finish_online``
    (default ``config.batch_finish_online``, False): after the batches, answer online the records that ran out
    of batch attempts with a retryable error (expired, 429/5xx). ``env`` / ``client``: where the key and base
    URL come from, or a ready ``AsyncOpenAI``. ``on_stage`` gets one-line messages, ``on_batches`` the status
    rows after every poll, ``on_progress`` a :class:`Progress`. ``sleep`` and ``checkpoint`` are test seams.
    Raises AuthError / QuotaError / BatchError / RunDirError after a clean shutdown (stats.json written).
    """
    settings = EngineSettings.of(config)
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir.open(Path(run_dir), None, settings.public_dict())
    interval = poll_interval_s if poll_interval_s is not None else settings.limits.batch_poll_interval_s
    online = finish_online if finish_online is not None else settings.limits.batch_finish_online
    api = _api(settings.teacher, env, client, sleep)
    try:
        with lock_run_dir(rd.path, "tracegen run --mode batch"):
            runner = BatchRunner(
                records,
                settings,
                rd,
                api,
                on_stage=on_stage,
                on_progress=on_progress,
                on_batches=on_batches,
                stop=stop,
                sleep=sleep,
                poll_interval_s=interval,
                max_requests_per_file=max_requests_per_file,
                max_bytes_per_file=max_bytes_per_file,
                checkpoint=checkpoint,
                total=total,
            )
            result = await runner.run()
            if not (online and result.stop_reason == "completed" and runner.leftover):
                return result
            if on_stage is not None:
                on_stage(
                    f"finishing {len(runner.leftover):,} requests online that the batches could not answer"
                )
            chat = teacher_client(settings, env)
            rest = await generate(
                runner.leftover, config, rd, client=chat, on_progress=on_progress, stop=stop, sleep=sleep
            )
            with contextlib.suppress(Exception):
                await chat.aclose()
            return _combined(result, rest, len(runner.leftover), rd)
    finally:
        if client is None:
            with contextlib.suppress(Exception):
                await api.client.close()


def _combined(batch: RunResult, online: RunResult, handed_over: int, rd: RunDir) -> RunResult:
    """One result (and stats.json) for a batch session finished online."""
    stats = dict(batch.stats)
    stats["online"] = online.stats
    stats["stop_reason"] = online.stop_reason
    stats["succeeded"] = batch.succeeded + online.succeeded
    stats["rejected"] = batch.rejected + online.rejected
    stats["failed"] = batch.failed - handed_over + online.failed
    stats["cost_usd"] = round(batch.cost_usd + online.cost_usd, 9)
    stats["total_spent_usd"] = round(online.total_spent_usd, 9)
    stats["traces_total"] = online.stats.get("traces_total", stats.get("traces_total"))
    rd.write_stats(stats)
    return RunResult(
        stop_reason=online.stop_reason,
        run_dir=batch.run_dir,
        planned=batch.planned,
        sent=batch.sent + online.sent,
        succeeded=stats["succeeded"],
        failed=stats["failed"],
        rejected=stats["rejected"],
        skipped_done=batch.skipped_done,
        cost_usd=batch.cost_usd + online.cost_usd,
        total_spent_usd=online.total_spent_usd,
        stats=stats,
    )


# ---- status / cancel ------------------------------------------------------------------------------------
def _open_journal(run_dir: Path) -> Journal:
    if not (run_dir / JOURNAL_NAME).exists():
        raise RunDirError(
            f"{run_dir}: no {JOURNAL_NAME}: not a --mode batch run directory, or no batch was submitted yet"
        )
    return Journal(run_dir, readonly=True)


async def _rows(
    run_dir: Path,
    act: Callable[[BatchApi, BatchInfo], Awaitable[BatchInfo]] | None,
    env: Mapping[str, str] | None,
    config: RunConfig | None,
    client: openai.AsyncOpenAI | None,
) -> list[dict[str, Any]]:
    journal = _open_journal(run_dir)
    live = [p for p in journal.parts.values() if p.outstanding and p.batch_id is not None]
    infos: dict[int, BatchInfo] = {}
    if live:
        api = _api(EngineSettings.of(config or config_of_run(run_dir)).teacher, env, client)
        try:
            for p in live:
                assert p.batch_id is not None
                info = await api.retrieve(p.batch_id)
                if act is not None:
                    info = await act(api, info)
                infos[p.part] = info
        finally:
            if client is None:
                with contextlib.suppress(Exception):
                    await api.client.close()
    return [batch_row(journal.parts[n], infos.get(n)) for n in sorted(journal.parts)]


async def astatus(
    run_dir: Path | str,
    *,
    env: Mapping[str, str] | None = None,
    config: RunConfig | None = None,
    client: openai.AsyncOpenAI | None = None,
) -> list[dict[str, Any]]:
    """Every batch part of ``run_dir``: batch id, status, request counts (live for batches not collected)."""
    return await _rows(Path(run_dir), None, env, config, client)


async def acancel(
    run_dir: Path | str,
    *,
    env: Mapping[str, str] | None = None,
    config: RunConfig | None = None,
    client: openai.AsyncOpenAI | None = None,
) -> list[dict[str, Any]]:
    """Cancel every batch of ``run_dir`` still in flight; returns the rows as :func:`astatus` does.

    What was answered before the cancel is collected by the next ``tracegen run`` on the directory.
    """

    async def stop_it(api: BatchApi, info: BatchInfo) -> BatchInfo:
        return await api.cancel(info.id) if info.status in CANCELLABLE else info

    return await _rows(Path(run_dir), stop_it, env, config, client)


def outstanding_parts(run_dir: Path | str) -> int:
    """Batch parts of ``run_dir`` not yet collected (0 for a directory never run in batch mode).

    While this is not 0, an online run of the same directory would send requests that a batch may still
    answer (paid twice): finish the batch run first (rerun ``--mode batch``) or cancel it.
    """
    path = Path(run_dir)
    if not (path / JOURNAL_NAME).exists():
        return 0
    return sum(1 for p in Journal(path, readonly=True).parts.values() if p.outstanding)


def status(run_dir: Path | str, *, env: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Synchronous :func:`astatus` (``tracegen batch status RUN_DIR``)."""
    return asyncio.run(astatus(run_dir, env=env))


def cancel(run_dir: Path | str, *, env: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Synchronous :func:`acancel` (``tracegen batch cancel RUN_DIR``)."""
    return asyncio.run(acancel(run_dir, env=env))
