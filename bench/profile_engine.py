"""Profile the generation step's client CPU (cProfile) against the fake server in a child process.

    .venv/bin/python bench/profile_engine.py [--n 20000] [--concurrency 256] [--latency-s 0] [--top 40]
    .venv/bin/py-spy record -o engine.svg -- .venv/bin/python bench/profile_engine.py --no-cprofile
    .venv/bin/python bench/profile_engine.py --no-cprofile [--default-gc]   # GC collections and their CPU

Runs ``generate`` over a cached plan exactly as bench_client.py's "engine (aiohttp)" row does and prints the
functions with the most own time and the most cumulative time, plus CPU ms per request. With
``--no-cprofile`` it only runs the workload (for py-spy, whose sampling does not slow the code down).
Always reported: garbage collections during the run and their CPU time; ``--default-gc`` runs the engine
without its raised generation-0 threshold (``tracegen.engine._gc``), to see what it saves.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import pstats
import sys
import tempfile
import time
from pathlib import Path

from _common import plan_config, planned_dir, raise_fd_limit

import tracegen.engine.runner as runner
from tracegen.engine import generate
from tracegen.planning.plan import iter_plan
from tracegen.testing import FakeOptions, FakeServer


async def workload(plan_dir: Path, run_dir: Path, base_url: str, n: int, concurrency: int) -> int:
    cfg = plan_config(
        run_dir, base_url=base_url, concurrency=concurrency, budget_usd=10_000.0, timeout_s=60.0
    )
    result = await generate(iter_plan(plan_dir), cfg, run_dir, total=n)
    return result.succeeded


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--latency-s", type=float, default=0.0)
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--no-cprofile", action="store_true", help="run the workload only (for py-spy)")
    ap.add_argument("--default-gc", action="store_true", help="without the engine's GC threshold change")
    args = ap.parse_args(argv)
    if args.default_gc:
        runner.fewer_gc_passes = contextlib.nullcontext  # type: ignore[assignment]
    collections = [0, 0.0, 0.0]  # count, CPU seconds, start

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections[2] = time.thread_time()
        else:
            collections[0] += 1
            collections[1] += time.thread_time() - collections[2]

    gc.callbacks.append(on_gc)
    raise_fd_limit()
    plan_dir = planned_dir(args.n)
    opts = FakeOptions(latency_mean_s=args.latency_s, latency_jitter_s=args.latency_s * 0.3)
    with FakeServer(opts, subprocess=True) as srv, tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        prof = None if args.no_cprofile else cProfile.Profile()
        t0, c0 = time.perf_counter(), time.process_time()
        if prof is not None:
            prof.enable()
        ok = asyncio.run(workload(plan_dir, run_dir, srv.base_url, args.n, args.concurrency))
        if prof is not None:
            prof.disable()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(
        f"{ok:,} answered in {wall:.2f} s, {ok / wall:,.0f} req/s, {cpu / args.n * 1000:.3f} ms CPU/request"
    )
    print(
        f"garbage collections: {collections[0]:,.0f}, {collections[1]:.2f} s CPU ({collections[1] / cpu:.0%})"
    )
    if prof is not None:
        stats = pstats.Stats(prof)
        stats.sort_stats("tottime").print_stats(args.top)
        stats.sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main(sys.argv[1:])
