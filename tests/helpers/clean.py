"""Fixture run directories for postprocess/merge tests, written with Record.to_dict() like the engine."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from tracegen.records import Record

SYSTEMS = {
    1: "",
    3: "You are an AI assistant. You will be given a task. You must generate a detailed and long answer.",
}
VOCAB = [f"tok{i}" for i in range(5000)]


def long_text(seed: int, n: int = 40) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(VOCAB) for _ in range(n))


def planned(
    i: int, submix: str = "flan", question: str | None = None, msg: int = 3, target: str = ""
) -> Record:
    return Record(
        id=f"{submix}.{i}",
        submix=submix,
        question=question if question is not None else f"Question number {i}: {long_text(10_000 + i, 12)}?",
        system_prompt=SYSTEMS[msg],
        system_message_id=msg,
        target=target,
        prompt_tokens=50,
        source=f"fixture:{i}",
    )


def answered(r: Record, response: str | None = None, **kw: Any) -> Record:
    data = r.to_dict()
    data.update(
        stage="generate",
        model="gpt-4o-mini",
        model_returned="tracegen-fake:gpt-4o-mini",
        response=response if response is not None else long_text(i_of(r)),
        completion_tokens=120,
        cost_usd=0.0001,
        finish_reason="stop",
    )
    data.update(kw)
    return Record.from_dict(data)


def i_of(r: Record) -> int:
    return int(r.id.split(".")[1])


def write_jsonl(path: Path, rows: list[dict[str, Any]], tail: bytes = b"") -> None:
    with open(path, "wb") as f:
        for row in rows:
            f.write((json.dumps(row) + "\n").encode("utf-8"))
        f.write(tail)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def engine_rejection(r: Record, stage: str, reason: str) -> dict[str, Any]:
    return {"id": r.id, "stage": stage, "reason": reason, "detail": "engine", "record": r.to_dict()}


def make_run_dir(
    path: Path,
    plan: list[Record],
    traces: list[Record],
    *,
    shuffle_seed: int | None = 0,
    rejected: list[dict[str, Any]] | None = None,
    stats: dict[str, Any] | None = None,
) -> Path:
    """A run dir with plan.jsonl (answer fields empty), traces.jsonl (completion order = shuffled)."""
    path.mkdir(parents=True, exist_ok=True)
    write_jsonl(path / "plan.jsonl", [r.to_dict() for r in plan])
    order = list(traces)
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(order)
    write_jsonl(path / "traces.jsonl", [r.to_dict() for r in order])
    if rejected is not None:
        write_jsonl(path / "rejected.jsonl", rejected)
    (path / "manifest.json").write_text(
        json.dumps({"config": {"model": "gpt-4o-mini", "seed": 0}, "tracegen_version": "test"}),
        encoding="utf-8",
    )
    (path / "stats.json").write_text(json.dumps(stats or {"cost_usd": 0.5, "tokens": {"prompt": 100}}))
    return path


def basic_run(tmp_path: Path) -> Path:
    """20 planned rows; traces in shuffled order with bad rows of every kind mixed in."""
    plan = [planned(i, msg=3 if i % 2 else 1) for i in range(20)]
    plan[7] = planned(7, question="Summarize the following text: " + long_text(7, 30), msg=3)
    traces = [answered(r) for r in plan]
    traces[2] = answered(plan[2], response="")  # empty
    traces[3] = answered(plan[3], finish_reason="length")  # truncated
    traces[4] = answered(plan[4], response="As an AI language model, I cannot do that for you today.")
    traces[5] = answered(plan[5], response=traces[6].response)  # exact response duplicate of flan.6 (later)
    traces[7] = answered(plan[7], response="Would you like me to explain further?")
    traces[9] = answered(plan[9], response="ok")  # too short, system message 3 is set
    del traces[11]  # never answered (failed): not in traces
    rejected = [
        engine_rejection(plan[11], "generate", "failed"),
        engine_rejection(plan[12], "plan", "too_long"),
    ]
    return make_run_dir(tmp_path / "run", plan, traces, rejected=rejected)
