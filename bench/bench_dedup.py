"""Benchmark tracegen.dedup on synthetic records with planted exact and near duplicates.

    .venv/bin/python bench/bench_dedup.py --n 1000000            # all modes, each in a fresh process
    .venv/bin/python bench/bench_dedup.py --n 200000 --modes exact

Records: questions of 30-80 words and responses of 80-200 words drawn from a 30,000-word vocabulary with a
Zipf-like (1/rank) distribution. Planted (from the previous 20,000 records): 2% exact pair repeats, 3% same
question with another system message, 4% exact response repeats, 5% near-duplicate responses (1-3 words of
~140 changed, Jaccard ~0.9-0.97). Each mode runs in its own subprocess so peak RSS (ru_maxrss) is its own;
"baseline" is the RSS after imports and warm-up, before the first record. Records/s counts dedup time only
(the time spent generating records is measured and subtracted). Prints a table, writes
bench/results/dedup-<n>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil

from tracegen.cleaning.dedup import DedupConfig, Deduper
from tracegen.records import Record

MODES = {
    "exact": {"near_response": False},
    "exact+near_response": {},
    "all (near_question too)": {"near_question": True},
}
PLANT = {"exact_pair": 0.02, "exact_question": 0.03, "exact_response": 0.04, "near_response": 0.05}


def shingles(text: str, k: int = 5) -> set[str]:
    words = text.split()
    return {" ".join(words[i : i + k]) for i in range(max(len(words) - k + 1, 1))}


def synthetic(
    n: int, seed: int, stats: dict[str, float], near: dict[str, tuple[float, str]] | None = None
) -> Iterator[Record]:
    """Stream n records; stats["gen_s"] accumulates the time spent here, stats[kind] counts plants;
    near[id] = (true Jaccard of 5-word shingles with its source, source id) per planted near-duplicate."""
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(30_000)], dtype=object)
    p = 1.0 / (np.arange(vocab.size) + 10.0)
    p /= p.sum()
    recent: deque[tuple[str, str, str, str]] = deque(maxlen=20_000)
    systems = ["You are an AI assistant.", "You are a helpful assistant, who always provide explanation."]
    chunk = 4096
    i = 0
    while i < n:
        t0 = time.perf_counter()
        m = min(chunk, n - i)
        q_len = rng.integers(30, 81, m)
        r_len = rng.integers(80, 201, m)
        q_words = rng.choice(vocab, size=int(q_len.sum()), p=p)
        r_words = rng.choice(vocab, size=int(r_len.sum()), p=p)
        kinds = rng.random(m)
        q_off = np.concatenate([[0], np.cumsum(q_len)])
        r_off = np.concatenate([[0], np.cumsum(r_len)])
        out = []
        for j in range(m):
            system = systems[j % 2]
            question = " ".join(q_words[q_off[j] : q_off[j + 1]])
            response = " ".join(r_words[r_off[j] : r_off[j + 1]])
            u = kinds[j]
            if recent:
                src = recent[int(rng.integers(len(recent)))]
                edge = 0.0
                for kind, share in PLANT.items():
                    if edge <= u < edge + share:
                        stats[kind] = stats.get(kind, 0) + 1
                        if kind == "exact_pair":
                            system, question = src[0], src[1]
                        elif kind == "exact_question":
                            system, question = (systems[1] if src[0] == systems[0] else systems[0]), src[1]
                        elif kind == "exact_response":
                            response = src[2]
                        else:
                            words = src[2].split()
                            for _ in range(int(rng.integers(1, 4))):
                                words[int(rng.integers(len(words)))] = str(rng.choice(vocab))
                            response = " ".join(words)
                            if near is not None:
                                a, b = shingles(src[2]), shingles(response)
                                near[f"flan.{i + j}"] = (len(a & b) / len(a | b), src[3])
                        break
                    edge += share
            recent.append((system, question, response, f"flan.{i + j}"))
            out.append(
                Record(
                    id=f"flan.{i + j}",
                    submix="flan",
                    question=question,
                    system_prompt=system,
                    response=response,
                )
            )
        i += m
        stats["gen_s"] = stats.get("gen_s", 0.0) + time.perf_counter() - t0
        yield from out


def run_mode(n: int, mode: str, seed: int) -> dict[str, object]:
    """One mode in this process: returns throughput, memory and counts."""
    config = DedupConfig(**MODES[mode])  # type: ignore[arg-type]
    warm = Deduper(config)
    list(warm.run(synthetic(2000, seed + 1, {})))
    deduper = Deduper(config)
    proc = psutil.Process()
    baseline_mb = proc.memory_info().rss / 2**20
    stats: dict[str, float] = {}
    near: dict[str, tuple[float, str]] = {}
    dropped: dict[str, str] = {}

    def on_reject(record: Record, stage: str, kind: str, detail: str) -> None:
        dropped[record.id] = kind

    t0 = time.perf_counter()
    kept = 0
    for _ in deduper.run(synthetic(n, seed, stats, near), on_reject):
        kept += 1
    total_s = time.perf_counter() - t0
    dedup_s = total_s - stats.pop("gen_s", 0.0)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # Recall of planted near-duplicate responses by their true Jaccard similarity, counting only plants whose
    # source record was kept (a copy of a dropped record has nothing kept to be a duplicate of).
    buckets = [(0.0, 0.7), (0.7, 0.8), (0.8, 0.85), (0.85, 0.9), (0.9, 0.95), (0.95, 1.01)]
    recall = {}
    for lo, hi in buckets:
        ids = [i for i, (jac, src) in near.items() if lo <= jac < hi and src not in dropped]
        if ids:
            found = sum(1 for i in ids if i in dropped)
            recall[f"{lo:.2f}-{min(hi, 1.0):.2f}"] = {
                "planted": len(ids),
                "found": round(found / len(ids), 3),
            }
    return {
        "mode": mode,
        "records": n,
        "kept": kept,
        "dedup_seconds": round(dedup_s, 2),
        "records_per_s": round(n / dedup_s),
        "baseline_rss_mb": round(baseline_mb, 1),
        "peak_rss_mb": round(peak_mb, 1),
        "state_keys_mb": round(deduper.state.nbytes() / 2**20, 1),
        "dropped": dict(deduper.counts),
        "planted": {k: int(v) for k, v in stats.items()},
        "near_response_recall_by_jaccard": recall,
        "lsh": {"response": deduper.response_lsh, "question": deduper.question_lsh},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modes", nargs="*", default=list(MODES), choices=list(MODES))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_mode(args.n, args.child, args.seed)))
        return
    results = []
    for mode in args.modes:
        cmd = [sys.executable, __file__, "--n", str(args.n), "--seed", str(args.seed), "--child", mode]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    header = f"{'mode':<26}{'records/s':>11}{'seconds':>9}{'base MB':>9}{'peak MB':>9}{'keys MB':>9}  dropped"
    print(f"tracegen dedup benchmark, {args.n:,} records")
    print(header)
    for r in results:
        dropped = ", ".join(f"{k}={v}" for k, v in sorted(r["dropped"].items()))  # type: ignore[union-attr]
        print(
            f"{r['mode']:<26}{r['records_per_s']:>11,}{r['dedup_seconds']:>9}{r['baseline_rss_mb']:>9}"
            f"{r['peak_rss_mb']:>9}{r['state_keys_mb']:>9}  {dropped}"
        )
    print("planted:", results[0]["planted"])
    for r in results:
        if r["near_response_recall_by_jaccard"] and r["mode"] != "exact":
            cells = ", ".join(
                f"J {b}: {v['found']:.0%} of {v['planted']}"  # type: ignore[index]
                for b, v in r["near_response_recall_by_jaccard"].items()  # type: ignore[union-attr]
            )
            print(f"near-duplicate recall ({r['mode']}): {cells}")
    out = Path(__file__).parent / "results" / f"dedup-{args.n}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": psutil.cpu_count(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
