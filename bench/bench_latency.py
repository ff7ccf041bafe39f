"""Benchmark 2, latency-bound: thousands of requests held open, against the ideal and a bare aiohttp loop.

    .venv/bin/python bench/bench_latency.py [--quick] [--n 20000] [--concurrency 1024 4096] [--repeat 2]

The fake server (child process) answers after 1 s +/- 0.3 s (uniform), no limits. For each concurrency c the
same ``--n`` requests of a cached plan go through

* the bare aiohttp loop (the reference: c workers on one session), and
* ``tracegen.engine.generate`` (default transport; budget set, durable writes, limiter window c).

Figures: wall time against the ideal ``n x mean latency / c`` (efficiency = ideal / wall) and against the
bare loop (bare wall / engine wall, target >= 0.9), and spurious timeouts: the client timeout is 10 s while
the server never takes more than 1.3 s, so every timeout is spurious (target 0). Repetitions alternate bare
and engine; the best of each counts. A full run takes >= 20 s per row (20,000 x 1 s / 1,024).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

import _common
from _common import (
    Check,
    Report,
    bare_loop,
    loadavg,
    plan_bodies,
    plan_config,
    planned_dir,
    print_report,
    raise_fd_limit,
    save,
    timed,
)

from tracegen.engine import generate
from tracegen.planning.plan import iter_plan
from tracegen.testing import FakeOptions

NAME = "latency"
TIMEOUT_S = 10.0


async def _engine(plan_dir: Path, work: Path, base_url: str, n: int, concurrency: int) -> dict[str, Any]:
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=work))
    cfg = plan_config(
        run_dir, base_url=base_url, concurrency=concurrency, budget_usd=10_000.0, timeout_s=TIMEOUT_S
    )
    with timed() as t:
        result = await generate(iter_plan(plan_dir), cfg, run_dir, total=n)
    return {
        "ok": result.succeeded,
        "timeouts": int(result.stats["n_timeouts"]),
        "failed": result.failed,
        "wall_s": t.wall_s,
        "cpu_s": t.cpu_s,
    }


async def _measure(
    plan_dir: Path,
    work: Path,
    n: int,
    concurrencies: list[int],
    repeat: int,
    latency_s: float,
    jitter_s: float,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    opts = FakeOptions(latency_mean_s=latency_s, latency_jitter_s=jitter_s)
    with _common.fake_server(opts) as srv:
        bodies = plan_bodies(plan_dir, plan_config(work / "unused", base_url=srv.base_url))[:n]
        for c in concurrencies:
            ideal_s = n * latency_s / c
            for rep in range(repeat):
                srv.reset()
                ref = await bare_loop(srv.base_url, bodies, c, TIMEOUT_S)
                srv.reset()
                eng = await _engine(plan_dir, work, srv.base_url, n, c)
                counters = srv.counters()
                for name, ok, timeouts, failed, wall, cpu in (
                    (
                        "bare aiohttp loop",
                        ref.ok,
                        ref.timeouts,
                        ref.errors + ref.timeouts,
                        ref.wall_s,
                        ref.cpu_s,
                    ),
                    (
                        "engine (aiohttp)",
                        eng["ok"],
                        eng["timeouts"],
                        eng["failed"],
                        eng["wall_s"],
                        eng["cpu_s"],
                    ),
                ):
                    rows.append(
                        {
                            "row": name,
                            "in_flight": c,
                            "rep": rep + 1,
                            "n": n,
                            "ideal_s": round(ideal_s, 2),
                            "wall_s": round(wall, 2),
                            "vs_ideal": round(ideal_s / wall, 3),
                            "vs_bare": round(ref.wall_s / wall, 3),
                            "req_per_s": round(ok / wall, 1),
                            "cpu_ms_per_req": round(cpu / n * 1000, 4),
                            "ok": ok,
                            "timeouts": timeouts,
                            "failed": failed,
                        }
                    )
                rows[-1]["server_in_flight_max"] = counters.get("in_flight_max")
    return rows


def run(
    *,
    n: int = 20_000,
    concurrencies: list[int] | None = None,
    repeat: int = 2,
    latency_s: float = 1.0,
    jitter_s: float = 0.3,
    quick: bool = False,
    out_dir: Path | None = None,
    cache_dir: Path | None = None,
) -> Report:
    """Measure and return the report (also written as JSON); see the module docstring."""
    load_before = loadavg()
    fd_limit = raise_fd_limit()
    concurrencies = concurrencies or [1024, 4096]
    plan_dir = planned_dir(n, cache_dir)
    with tempfile.TemporaryDirectory(prefix="tracegen-bench-latency-") as tmp:
        rows = asyncio.run(_measure(plan_dir, Path(tmp), n, concurrencies, repeat, latency_s, jitter_s))
    best: dict[tuple[str, int], dict[str, Any]] = {}
    for r in rows:
        key = (r["row"], r["in_flight"])
        if key not in best or r["wall_s"] < best[key]["wall_s"]:
            best[key] = r
    # vs_bare of the best engine run against the best bare run of the same concurrency
    for c in concurrencies:
        ref_wall = best[("bare aiohttp loop", c)]["wall_s"]
        for name in ("bare aiohttp loop", "engine (aiohttp)"):
            best[(name, c)] = {**best[(name, c)], "vs_bare": round(ref_wall / best[(name, c)]["wall_s"], 3)}
    best_rows = list(best.values())
    checks: list[Check] = []
    for c in concurrencies:
        eng = best[("engine (aiohttp)", c)]
        eng_timeouts = sum(
            r["timeouts"] for r in rows if r["row"] == "engine (aiohttp)" and r["in_flight"] == c
        )
        checks.append(Check(NAME, f"engine wall vs bare loop @{c}", eng["vs_bare"], 0.9, "higher"))
        checks.append(Check(NAME, f"engine wall vs ideal @{c}", eng["vs_ideal"], None, "higher"))
        checks.append(Check(NAME, f"spurious timeouts @{c} (all reps)", float(eng_timeouts), 0, "lower"))
        checks.append(Check(NAME, f"requests not answered @{c}", float(n - eng["ok"]), 0, "lower"))
    report = Report(NAME, best_rows, checks)
    save(
        report,
        {
            "params": {
                "n": n,
                "concurrencies": concurrencies,
                "repeat": repeat,
                "latency_mean_s": latency_s,
                "latency_jitter_s": jitter_s,
                "timeout_s": TIMEOUT_S,
                "fd_limit": fd_limit,
            },
            "all_repetitions": rows,
        },
        out_dir,
        load_before,
        quick,
    )
    return report


def main(argv: list[str]) -> Report:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    ap.add_argument("--n", type=int, default=None, help="requests per row (default 20,000; quick 3,000)")
    ap.add_argument(
        "--concurrency", type=int, nargs="*", default=None, help="default 1024 4096 (quick 512 1024)"
    )
    ap.add_argument("--repeat", type=int, default=None, help="repetitions (default 2; quick 1)")
    ap.add_argument("--latency-s", type=float, default=1.0, help="mean server latency, seconds")
    ap.add_argument("--jitter-s", type=float, default=0.3, help="uniform latency half-width, seconds")
    ap.add_argument("--out-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    n = args.n or (3_000 if args.quick else 20_000)
    conc = args.concurrency or ([512, 1024] if args.quick else [1024, 4096])
    report = run(
        n=n,
        concurrencies=conc,
        repeat=args.repeat or (1 if args.quick else 2),
        latency_s=args.latency_s,
        jitter_s=args.jitter_s,
        quick=args.quick,
        out_dir=args.out_dir,
    )
    print_report(report, f"latency-bound: {n:,} requests, latency {args.latency_s:g} +/- {args.jitter_s:g} s")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
