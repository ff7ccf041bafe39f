"""Export: formats with explicit features, plan order, shards, stages, prompt erasure, bounded memory."""

from __future__ import annotations

import json
import random
import tracemalloc
from pathlib import Path
from typing import Any

import datasets
import pyarrow.parquet as pq
import pytest

from helpers.export import make_records, make_run_dir, write_jsonl
from tracegen.errors import ConfigError, RunDirError
from tracegen.publish.card import validate_card
from tracegen.publish.export import FORMATS, export, features_for, iter_rows, run_summary
from tracegen.records import Record


def load_parquet(export_dir: Path, config: str) -> datasets.Dataset:
    files = sorted(str(p) for p in (export_dir / config / "data").glob("*.parquet"))
    ds = datasets.load_dataset("parquet", data_files=files, split="train")
    assert isinstance(ds, datasets.Dataset)
    return ds


def test_openorca_default_loads_like_openorca(tmp_path: Path) -> None:
    records = make_records(30, seed=1)
    run = make_run_dir(tmp_path / "run", records)
    result = export(run)
    out = run / "dataset"
    assert result.output_dir == out and result.source == "clean.jsonl" and result.rows == 30
    assert [c.name for c in result.configs] == ["openorca"]
    ds = load_parquet(out, "openorca")
    assert ds.features == datasets.Features(
        {k: datasets.Value("string") for k in ("id", "system_prompt", "question", "response")}
    )
    assert ds["id"] == [r.id for r in records]
    assert ds[3] == {
        "id": records[3].id,
        "system_prompt": records[3].system_prompt,
        "question": records[3].question,
        "response": records[3].response,
    }
    jsonl = [json.loads(line) for line in (out / "openorca" / "train.jsonl").read_text("utf-8").splitlines()]
    assert jsonl == ds.to_list()


def test_all_formats_have_their_features_and_the_same_rows(tmp_path: Path) -> None:
    records = make_records(12, seed=2)
    records[0].system_prompt, records[0].system_message_id = "", 1  # Orca message 1: no system turn
    records[1].agrees_with_target = None
    run = make_run_dir(tmp_path / "run", records)
    export(run, formats=["openorca", "full", "alpaca", "sharegpt", "messages"])
    out = run / "dataset"
    for fmt in FORMATS:
        assert load_parquet(out, fmt).features == features_for(fmt)

    full = load_parquet(out, "full")
    assert full.features["prompt_tokens"] == datasets.Value("int64")
    assert full.features["cost_usd"] == datasets.Value("float64")
    assert full.features["agrees_with_target"] == datasets.Value("bool")
    assert full[1]["agrees_with_target"] is None  # nullable bool survives
    assert full[4]["agrees_with_target"] is False
    assert full.to_list() == [{k: getattr(r, k) for k in features_for("full")} for r in records]

    alpaca = load_parquet(out, "alpaca")
    assert alpaca[5] == {
        "instruction": records[5].system_prompt,
        "input": records[5].question,
        "output": records[5].response,
    }

    share = load_parquet(out, "sharegpt")
    assert share[0]["conversations"] == [
        {"from": "human", "value": records[0].question},
        {"from": "gpt", "value": records[0].response},
    ]
    with_system = next(i for i, r in enumerate(records) if r.system_prompt)
    assert [t["from"] for t in share[with_system]["conversations"]] == ["system", "human", "gpt"]


def test_prompt_erasure_puts_the_training_message_in_the_system_column(tmp_path: Path) -> None:
    records = make_records(9, seed=3, erase_every=3)
    erased = [r for r in records if r.train_system_prompt is not None]
    assert erased and all(r.train_system_prompt != r.system_prompt for r in erased)
    run = make_run_dir(tmp_path / "run", records)
    export(run, formats=["openorca", "full", "alpaca", "sharegpt"])
    out = run / "dataset"
    oo, full, alpaca, share = (load_parquet(out, f) for f in ("openorca", "full", "alpaca", "sharegpt"))
    for i, r in enumerate(records):
        expected = r.train_system_prompt if r.train_system_prompt is not None else r.system_prompt
        assert oo[i]["system_prompt"] == expected
        assert alpaca[i]["instruction"] == expected
        turns = share[i]["conversations"]
        assert (turns[0]["value"] if turns[0]["from"] == "system" else "") == expected
        assert full[i]["system_prompt"] == r.system_prompt  # the teacher's message stays in `full`
        assert full[i]["train_system_prompt"] == r.train_system_prompt


