"""Benchmark --decontaminate: index build time and memory, rows/s checked, and recall on planted items.

    python bench/bench_decontaminate.py                 # 200,000 source rows, four eval sets
    python bench/bench_decontaminate.py --rows 20000    # quick

Evaluation sets of realistic size and length (items, mean words), written as JSONL/Parquet files and loaded
through the real loader: MMLU-like 14,042 x ~45 (question + 4 choices), HellaSwag-like 10,042 x ~70,
ARC-like 3,548 x ~25, GSM8K-like 1,319 x ~50. Source rows: FLAN-shaped questions of 20-200 words from a
30,000-word Zipf vocabulary; 1% of them are evaluation items planted with changed case and spacing inside a
FLAN template. Rows/s counts :meth:`Decontaminator.match` only (one call per eligible source row, which is
what planning adds per pass). Index memory: ``index_rss_mib`` is the growth of peak RSS while the index is
built (loading included), ``index_held_mib`` the resident memory it keeps afterwards. Prints a table;
writes bench/results/decontaminate-<rows>.json.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tracegen.planning.decontaminate import Decontaminator

EVALS = {  # name: (items, mean words of the item text, string columns per row besides the item)
    "mmlu_like.jsonl": (14_042, 45, 4),
    "hellaswag_like.parquet": (10_042, 70, 0),
    "arc_like.jsonl": (3_548, 25, 4),
    "gsm8k_like.jsonl": (1_319, 50, 1),
}


def _vocab(size: int) -> tuple[list[str], np.ndarray]:
    words = [f"w{i}" for i in range(size)]
    p = 1.0 / np.arange(1, size + 1)
    return words, p / p.sum()


def _text(rng: np.random.Generator, words: list[str], p: np.ndarray, n: int) -> str:
    return " ".join(words[i] for i in rng.choice(len(words), size=n, p=p))


def write_evals(root: Path, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    words, p = _vocab(30_000)
    specs, all_items = [], []
    for name, (n_items, mean_words, extra) in EVALS.items():
        items = [
            _text(rng, words, p, max(3, int(rng.normal(mean_words, mean_words / 3)))) for _ in range(n_items)
        ]
        all_items += items
        rows = [
            {"question": q, **{f"choice{j}": _text(rng, words, p, 3) for j in range(extra)}, "label": 1}
            for q in items
        ]
        path = root / name
        if name.endswith(".parquet"):
            pq.write_table(pa.Table.from_pylist(rows), path)
        else:
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        specs.append(str(path))
    return specs, all_items


def disguise(rnd: random.Random, text: str) -> str:
    return "".join(
        (w.upper() if rnd.random() < 0.3 else w.title()) + rnd.choice(["  ", "\n", " "]) for w in text.split()
    )


def _rss_now_kib() -> int:
    """Resident memory now (Linux; 0 elsewhere): what the index keeps, where ru_maxrss is the build's peak."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() // 1024
    except OSError:
        return 0


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    rnd = random.Random(0)
    with tempfile.TemporaryDirectory(prefix="tracegen-decon-") as tmp:
        specs, items = write_evals(Path(tmp), rng)
        rss0, held0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, _rss_now_kib()
        t0 = time.perf_counter()
        dec = Decontaminator.from_specs(specs)
        build_s = time.perf_counter() - t0
        rss1, held1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, _rss_now_kib()
    words, p = _vocab(30_000)
    questions: list[str] = []
    planted: set[int] = set()
    for i in range(args.rows):
        if rnd.random() < 0.01:
            item = rnd.choice([it for it in (rnd.choice(items),) if len(it.split()) >= 13] or items[:1])
            questions.append(f"Answer the question below.\n{disguise(rnd, item)}\nAnswer:")
            planted.add(i)
        else:
            questions.append(_text(rng, words, p, int(rng.integers(20, 200))))
    t0 = time.perf_counter()
    hits = [i for i, q in enumerate(questions) if dec.match(q) is not None]
    match_s = time.perf_counter() - t0
    found = planted & set(hits)
    result = {
        "source_rows": args.rows,
        "eval_sets": {k: v[0] for k, v in EVALS.items()},
        "items_indexed": len(dec.items),
        "ngrams_indexed": dec.ngrams_indexed,
        "index_build_s": round(build_s, 2),
        "index_rss_mib": round((rss1 - rss0) / 1024, 1),
        "index_held_mib": round((held1 - held0) / 1024, 1),
        "rows_per_s": round(args.rows / match_s),
        "planted": len(planted),
        "recall": round(len(found) / max(1, len(planted)), 4),
        "false_positives": len(set(hits) - planted),
    }
    for k, v in result.items():
        print(f"{k:>16}: {v}")
    out = Path(__file__).resolve().parent / "results" / f"decontaminate-{args.rows}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
