"""Run every benchmark in sequence and print one summary table (figure, target, ratio, PASS/MISS).

    .venv/bin/python bench/run_all.py [--quick] [--only client latency ...] [--skip scale ...] [--summarize]

Each benchmark runs in its own process (``bench/bench_<name>.py``, with ``--quick`` when given) and writes
its JSON to bench/results/; this script reads the checks back, adds the dedup figures from
bench/bench_dedup.py's JSON, and writes bench/results/summary[-quick].json. The load average before each
benchmark is recorded (2 shared cores: rerun a noisy benchmark on its own when the load is lower).

Full run: ~25 minutes (client ~2, latency ~3, rate-limited ~6, budget ~1, scale ~10 the first time the 5M-row
source is generated, dedup ~4, resume ~1, command ~4: the whole `tracegen run` against a bare loop process,
chaos ~10).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import BENCH_DIR, RESULTS_DIR, Check, checks_table, loadavg, meta

ORDER = ["client", "latency", "ratelimit", "budget", "scale", "dedup", "resume", "command", "chaos"]
DEDUP_N = {"full": 1_000_000, "quick": 20_000}


def dedup_checks(doc: dict[str, Any]) -> list[Check]:
    """Checks from bench_dedup.py's JSON (no target in the issue: throughput reported, memory < 1 GB)."""
    out: list[Check] = []
    for r in doc.get("results", []):
        out.append(Check("dedup", f"records/s ({r['mode']})", float(r["records_per_s"]), None, "higher"))
        out.append(Check("dedup", f"peak RSS ({r['mode']})", float(r["peak_rss_mb"]), 1024.0, "lower", "MiB"))
    return out


def run_one(name: str, quick: bool, out_dir: Path, run: bool = True) -> tuple[list[Check], dict[str, Any]]:
    py = sys.executable
    started = time.perf_counter()
    load = loadavg()
    if name == "dedup":
        n = DEDUP_N["quick" if quick else "full"]
        argv = [py, str(BENCH_DIR / "bench_dedup.py"), "--n", str(n)]
        if quick:
            argv += ["--modes", "exact", "exact+near_response"]
    else:
        argv = [py, str(BENCH_DIR / f"bench_{name}.py"), "--out-dir", str(out_dir)]
        if quick:
            argv.append("--quick")
    if run:
        print(f"\n=== {name}: {' '.join(argv[1:])}  (load {load})", flush=True)
        code = subprocess.run(argv, check=False).returncode
    else:
        code = 0
    info: dict[str, Any] = {
        "exit_code": code,
        "seconds": round(time.perf_counter() - started, 1),
        "loadavg_before": load,
    }
    if code != 0:
        return [Check(name, "benchmark ran", 0.0, 1.0, "higher", note=f"exit code {code}")], info
    if name == "dedup":
        path = RESULTS_DIR / f"dedup-{DEDUP_N['quick' if quick else 'full']}.json"
        doc = json.loads(path.read_text())
        info["json"] = str(path)
        return dedup_checks(doc), info
    path = out_dir / f"{name}{'-quick' if quick else ''}.json"
    doc = json.loads(path.read_text())
    info["json"] = str(path)
    checks = [
        Check(c["benchmark"], c["name"], c["value"], c["target"], c["better"], c["unit"], c.get("note", ""))
        for c in doc["checks"]
    ]
    return checks, info


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="every benchmark in its quick (smoke) mode")
    ap.add_argument("--only", nargs="*", choices=ORDER, default=None)
    ap.add_argument("--skip", nargs="*", choices=ORDER, default=[])
    ap.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    ap.add_argument(
        "--summarize", action="store_true", help="run nothing: summarize the JSON already in --out-dir"
    )
    args = ap.parse_args(argv)
    names = [n for n in (args.only or ORDER) if n not in args.skip]
    all_checks: list[Check] = []
    runs: dict[str, Any] = {}
    for name in names:
        checks, info = run_one(name, args.quick, args.out_dir, run=not args.summarize)
        all_checks += checks
        runs[name] = info
    print("\n## summary" + (" (quick: small sizes, figures not representative)" if args.quick else ""))
    print(checks_table(all_checks))
    missed = [c for c in all_checks if not c.passed]
    info = sum(1 for c in all_checks if c.target is None)
    print(f"\n{len(all_checks) - len(missed) - info} PASS, {len(missed)} MISS, {info} INFO")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"summary{'-quick' if args.quick else ''}.json"
    out.write_text(
        json.dumps(
            {"meta": meta(), "quick": args.quick, "runs": runs, "checks": [c.to_dict() for c in all_checks]},
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
