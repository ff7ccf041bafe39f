"""A merge killed midway is redone by the rerun (the output's in-progress marker), never refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tracegen import pipeline
from tracegen.cleaning.merge import IN_PROGRESS, claim_output
from tracegen.errors import RunDirError


def run_dir(path: Path, prefix: str, n: int) -> Path:
    path.mkdir(parents=True)
    rows = [
        {"request_key": f"{prefix}{i:063d}", "cost_usd": 0.001, "id": f"cot.{i}", "submix": "cot",
         "question": f"{prefix} question {i}?", "system_prompt": "", "response": f"An answer number {i} here.",
         "model": "gpt-4o-mini", "finish_reason": "stop", "prompt_tokens": 5, "completion_tokens": 6}
        for i in range(n)
    ]  # fmt: skip
    (path / "traces.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_an_interrupted_merge_is_redone(tmp_path: Path) -> None:
    a, b = run_dir(tmp_path / "a", "a", 3), run_dir(tmp_path / "b", "b", 2)
    out = tmp_path / "merged"
    reference = tmp_path / "reference"
    pipeline.merge([a, b], reference)
    assert not (reference / IN_PROGRESS).exists()
    # a kill -9 mid-merge leaves a claimed output with partial files
    claim_output(out)
    (out / "traces.jsonl.tmp").write_text("{partial")
    pipeline.merge([a, b], out)
    assert not (out / IN_PROGRESS).exists() and not (out / "traces.jsonl.tmp").exists()
    assert (out / "traces.jsonl").read_bytes() == (reference / "traces.jsonl").read_bytes()
    assert (out / "clean.jsonl").read_bytes() == (reference / "clean.jsonl").read_bytes()


def test_a_finished_or_foreign_output_is_still_refused(tmp_path: Path) -> None:
    a = run_dir(tmp_path / "a", "a", 2)
    done = tmp_path / "done"
    pipeline.merge([a], done)
    with pytest.raises(RunDirError, match="exists and is not empty"):
        pipeline.merge([a], done)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="exists and is not empty"):
        pipeline.merge([a], foreign)
    assert (foreign / "notes.txt").read_text() == "mine"