def test_traces_are_put_in_plan_order_and_a_later_answer_wins(tmp_path: Path) -> None:
    records = make_records(40, seed=4)
    order = list(range(40))
    random.Random(0).shuffle(order)
    run = make_run_dir(tmp_path / "run", records, clean=False, traces_order=order)
    redo = Record.from_dict(records[7].to_dict())
    redo.response = "a second, better answer"
    with (run / "traces.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps(redo.to_dict()) + "\n")
    stray = make_records(1, seed=99)[0]
    stray.id = "cot.999999"
    with (run / "traces.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps(stray.to_dict()) + "\n")

    result = export(run)
    assert result.source == "traces.jsonl"
    ds = load_parquet(run / "dataset", "openorca")
    assert ds["id"] == [r.id for r in records] + ["cot.999999"]  # plan order, unknown ids last
    assert ds[7]["response"] == "a second, better answer"
    assert ds.num_rows == 41


def test_traces_without_a_plan_keep_file_order(tmp_path: Path) -> None:
    records = make_records(10, seed=5)
    run = make_run_dir(tmp_path / "run", records, clean=False, traces_order=[3, 1, 2, 0, 9, 8, 7, 6, 5, 4])
    (run / "plan.jsonl").unlink()
    export(run)
    ids = load_parquet(run / "dataset", "openorca")["id"]
    assert ids == [records[i].id for i in [3, 1, 2, 0, 9, 8, 7, 6, 5, 4]]


def test_unanswered_records_are_skipped(tmp_path: Path) -> None:
    records = make_records(6, seed=6)
    records[2].response = None
    run = make_run_dir(tmp_path / "run", records)
    result = export(run)
    assert result.rows == 5 and result.skipped_unanswered == 1
    assert records[2].id not in load_parquet(run / "dataset", "openorca")["id"]


def test_shards_and_row_groups_are_bounded(tmp_path: Path) -> None:
    records = make_records(20, seed=7)
    run = make_run_dir(tmp_path / "run", records)
    result = export(run, shard_rows=7, batch_rows=3)
    (cfg,) = result.configs
    assert list(cfg.data_files) == [f"openorca/data/train-0000{i}-of-00003.parquet" for i in range(3)]
    sizes = [pq.ParquetFile(run / "dataset" / f).metadata.num_rows for f in cfg.data_files]
    assert sizes == [7, 7, 6]
    for f in cfg.data_files:
        meta = pq.ParquetFile(run / "dataset" / f).metadata
        assert all(meta.row_group(i).num_rows <= 3 for i in range(meta.num_row_groups))
    assert [r["id"] for r in iter_rows(run / "dataset", cfg.to_dict())] == [r.id for r in records]


def test_stages_become_their_own_configs(tmp_path: Path) -> None:
    records = make_records(10, seed=8, stages=("gpt35", "gpt4"))
    run = make_run_dir(tmp_path / "run", records)
    result = export(run, formats=["openorca", "full"])
    names = [c.name for c in result.configs]
    assert names == ["openorca-gpt35", "openorca-gpt4", "full-gpt35", "full-gpt4"]
    by_name = {c.name: c for c in result.configs}
    assert by_name["openorca-gpt35"].rows + by_name["openorca-gpt4"].rows == 10
    gpt4 = load_parquet(run / "dataset", "full-gpt4")
    assert set(gpt4["stage"]) == {"gpt4"}
    assert gpt4["id"] == [r.id for r in records if r.stage == "gpt4"]
    manifest = json.loads((run / "dataset" / "export.json").read_text("utf-8"))
    assert manifest["default_config"] == "openorca-gpt35"
    card = (run / "dataset" / "README.md").read_text("utf-8")
    meta = validate_card(card, root=run / "dataset")
    assert [c.get("default", False) for c in meta["configs"]] == [True, False, False, False]
    assert "train on `gpt35` then `gpt4`" in card


def test_reexport_replaces_the_previous_export(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run", make_records(8, seed=9))
    export(run, formats=["openorca", "alpaca"])
    export(run, formats=["sharegpt"])
    out = run / "dataset"
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "export.json", "sharegpt", "tracegen"]
    assert not list(tmp_path.glob("run/.dataset*"))  # no temp dirs left behind


def test_export_refuses_to_overwrite_a_foreign_directory(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run", make_records(3))
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(RunDirError, match="not a tracegen export"):
        export(run, foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_no_answered_records_is_an_error_not_an_empty_dataset(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run", [], clean=False)
    with pytest.raises(RunDirError, match=r"no answered records in traces\.jsonl"):
        export(run, formats=["openorca", "sharegpt"])
    assert not (run / "dataset").exists()


def test_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="no such run directory"):
        export(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RunDirError, match="nothing to export"):
        export(empty)
    run = make_run_dir(tmp_path / "run", make_records(3))
    with pytest.raises(ConfigError, match="unknown export format 'parquet'"):
        export(run, formats=["parquet"])
    with (run / "clean.jsonl").open("a") as f:
        f.write("{not json\n")
    with pytest.raises(RunDirError, match=r"clean\.jsonl:4: not a Record line"):
        export(run)
    assert not (run / "dataset").exists()  # a failed export leaves nothing half-written


def test_run_summary_gathers_the_run_files(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run", make_records(5))
    summary = run_summary(run)
    assert summary["run_dir"] == "run"
    assert summary["config"]["model"] == "gpt-4o-mini"
    assert summary["stats"]["cost_usd"] == pytest.approx(0.0123)
    assert summary["plan_stats"]["planned"] == 5
    assert summary["clean_stats"]["rejected"] == {"refusal": 2, "too_short": 1}
    assert "export" not in summary
    export(run, formats=["openorca", "full"])
    assert run_summary(run)["export"] == {"openorca": 5, "full": 5}
    (run / "stats.json").write_text("{broken")
    with pytest.raises(RunDirError, match=r"stats\.json:1: not valid JSON"):
        run_summary(run)


def _big_records(n: int) -> list[dict[str, Any]]:
    filler = "explanation " * 80  # ~1 KB per response
    rows = []
    for i, r in enumerate(make_records(n, seed=10)):
        r.response = f"{i} {filler}"
        rows.append(r.to_dict())
    return rows


def test_memory_stays_bounded_by_the_batch_not_the_dataset(tmp_path: Path) -> None:
    n = 6000  # ~7 MB of records on disk
    run = make_run_dir(tmp_path / "run", make_records(1))
    write_jsonl(run / "clean.jsonl", _big_records(n))
    data_mb = (run / "clean.jsonl").stat().st_size / 1e6
    tracemalloc.start()
    try:
        result = export(run, shard_rows=2500, batch_rows=200, jsonl=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.rows == n
    assert peak / 1e6 < data_mb / 3, f"peak {peak / 1e6:.1f} MB for {data_mb:.1f} MB of records"
