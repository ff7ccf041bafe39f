"""Benchmark 5, scale: planning and the dry-run estimate over a generated FLAN-shaped source of millions of rows.

    .venv/bin/python bench/bench_scale.py [--quick] [--rows 500000 1000000 5000000]

For each size a synthetic FLAN v2-shaped JSON-lines source is generated (bench/synth_flan.py; cached in
$TRACEGEN_BENCH_CACHE, default /tmp/tracegen-bench-cache; 5M rows take ~1.7 GB) and the dry run --
``tracegen.pipeline.estimate_run``: plan (a task-size read and one streaming pass, spill, plan.jsonl + requests.jsonl +
plan_stats.json) then the cost estimate over plan.jsonl -- runs in a fresh child process, planning
``rows / 5`` requests (the Orca ratio: 1M requests from 5M FLAN rows). The child's peak RSS is its own
high-water mark (VmHWM, read by the child: ``ru_maxrss`` would include the parent's size after fork + exec),
its CPU time comes from ``os.wait4``; the child also reports the time of each phase.

References measured in the same run: the peak RSS of a child that only imports the planner (baseline), and
the time of one plain pass over the source (read + ``json.loads`` every line) -- a JSON-lines source is
read twice (task sizes, then the pass; Parquet's sizes come from its metadata columns, see
bench_flan_hub.py), so ``plan time / read pass`` says how many plain passes planning costs. Figures: time, rows/s, peak
RSS, disk used. Targets: peak RSS < 1 GB at every size; flat as N grows (peak at the largest size at most
1.5x the peak at the smallest).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    CACHE_DIR,
    Check,
    Report,
    child_rusage_run,
    loadavg,
    plan_config,
    print_report,
    save,
)
from synth_flan import cached_source

NAME = "scale"
HERE = Path(__file__).resolve()


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM), MiB.

    Not ``ru_maxrss``: after fork + exec Linux carries the parent's high-water mark into the child's
    ``ru_maxrss`` (and ``os.wait4``'s), so a child of a big parent would report the parent's size.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource  # not Linux: the best available

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child_plan(source: Path, n: int, out: Path, result: Path) -> None:
    """In the child: the dry run, timing its two phases."""
    from tracegen.pipeline import prepare
    from tracegen.planning.estimate import estimate
    from tracegen.planning.plan import iter_plan

    cfg = plan_config(out, source=source, n=n, budget_usd=100.0)
    t0 = time.perf_counter()
    rd = prepare(cfg)
    t1 = time.perf_counter()
    rss_plan = peak_rss_mb()
    est = estimate(iter_plan(rd.path), cfg)
    t2 = time.perf_counter()
    stats = json.loads((rd.path / "plan_stats.json").read_text())
    result.write_text(
        json.dumps(
            {
                "plan_s": t1 - t0,
                "estimate_s": t2 - t1,
                "peak_rss_after_plan_mb": rss_plan,
                "peak_rss_mb": peak_rss_mb(),
                "planned": stats["planned_total"],
                "rows_read": stats["rows_read"],
                "estimate_requests": est.requests,
                "estimate_cost_usd": est.cost_usd,
            }
        )
    )


def _child_baseline(result: Path) -> None:
    import tracegen.pipeline
    import tracegen.planning.estimate
    import tracegen.planning.plan  # noqa: F401

    result.write_text(json.dumps({"peak_rss_mb": peak_rss_mb()}))


def _child_read(source: Path, result: Path) -> None:
    t0 = time.perf_counter()
    rows = 0
    loads = json.loads
    with open(source, encoding="utf-8") as f:
        for line in f:
            loads(line)
            rows += 1
    result.write_text(json.dumps({"read_s": time.perf_counter() - t0, "rows": rows}))


def _dir_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def measure(rows: int, cache: Path, work: Path) -> dict[str, Any]:
    """One size: generate (cached), baseline, read pass, the dry run in a child."""
    t0 = time.perf_counter()
    source = cached_source(rows, cache)
    gen_s = time.perf_counter() - t0
    py = sys.executable
    res = work / "result.json"
    child_rusage_run([py, str(HERE), "--child-read", str(source), str(res)])
    read = json.loads(res.read_text())
    out = work / f"run-{rows}"
    n = max(rows // 5, 1)
    log = open(work / f"plan-{rows}.log", "w")  # noqa: SIM115 - closed below
    try:
        code, wall, cpu, _ = child_rusage_run(
            [py, str(HERE), "--child-plan", str(source), str(n), str(out), str(res)], stdout=log, stderr=log
        )
    finally:
        log.close()
    if code != 0:
        raise RuntimeError(
            f"the planning child failed ({code}): {(work / f'plan-{rows}.log').read_text()[-2000:]}"
        )
    child = json.loads(res.read_text())
    run_mb = _dir_mb(out)
    shutil.rmtree(out, ignore_errors=True)
    return {
        "rows": rows,
        "planned": child["planned"],
        "source_mb": round(source.stat().st_size / 2**20, 1),
        "run_dir_mb": round(run_mb, 1),
        "plan_s": round(child["plan_s"], 1),
        "estimate_s": round(child["estimate_s"], 1),
        "total_s": round(wall, 1),
        "rows_per_s": round(rows / child["plan_s"]),
        "read_pass_s": round(read["read_s"], 1),
        "plan_vs_read_pass": round(child["plan_s"] / read["read_s"], 2),
        "peak_rss_mb": round(child["peak_rss_mb"], 1),
        "peak_rss_after_plan_mb": round(child["peak_rss_after_plan_mb"], 1),
        "cpu_s": round(cpu, 1),
        "generate_source_s": round(gen_s, 1),
        "loadavg_1m": loadavg()[0] if loadavg() else None,
    }


def run(
    *,
    sizes: list[int] | None = None,
    quick: bool = False,
    out_dir: Path | None = None,
    cache_dir: Path | None = None,
) -> Report:
    """Measure and return the report (also written as JSON); see the module docstring."""
    load_before = loadavg()
    sizes = sizes or [500_000, 1_000_000, 5_000_000]
    cache = cache_dir or CACHE_DIR
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tracegen-bench-scale-") as tmp:
        work = Path(tmp)
        child_rusage_run([sys.executable, str(HERE), "--child-baseline", str(work / "base.json")])
        base_rss = json.loads((work / "base.json").read_text())["peak_rss_mb"]
        for size in sizes:
            rows.append(measure(size, cache, work))
    for r in rows:
        r["baseline_rss_mb"] = round(base_rss, 1)
    checks = [
        Check(NAME, f"peak RSS at {r['rows']:,} rows", r["peak_rss_mb"], 1024.0, "lower", "MiB") for r in rows
    ]
    if len(rows) > 1:
        growth = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
        checks.append(
            Check(
                NAME,
                f"peak RSS growth {rows[0]['rows']:,} -> {rows[-1]['rows']:,} rows",
                round(growth, 3),
                1.5,
                "lower",
                "x",
            )
        )
    report = Report(NAME, rows, checks)
    save(
        report,
        {"params": {"sizes": sizes, "planned_per_row": 0.2}, "baseline_rss_mb": base_rss},
        out_dir,
        load_before,
        quick,
    )
    return report


def main(argv: list[str]) -> Report | None:
    if argv and argv[0] == "--child-plan":
        _child_plan(Path(argv[1]), int(argv[2]), Path(argv[3]), Path(argv[4]))
        return None
    if argv and argv[0] == "--child-read":
        _child_read(Path(argv[1]), Path(argv[2]))
        return None
    if argv and argv[0] == "--child-baseline":
        _child_baseline(Path(argv[1]))
        return None
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes: 20K and 100K rows")
    ap.add_argument("--rows", type=int, nargs="*", default=None, help="source sizes (default 500K 1M 5M)")
    ap.add_argument("--out-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    sizes = args.rows or ([20_000, 100_000] if args.quick else [500_000, 1_000_000, 5_000_000])
    report = run(sizes=sizes, quick=args.quick, out_dir=args.out_dir)
    print_report(report, "scale: dry run (plan + estimate) over a FLAN-shaped source, rows/5 planned")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
