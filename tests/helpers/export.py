"""Fixture run directories for the export, card and hub tests (no engine needed)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tracegen.records import Record

ORCA_MESSAGES = {
    1: "",
    6: (
        "You are an AI assistant that helps people find information. Provide a detailed answer so user "
        "don’t need to search outside to understand the answer."
    ),
    7: (
        "You are an AI assistant. User will you give you a task. Your goal is to complete the task as "
        "faithfully as you can. While performing the task think step-by-step and justify your steps."
    ),
    15: (
        "Given a definition of a task and a sample input, break the definition into small parts.\n"
        "Each of those parts will have some instruction. Explain their meaning by showing an example that "
        "meets the criteria in the instruction. Use the following format:\nPart  # : a key part of the "
        "definition.\nUsage: Sample response that meets the criteria from the key part. Explain why you "
        "think it meets the criteria."
    ),
}
SUBMIX_MESSAGES = {"cot": [6], "niv": [1, 7, 15], "flan": [7], "t0": [1, 7]}


def make_records(
    n: int,
    *,
    seed: int = 0,
    stages: tuple[str, ...] = ("gpt4",),
    erase_every: int = 0,
    answered: bool = True,
) -> list[Record]:
    """``n`` records in plan order; stage blocks in order; every ``erase_every``-th gets a train prompt."""
    rng = random.Random(seed)
    out = []
    counters = dict.fromkeys(SUBMIX_MESSAGES, 0)
    for i in range(n):
        submix = rng.choice(list(SUBMIX_MESSAGES))
        counters[submix] += 1
        sid = rng.choice(SUBMIX_MESSAGES[submix])
        stage = stages[min(i * len(stages) // max(n, 1), len(stages) - 1)]
        r = Record(
            id=f"{submix}.{counters[submix]}",
            submix=submix,
            question=f"Question {i}: what is {i} + {i}? Options: (A) {2 * i} (B) {2 * i + 1} | pipe ünïcode",
            system_prompt=ORCA_MESSAGES[sid],
            system_message_id=sid,
            train_system_prompt=(
                "You are a helpful assistant." if erase_every and i % erase_every == 0 else None
            ),
            task_name=f"task_{i % 7}",
            template_type="zs_opt",
            target="(A)",
            prompt_tokens=40 + i % 13,
            source=f"flan.jsonl:{i + 1}",
        )
        if answered:
            r.stage = stage
            r.model = "gpt-4o-mini" if stage != "gpt35" else "gpt-3.5-turbo"
            r.model_returned = "tracegen-fake:" + r.model
            r.response = f"Step 1: {i} + {i} = {2 * i}. So the answer is (A)."
            r.completion_tokens = 20 + i % 11
            r.cost_usd = 1e-5 * (i % 5 + 1)
            r.finish_reason = "stop"
            r.agrees_with_target = [True, False, None][i % 3]
        out.append(r)
    return out


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def make_run_dir(
    root: Path,
    records: list[Record],
    *,
    clean: bool = True,
    traces_order: list[int] | None = None,
    config: dict[str, Any] | None = None,
    stats: dict[str, Any] | None = None,
) -> Path:
    """A run dir: manifest, plan, traces (optionally reordered) and, with ``clean``, clean.jsonl + stats."""
    root.mkdir(parents=True, exist_ok=True)
    cfg = {
        "source": ["/home/someone/data/flan_sample"],
        "n": len(records),
        "seed": 7,
        "mix": "orca",
        "model": "gpt-4o-mini",
        "base_url": None,
        "temperature": 0.7,
        "top_p": 0.95,
        "max_tokens": 1024,
        "templates": None,
        "system_message_spelling": "verbatim",
        "mode": "online",
    }
    cfg.update(config or {})
    manifest = {
        "config": cfg,
        "plan_fingerprint": "abc123",
        "tracegen_version": "0.1.0",
        "created": "2026-01-01",
    }
    (root / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    plan = []
    for r in records:
        d = r.to_dict()
        d.update(response=None, stage="", model="", model_returned="", completion_tokens=0, cost_usd=0.0)
        plan.append(d)
    write_jsonl(root / "plan.jsonl", plan)
    (root / "plan_stats.json").write_text(
        json.dumps({"planned": len(records), "by_submix": {"cot": 1}, "too_long": 0}), encoding="utf-8"
    )
    order = traces_order if traces_order is not None else list(range(len(records)))
    write_jsonl(root / "traces.jsonl", (records[i].to_dict() for i in order))
    base_stats = {
        "requests": len(records),
        "cost_usd": 0.0123,
        "prompt_tokens": 999,
        "completion_tokens": 555,
    }
    base_stats.update(stats or {})
    (root / "stats.json").write_text(json.dumps(base_stats), encoding="utf-8")
    if clean:
        write_jsonl(root / "clean.jsonl", (r.to_dict() for r in records))
        clean_stats = {
            "kept": len(records),
            "rejected": {"refusal": 2, "too_short": 1},
            "dedup": {"exact_question": 3, "near_response": 1},
            "answer_check": {"agrees": 5, "disagrees": 2, "unknown": 9},
        }
        (root / "clean_stats.json").write_text(json.dumps(clean_stats), encoding="utf-8")
    return root
