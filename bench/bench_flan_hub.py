"""Benchmark: planning over a copy of the real collection's layout — Parquet shards, locally and over the Hub.

    python3 bench/bench_flan_hub.py [--quick] [--rows 1000000 3000000]

For each size an Open-Orca/FLAN-shaped copy is generated (bench/synth_flan.py ``write_parquet_layout``: the
14 folders of ``part.N.parquet`` files, seqio columns; cached in $TRACEGEN_BENCH_CACHE) and planned in a
fresh child process, ``rows / 5`` requests (Orca's ratio), twice:

* **local**: ``--source <the directory>`` (every folder read; few-shot and Dialog rows counted and dropped);
* **hub**: ``--source open-orca-flan`` through ``datasets`` streaming from the in-package fake Hub
  (HF_ENDPOINT), which serves the same files from memory and counts the bytes it sends.

Figures: plan time, rows/s, peak RSS (the child's VmHWM), bytes read per row (local: the child's
``/proc/self/io`` rchar during planning; hub: bytes the Hub served for .parquet files), and how many times
the data was read (bytes read / bytes of the files planned from: ~1 for one pass, ~2 for the old two-pass
planner), plus ``source_passes`` and ``task_sizes_read`` from plan_stats.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import CACHE_DIR, REPO, Check, Report, child_rusage_run, loadavg, plan_config, print_report, save
from synth_flan import cached_layout

NAME = "flan_hub"
HERE = Path(__file__).resolve()


def _vm_hwm_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _rchar() -> int:
    try:
        with open("/proc/self/io") as f:
            for line in f:
                if line.startswith("rchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _child_plan(source: str, n: int, out: Path, result: Path) -> None:
    """In the child: plan (the dry run's planning step), with time, peak RSS and bytes read."""
    from tracegen.pipeline import prepare
    from tracegen.planning.tokens import encoding_for_model, get_encoding

    if source != "open-orca-flan":  # local: what importing and loading tables reads is not the source's
        import datasets  # noqa: F401
        import pyarrow.parquet  # noqa: F401

    cfg = plan_config(out, source=source, n=n, budget_usd=100.0, mix="uniform")
    get_encoding(encoding_for_model(cfg.model))
    r0, t0 = _rchar(), time.perf_counter()
    rd = prepare(cfg)
    plan_s, read = time.perf_counter() - t0, _rchar() - r0
    stats = json.loads((rd.path / "plan_stats.json").read_text())
    result.write_text(
        json.dumps(
            {
                "plan_s": plan_s,
                "rchar": read,
                "peak_rss_mb": _vm_hwm_mb(),
                "rows_read": stats["rows_read"],
                "planned": stats["planned_total"],
                "source_passes": stats["source_passes"],
                "task_sizes_read": stats["task_sizes_read"],
                "candidates": stats["candidates"],
            }
        )
    )


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


def _one(kind: str, rows: int, root: Path, work: Path) -> dict[str, Any]:
    from tracegen.testing.fake_hub import FakeHub

    res, out = work / f"{kind}-{rows}.json", work / f"run-{kind}-{rows}"
    n = max(rows // 5, 1)
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    log_path = work / f"{kind}-{rows}.log"
    files = _files(root)
    read_from = sum(len(b) for b in files.values())
    with open(log_path, "w") as log:
        if kind == "local":
            argv = [sys.executable, str(HERE), "--child-plan", str(root), str(n), str(out), str(res)]
            code, wall, _cpu, _ = child_rusage_run(argv, stdout=log, stderr=log, env=env)
            served = None
        else:
            with FakeHub() as hub:
                hub.add_dataset("Open-Orca/FLAN", files)
                env.update(
                    HF_ENDPOINT=hub.endpoint,
                    HF_HUB_OFFLINE="0",
                    HF_HOME=str(work / "hf"),
                    HF_DATASETS_CACHE=str(work / "hf" / "datasets"),
                )
                argv = [
                    sys.executable,
                    str(HERE),
                    "--child-plan",
                    "open-orca-flan",
                    str(n),
                    str(out),
                    str(res),
                ]
                code, wall, _cpu, _ = child_rusage_run(argv, stdout=log, stderr=log, env=env)
                served = hub.bytes_served(".parquet")
            read_from = sum(len(b) for p, b in files.items() if "_zs" in p and not p.startswith("dialog"))
    if code != 0:
        raise RuntimeError(f"planning child failed ({code}): {log_path.read_text()[-2000:]}")
    child = json.loads(res.read_text())
    read = served if served is not None else child["rchar"]
    return {
        "row": kind,
        "rows_in_layout": rows,
        "rows_read": child["rows_read"],
        "planned": child["planned"],
        "plan_s": round(child["plan_s"], 2),
        "rows_per_s": round(child["rows_read"] / child["plan_s"]),
        "peak_rss_mb": round(child["peak_rss_mb"], 1),
        "bytes_read_per_row": round(read / max(child["rows_read"], 1), 1),
        "data_read_x": round(read / max(read_from, 1), 2),
        "source_passes": child["source_passes"],
        "task_sizes_read": child["task_sizes_read"],
        "candidates": child["candidates"],
        "wall_s": round(wall, 1),
    }


def run(
    *,
    sizes: list[int] | None = None,
    quick: bool = False,
    out_dir: Path | None = None,
    cache_dir: Path | None = None,
    kinds: tuple[str, ...] = ("local", "hub"),
) -> Report:
    """Measure and return the report (also written as JSON); see the module docstring."""
    load_before = loadavg()
    sizes = sizes or [1_000_000, 3_000_000]
    cache = cache_dir or CACHE_DIR
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tracegen-bench-flan-hub-") as tmp:
        for size in sizes:
            root = cached_layout(size, cache)
            rows.extend(_one(kind, size, root, Path(tmp)) for kind in kinds)
    checks = (
        [
            Check(
                NAME,
                f"{r['row']}: full reads of the source at {r['rows_in_layout']:,} rows",
                r["source_passes"],
                1,
                "lower",
            )
            for r in rows
        ]
        + [
            Check(
                NAME,
                f"{r['row']}: data read / data size at {r['rows_in_layout']:,} rows",
                r["data_read_x"],
                None,
                "lower",
                "x",
            )
            for r in rows
        ]
        + [
            Check(
                NAME,
                f"{r['row']}: peak RSS at {r['rows_in_layout']:,} rows",
                r["peak_rss_mb"],
                1024.0,
                "lower",
                "MiB",
            )
            for r in rows
        ]
    )
    report = Report(NAME, rows, checks)
    save(
        report,
        {"params": {"sizes": sizes, "kinds": list(kinds), "planned_per_row": 0.2}},
        out_dir,
        load_before,
        quick,
    )
    return report


def main(argv: list[str]) -> Report | None:
    if argv and argv[0] == "--child-plan":
        _child_plan(argv[1], int(argv[2]), Path(argv[3]), Path(argv[4]))
        return None
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes: 50K and 200K rows")
    ap.add_argument("--rows", type=int, nargs="*", default=None, help="layout sizes (default 1M 3M)")
    ap.add_argument("--only", choices=("local", "hub"), default=None)
    ap.add_argument("--out-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    sizes = args.rows or ([50_000, 200_000] if args.quick else [1_000_000, 3_000_000])
    kinds = (args.only,) if args.only else ("local", "hub")
    report = run(sizes=sizes, quick=args.quick, out_dir=args.out_dir, kinds=kinds)
    print_report(report, "flan_hub: planning over an Open-Orca/FLAN-shaped Parquet layout, rows/5 planned")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
