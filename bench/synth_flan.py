"""A synthetic FLAN v2-shaped JSON-lines source for the benchmarks (planning, client, resume).

    .venv/bin/python bench/synth_flan.py OUT.jsonl --rows 5000000

Rows have the canonical columns (``inputs``, ``targets``, ``task_source``, ``task_name``, ``template_type``)
and a FLAN-like shape: ~1,800 tasks (18 CoT, 1,500 NIv2, 70 Flan2021, 200 T0), submix shares of the row count
4 / 30 / 33 / 33 %, template types zs_opt / zs_noopt / fs_opt / fs_noopt in equal shares, multiple-choice
"OPTIONS:" blocks on *_opt rows. Sizes are realistic but small: a zero-shot question is 10-35 words
(~60-250 bytes), a few-shot one carries one more example, so 5,000,000 rows take about 1.7 GB. Every question is
distinct (a row number is part of it), so the planner's duplicate drop removes nothing. Deterministic for a
given ``seed``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
from pathlib import Path
from typing import Any

__all__ = ["cached_layout", "write_parquet_layout", "write_source"]

_WORDS = (  # noqa: SIM905 - a word list reads better as prose
    "the a of to and in is was for on that with as by at from his her it an were which are this be has had "
    "not but they their have one been would who more its about into than other some could time what when "
    "after first two over new only also most these many city river water people state school year world "
    "number story music light energy plant animal market river mountain doctor teacher student village "
    "bridge garden window letter question answer reason because therefore however although while during "
    "between against without within around across toward under above below small large early late good "
    "great high low long short young old red blue green black white north south east west summer winter"
).split()

_COT_TASKS = [
    f"cot_{n}"
    for n in (
        "gsm8k",
        "esnli",
        "aqua",
        "creak",
        "ecqa",
        "qasc",
        "sensemaking",
        "strategyqa",
        "stream_aqua",
        "stream_creak",
        "stream_esnli",
        "stream_gsm8k",
        "stream_qasc",
        "stream_sensemaking",
        "stream_ecqa",
        "stream_strategyqa",
        "math_qa",
        "sqa",
    )
]
_NIV_TASKS = [f"task{i:04d}_{_WORDS[i % len(_WORDS)]}_{_WORDS[(i * 7) % len(_WORDS)]}" for i in range(1500)]
_FLAN_TASKS = [f"{_WORDS[i % 40]}_{_WORDS[(i * 3) % 60]}:{1 + i % 3}.0.0" for i in range(70)]
_T0_TASKS = [f"{_WORDS[(i * 5) % 80]}_{_WORDS[(i * 11) % 90]}_{_WORDS[i % 70]}_{i}" for i in range(200)]
_SUBMIXES = (
    ("CoT", _COT_TASKS, 0.04),
    ("NIv2", _NIV_TASKS, 0.30),
    ("Flan2021", _FLAN_TASKS, 0.33),
    ("P3", _T0_TASKS, 0.33),
)
_TEMPLATES = ("zs_opt", "zs_noopt", "fs_opt", "fs_noopt")


def write_source(path: Path, rows: int, *, seed: int = 0) -> int:
    """Write ``rows`` FLAN-shaped JSON lines to ``path`` (atomically); returns the file size in bytes."""
    rng = random.Random(seed)
    words = _WORDS
    choices = rng.choices
    randint = rng.randint
    cum: list[float] = []
    acc = 0.0
    for _, _, share in _SUBMIXES:
        acc += share
        cum.append(acc)
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    dumps = json.JSONEncoder(ensure_ascii=False).encode
    with open(tmp, "w", encoding="utf-8") as f:
        buf: list[str] = []
        for i in range(rows):
            u = rng.random()
            k = 0 if u < cum[0] else 1 if u < cum[1] else 2 if u < cum[2] else 3
            source, tasks, _ = _SUBMIXES[k]
            task = tasks[int(rng.random() ** 1.5 * len(tasks))]  # uneven task sizes, as in FLAN
            template = _TEMPLATES[i & 3]
            question = f"Item {i}: " + " ".join(choices(words, k=randint(10, 35))) + "?"
            if template.startswith("fs"):
                shot = " ".join(choices(words, k=randint(10, 25))) + "? Answer: " + words[i % 50]
                question = shot + "\n\n" + question
            if template.endswith("_opt"):
                question += "\nOPTIONS:\n- " + "\n- ".join(choices(words, k=3))
            target = " ".join(choices(words, k=randint(1, 12)))
            buf.append(
                dumps(
                    {
                        "inputs": question,
                        "targets": target,
                        "task_source": source,
                        "task_name": task,
                        "template_type": template,
                    }
                )
            )
            if len(buf) >= 4096:
                f.write("\n".join(buf) + "\n")
                buf.clear()
        if buf:
            f.write("\n".join(buf) + "\n")
    os.replace(tmp, path)
    return path.stat().st_size


#: Open-Orca/FLAN's folders and the share of the collection's rows each holds in the synthetic copy.
_LAYOUT_SHARES = {"cot": 0.04, "niv2": 0.30, "flan": 0.30, "t0": 0.30, "dialog": 0.06}


def write_parquet_layout(root: Path, rows: int, *, seed: int = 0, rows_per_part: int = 50_000) -> int:
    """An Open-Orca/FLAN-shaped copy under ``root``: its 14 folders of ``part.N.parquet`` files, seqio columns.

    Rows are split over the folders by :data:`_LAYOUT_SHARES` (each submix evenly over its folders), with the
    same row shape as :func:`write_source`; Flan2021 option lists are rendered by FLAN's rule. Returns the
    bytes written.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tracegen.planning.flan_options import END_STRINGS, ITEM_STYLES, OPTION_STARTS, render_options
    from tracegen.planning.sources import OPEN_ORCA_FLAN_LAYOUT

    rng = random.Random(seed)
    sources = {
        "cot": ("CoT", _COT_TASKS),
        "niv2": ("NIv2", _NIV_TASKS),
        "flan": ("Flan2021", _FLAN_TASKS),
        "t0": ("P3", _T0_TASKS),
        "dialog": ("Dialog", ["wiki_dialog", "qrecc"]),
    }
    folders_of: dict[str, list[str]] = {}
    for folder in OPEN_ORCA_FLAN_LAYOUT:
        folders_of.setdefault(folder.split("_")[0], []).append(folder)
    total = 0
    row_no = 0
    for head, folders in folders_of.items():
        source, tasks = sources[head]
        for folder in folders:
            template = folder.split("_")[1]
            template = template[:2] + "_" + template[2:]
            n = round(rows * _LAYOUT_SHARES[head] / len(folders))
            (root / folder).mkdir(parents=True, exist_ok=True)
            for part, start in enumerate(range(0, max(n, 1), rows_per_part)):
                cols: dict[str, list[Any]] = {
                    k: []
                    for k in (
                        "inputs",
                        "targets",
                        "_template_idx",
                        "_task_source",
                        "_task_name",
                        "_template_type",
                    )
                }
                for _ in range(min(rows_per_part, n - start)):
                    question = f"Item {row_no}: " + " ".join(rng.choices(_WORDS, k=rng.randint(10, 35))) + "?"
                    if template.startswith("fs"):
                        question = " ".join(rng.choices(_WORDS, k=20)) + "? Answer: yes\n\n" + question
                    if head == "flan" and template.endswith("_opt") and row_no % 2:
                        question += "\n" + render_options(
                            rng.choices(_WORDS, k=3),
                            rng.choice(OPTION_STARTS),
                            rng.choice(ITEM_STYLES),
                            rng.choice(END_STRINGS),
                        )
                    cols["inputs"].append(question)
                    cols["targets"].append(" ".join(rng.choices(_WORDS, k=rng.randint(1, 12))))
                    cols["_template_idx"].append(row_no % 10)
                    cols["_task_source"].append(source)
                    cols["_task_name"].append(tasks[int(rng.random() ** 1.5 * len(tasks))])
                    cols["_template_type"].append(template)
                    row_no += 1
                path = root / folder / f"part.{part}.parquet"
                pq.write_table(pa.table(cols), path, row_group_size=10_000)
                total += path.stat().st_size
    return total


def cached_layout(rows: int, cache_dir: Path, *, seed: int = 0) -> Path:
    """The Open-Orca/FLAN-shaped copy of ``rows`` rows in ``cache_dir`` (written once)."""
    root = cache_dir / f"open-orca-flan-{rows}-s{seed}"
    marker = root / ".ok"
    if marker.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    write_parquet_layout(root, rows, seed=seed)
    marker.write_text("ok")
    return root


def cached_source(rows: int, cache_dir: Path, *, seed: int = 0) -> Path:
    """The source of ``rows`` rows in ``cache_dir`` (written once, reused while its size marker matches)."""
    path = cache_dir / f"flan-{rows}-s{seed}.jsonl"
    marker = path.with_name(path.name + ".ok")
    if path.exists() and marker.exists() and marker.read_text() == str(path.stat().st_size):
        return path
    size = write_source(path, rows, seed=seed)
    marker.write_text(str(size))
    return path


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    size = write_source(args.out, args.rows, seed=args.seed)
    print(f"wrote {args.rows:,} rows, {size / 2**20:,.0f} MiB to {args.out}")


if __name__ == "__main__":
    main(sys.argv[1:])
