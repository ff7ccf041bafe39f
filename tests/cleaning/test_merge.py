"""merge(): run dirs combined into one run dir, ids kept or renumbered, global dedup, summed stats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.clean import (
    answered,
    engine_rejection,
    long_text,
    make_run_dir,
    planned,
    read_jsonl,
    write_jsonl,
)
from tracegen.cleaning.dedup import DedupConfig
from tracegen.cleaning.merge import merge
from tracegen.cleaning.postprocess import clean
from tracegen.errors import RunDirError


def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    """Run A: flan.0-5. Run B (another plan, ids restart at 0): its flan.0-1 ask A's flan.2-3 questions again
    (same system message), flan.2 answers like A's flan.4, flan.3-5 are new; B used another teacher."""
    plan_a = [planned(i) for i in range(6)]
    run_a = make_run_dir(
        tmp_path / "a",
        plan_a,
        [answered(r) for r in plan_a],
        rejected=[engine_rejection(plan_a[5], "generate", "content_filter")],
        stats={"cost_usd": 0.25, "requests": {"ok": 6}, "model": "gpt-4o-mini"},
    )
    write_jsonl(run_a / "failed.jsonl", [{"id": "flan.9", "key": "k", "attempts": 8, "error": {}}])
    plan_b = [planned(i, question=plan_a[i + 2].question) for i in range(2)]
    plan_b += [planned(i, question=f"B question {i} {long_text(500 + i, 8)}") for i in range(2, 6)]
    traces_b = [
        answered(r, response=long_text(1000 + i), model="gpt-4o", model_returned="gpt-4o-2024")
        for i, r in enumerate(plan_b)
    ]
    traces_b[2] = answered(
        plan_b[2], response=answered(plan_a[4]).response, model="gpt-4o", model_returned=""
    )
    run_b = make_run_dir(
        tmp_path / "b",
        plan_b,
        traces_b,
        stats={"cost_usd": 0.75, "requests": {"ok": 6, "failed": 1}, "model": "gpt-4o"},
    )
    return run_a, run_b


def test_merge_two_runs_with_overlap(tmp_path: Path) -> None:
    run_a, run_b = two_runs(tmp_path)
    out = tmp_path / "merged"
    result = merge([run_a, run_b], out)
    # Run B reuses ids flan.0-5 for other questions: it is renumbered past A's largest n (5) -> flan.6-11.
    assert result.renamed_runs == 1 and result.runs[1]["id_shift"] == {"flan": 6}
    plan_ids = [r["id"] for r in read_jsonl(out / "plan.jsonl")]
    assert plan_ids == [f"flan.{i}" for i in range(12)]
    assert len(read_jsonl(out / "traces.jsonl")) == 12
    # Global dedup: B's first two rows repeat A's questions (exact_pair); B's flan.2 repeats A's flan.4
    # answer (exact_response).
    kept = [r["id"] for r in read_jsonl(out / "clean.jsonl")]
    assert kept == [f"flan.{i}" for i in (0, 1, 2, 3, 4, 5, 9, 10, 11)]
    assert result.clean is not None
    assert result.clean.removed_by_dedup == {"exact_pair": 2, "exact_response": 1}
    assert result.clean.rows_per_model == {"tracegen-fake:gpt-4o-mini": 6, "gpt-4o-2024": 3}
    # Stats summed, traces totals, models listed, engine rejections and failures carried over.
    stats = json.loads((out / "stats.json").read_text())
    assert stats["cost_usd"] == 1.0 and stats["requests"] == {"ok": 12, "failed": 1}
    assert stats["model"] == ["gpt-4o-mini", "gpt-4o"] and stats["merged_runs"] == 2
    assert stats["totals"]["completion_tokens"] == 12 * 120 and stats["totals"]["answered"] == 12
    assert result.cost_usd == pytest.approx(12 * 0.0001)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["merged"] is True and [m["name"] for m in manifest["merged_from"]] == ["a", "b"]
    assert manifest["config"]["model"] == "gpt-4o-mini"
    assert set(manifest["models"]) == {"tracegen-fake:gpt-4o-mini", "gpt-4o-2024", "gpt-4o"}
    engine_lines = [r for r in read_jsonl(out / "rejected.jsonl") if r["stage"] == "generate"]
    assert [r["id"] for r in engine_lines] == ["flan.5"]
    assert len(read_jsonl(out / "failed.jsonl")) == 1
    data = result.to_dict()
    json.dumps(data)
    assert str(tmp_path) not in json.dumps(data)
    assert not list(out.glob("*.tmp"))


def test_merge_shards_of_one_plan_keeps_ids(tmp_path: Path) -> None:
    plan = [planned(i) for i in range(8)]
    shard1 = make_run_dir(tmp_path / "s1", plan[:4], [answered(r) for r in plan[:4]])
    shard2 = make_run_dir(tmp_path / "s2", plan[4:], [answered(r) for r in plan[4:]])
    result = merge([shard1, shard2], tmp_path / "m")
    assert result.renamed_runs == 0
    assert [r["id"] for r in read_jsonl(tmp_path / "m" / "clean.jsonl")] == [f"flan.{i}" for i in range(8)]


def test_merge_same_plan_twice_plans_once_and_keeps_one_answer(tmp_path: Path) -> None:
    plan = [planned(i) for i in range(4)]
    first = make_run_dir(tmp_path / "r1", plan, [answered(r) for r in plan])
    traces = [answered(r, response=long_text(900 + i)) for i, r in enumerate(plan)]
    second = make_run_dir(tmp_path / "r2", plan, traces)
    result = merge([first, second], tmp_path / "m")
    assert result.renamed_runs == 0 and result.repeated_plan_rows == 4 and result.plan_rows == 4
    kept = read_jsonl(tmp_path / "m" / "clean.jsonl")
    assert [r["id"] for r in kept] == [f"flan.{i}" for i in range(4)]
    assert kept[0]["response"] == long_text(900)  # the later answer of an id wins
    assert result.clean is not None and result.clean.duplicate_ids == 4


def test_merge_is_reexportable_and_cleanable_again(tmp_path: Path) -> None:
    run_a, run_b = two_runs(tmp_path)
    out = tmp_path / "merged"
    merge([run_a, run_b], out, clean_output=False)
    assert not (out / "clean.jsonl").exists()
    again = clean(out, dedup_config=DedupConfig(exact_question=False, exact_pair=False))
    assert again.kept == 11 and again.removed_by_dedup == {"exact_response": 1}


def test_merge_refuses_bad_inputs(tmp_path: Path) -> None:
    run_a, run_b = two_runs(tmp_path)
    with pytest.raises(RunDirError, match="at least one"):
        merge([], tmp_path / "x")
    with pytest.raises(RunDirError, match="given twice"):
        merge([run_a, run_a], tmp_path / "x")
    (tmp_path / "notrun").mkdir()
    with pytest.raises(RunDirError, match="no traces"):
        merge([run_a, tmp_path / "notrun"], tmp_path / "x")
    with pytest.raises(RunDirError, match="inside one"):
        merge([run_a, run_b], run_a / "merged")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "something").write_text("x")
    with pytest.raises(RunDirError, match="not empty"):
        merge([run_a, run_b], busy)
    merge([run_a, run_b], busy, overwrite=True)
    assert (busy / "clean.jsonl").is_file() and not (busy / "something").exists()
