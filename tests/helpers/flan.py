"""Builders for small FLAN v2-shaped sources used by the planning tests."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import REPO

SAMPLE = REPO / "examples" / "flan_sample"

TASK_SOURCE = {"cot": "CoT", "niv": "NIv2", "flan": "Flan2021", "t0": "P3", "dialog": "Dialog"}
DEFAULT_TASK = {
    "cot": "cot_gsm8k",
    "niv": "task001_demo",
    "flan": "glue/sst2:2.0.0",
    "t0": "wiki_qa_demo",
    "dialog": "wiki_dialog",
}


def frow(
    question: str,
    submix: str = "flan",
    *,
    task: str | None = None,
    template: str = "zs_noopt",
    target: str = "t",
) -> dict[str, Any]:
    """One FLAN row in the canonical column spelling."""
    return {
        "inputs": question,
        "targets": target,
        "task_source": TASK_SOURCE[submix],
        "task_name": task or DEFAULT_TASK[submix],
        "template_type": template,
    }


def write_jsonl(path: Path, rows: Iterable[dict[str, Any] | str]) -> Path:
    """Rows as JSON lines (a str is written as is: handy for malformed lines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


def grid(counts: dict[tuple[str, str], int], *, prefix: str = "q") -> list[dict[str, Any]]:
    """Distinct zero-shot rows: ``counts[(submix, task)]`` rows of each task, interleaved by task."""
    rows: list[dict[str, Any]] = []
    left = dict(counts)
    i = 0
    while any(left.values()):
        for (submix, task), n in list(left.items()):
            if n:
                rows.append(frow(f"{prefix} {submix} {task} #{i}", submix, task=task))
                left[(submix, task)] = n - 1
        i += 1
    return rows
