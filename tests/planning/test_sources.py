"""FLAN v2 sources: formats, column variants, submix mapping, bad records, missing paths, the Hub."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.flan import SAMPLE, frow, write_jsonl
from tracegen.errors import BadRecordError, SourceError
from tracegen.planning.sources import (
    FLAN_V2_PRESET,
    OPEN_ORCA_FLAN_LAYOUT,
    Rejection,
    Source,
    SourceStats,
    normalize_row,
    submix_for_task_source,
)


def rows_of(*specs: str, **kw: Any) -> list[Any]:
    return list(Source(list(specs), **kw).iter_rows())


# ---- formats ---------------------------------------------------------------------------------------------
def test_jsonl_rows_normalised_with_provenance(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [frow("Q1", "cot", target="A1"), frow("Q2", "niv")])
    rows = rows_of(str(path))
    assert [r.question for r in rows] == ["Q1", "Q2"]
    assert rows[0].submix == "cot" and rows[0].target == "A1" and rows[0].template_type == "zs_noopt"
    assert rows[0].where == f"{path}:1" and rows[1].where == f"{path}:2"


def test_blank_lines_are_not_records(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [frow("Q1"), "", "   ", frow("Q2")])
    assert [r.where.rsplit(":", 1)[1] for r in rows_of(str(path))] == ["1", "4"]


def test_gzip_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "flan_zs_opt_train.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(json.dumps(frow("Q1")) + "\n")
    assert [r.question for r in rows_of(str(path))] == ["Q1"]


def test_json_array_is_streamed_element_by_element(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    big = "x" * 100_000  # elements larger than the 64K read buffer
    path.write_text(json.dumps([frow("Q1"), frow(big), frow("Q3")], indent=2))
    rows = rows_of(str(path))
    assert [len(r.question) for r in rows] == [2, 100_000, 2]
    assert rows[2].where == f"{path}[2]"


def test_empty_json_array_and_json_lines_in_dot_json(tmp_path: Path) -> None:
    (tmp_path / "empty.json").write_text("[ ]")
    assert rows_of(str(tmp_path / "empty.json")) == []
    lines = write_jsonl(tmp_path / "lines.json", [frow("Q1"), frow("Q2")])
    assert len(rows_of(str(lines))) == 2


def test_truncated_json_array_is_a_bad_record(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text("[" + json.dumps(frow("Q1")) + ', {"inp')
    with pytest.raises(BadRecordError) as e:
        rows_of(str(path))
    assert e.value.where == f"{path}[1]"


def test_parquet_read_in_batches(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    pq.write_table(pa.Table.from_pylist([frow(f"Q{i}", "t0") for i in range(300)]), path, row_group_size=50)
    rows = rows_of(str(path))
    assert len(rows) == 300 and rows[299].where == f"{path}[299]" and rows[0].submix == "t0"


def test_directory_recursive_sorted_and_glob(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "d" / "b.jsonl", [frow("B")])
    write_jsonl(tmp_path / "d" / "a" / "a.jsonl", [frow("A")])
    (tmp_path / "d" / "README.md").write_text("not data")
    assert [r.question for r in rows_of(str(tmp_path / "d"))] == ["A", "B"]
    assert [r.question for r in rows_of(str(tmp_path / "d" / "*.jsonl"))] == ["B"]
    assert [r.question for r in rows_of(str(tmp_path / "d" / "**" / "*.jsonl"))] == ["A", "B"]


def test_saved_dataset_and_dataset_dict(tmp_path: Path) -> None:
    import datasets

    ds = datasets.Dataset.from_list([frow("Q1", "niv"), frow("Q2", "niv")])
    ds.save_to_disk(str(tmp_path / "saved"))
    rows = rows_of(str(tmp_path / "saved"))
    assert [r.question for r in rows] == ["Q1", "Q2"] and rows[1].where == f"{tmp_path / 'saved'}[1]"
    datasets.DatasetDict({"train": ds, "validation": ds.select([0])}).save_to_disk(str(tmp_path / "dd"))
    rows = rows_of(str(tmp_path / "dd"))
    assert len(rows) == 2 and rows[0].where.endswith("dd/train[0]")


def test_bundled_sample_reads_in_every_format() -> None:
    stats = SourceStats()
    rows = list(Source([str(SAMPLE)]).iter_rows(stats=stats))
    assert {r.submix for r in rows} == {"cot", "niv", "flan", "t0"}
    assert stats.dialog_skipped == 20 and stats.bad_records == 0
    assert stats.rows_read == len(rows) + 20
    assert any(r.where.endswith(".parquet[0]") for r in rows)


# ---- column variants and submix mapping ------------------------------------------------------------------
def test_seqio_underscore_columns(tmp_path: Path) -> None:
    raw = {
        "inputs": "Q",
        "targets": "A",
        "_task_source": "P3",
        "_task_name": "adv_qa",
        "_template_type": "zs_opt",
        "_template_idx": 3,
    }
    row = normalize_row(raw, "x:1")
    assert row is not None and (row.submix, row.task_name, row.template_type) == ("t0", "adv_qa", "zs_opt")


@pytest.mark.parametrize(
    ("value", "submix"),
    [
        ("CoT", "cot"),
        ("NIv2", "niv"),
        ("Flan2021", "flan"),
        ("FLAN", "flan"),
        ("P3", "t0"),
        ("T0", "t0"),
        ("Dialog", "dialog"),
        ("cot", "cot"),
        ("Unknown", None),
    ],
)
def test_task_source_to_submix(value: str, submix: str | None) -> None:
    assert submix_for_task_source(value) == submix


def test_sirneural_columns_submix_from_task_and_template_from_file_name(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "niv2_zs_noopt_train.jsonl",
        [{"input": "Q1", "target": "A", "task": "niv2"}, {"input": "Q2", "target": "A", "task": "dialog"}],
    )
    stats = SourceStats()
    rows = list(Source([str(path)]).iter_rows(stats=stats))
    assert [(r.submix, r.task_name, r.template_type) for r in rows] == [("niv", "niv2", "zs_noopt")]
    assert stats.dialog_skipped == 1


@pytest.mark.parametrize(
    ("task", "submix"),
    [
        ("task1234_some_task", "niv"),
        ("cot_gsm8k", "cot"),
        ("stream_aqua", "cot"),
        ("glue/rte:2.0.0", "flan"),
        ("t0", "t0"),
        ("flan", "flan"),
    ],
)
def test_task_name_rule_when_task_source_is_missing(task: str, submix: str) -> None:
    row = normalize_row({"input": "Q", "target": "A", "task": task}, "x:1", "cot_zsopt_data/part-0.parquet")
    assert row is not None and row.submix == submix and row.template_type == "zs_opt"


def test_task_name_with_no_submix_is_bad() -> None:
    with pytest.raises(BadRecordError) as e:
        normalize_row({"input": "Q", "target": "A", "task": "adversarial_qa"}, "f.jsonl:7", "f_zs_opt.jsonl")
    assert e.value.field == "task" and "f.jsonl:7" in str(e.value)


def test_missing_template_without_file_name_hint_is_bad() -> None:
    with pytest.raises(BadRecordError) as e:
        normalize_row({"input": "Q", "target": "A", "task": "cot"}, "plain.jsonl:1", "plain.jsonl")
    assert e.value.field == "template_type"


def test_template_type_spellings() -> None:
    for raw, canon in [
        ("zs_opt", "zs_opt"),
        ("ZS_NOOPT", "zs_noopt"),
        ("fsopt", "fs_opt"),
        ("fs-noopt", "fs_noopt"),
    ]:
        row = normalize_row(frow("Q", template=raw), "x:1")
        assert row is not None and row.template_type == canon


def test_dialog_returns_none_even_if_incomplete() -> None:
    assert normalize_row({"task_source": "Dialog"}, "x:1") is None


# ---- bad records -----------------------------------------------------------------------------------------
BAD_LINES: list[tuple[Any, str, str]] = [
    ('{"inputs": "Q", "targets": ', "line", "malformed_json"),
    ("[1, 2]", "line", "malformed_json"),
    ({k: v for k, v in frow("Q").items() if k != "inputs"}, "inputs", "missing_field"),
    ({**frow("Q"), "targets": 5}, "targets", "not_a_string"),
    ({**frow("Q"), "task_name": ["x"]}, "task_name", "not_a_string"),
    (frow("   \n "), "inputs", "empty_question"),
    ({**frow("Q"), "task_source": "Bogus"}, "task_source", "unknown_value"),
    ({**frow("Q"), "template_type": "zero"}, "template_type", "unknown_value"),
    (
        {"inputs": "Q", "targets": "t", "task_name": "x", "template_type": "zs_opt"},
        "task_source",
        "missing_field",
    ),
]


@pytest.mark.parametrize(("bad", "field", "reason"), BAD_LINES)
def test_bad_record_raises_naming_file_line_and_field(
    tmp_path: Path, bad: Any, field: str, reason: str
) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [frow("ok"), bad, frow("ok2")])
    with pytest.raises(BadRecordError) as e:
        rows_of(str(path))
    assert e.value.where == f"{path}:2" and e.value.field == field
    message = str(e.value)
    assert message.startswith(f"{path}:2: field {field!r}") and "--skip-bad-records" in message
    assert "\n" not in message


@pytest.mark.parametrize(("bad", "field", "reason"), BAD_LINES)
def test_bad_record_skipped_recorded_and_counted(tmp_path: Path, bad: Any, field: str, reason: str) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [frow("ok"), bad, frow("ok2")])
    rejected: list[Rejection] = []
    stats = SourceStats()
    rows = list(Source([str(path)], skip_bad_records=True).iter_rows(rejected.append, stats))
    assert [r.question for r in rows] == ["ok", "ok2"]
    assert stats.bad_records == 1 and stats.rows_read == 3
    (rej,) = rejected
    assert (rej.id, rej.stage, rej.reason) == (f"{path}:2", "source", reason)
    assert field in rej.detail
    line = rej.to_dict()
    assert set(line) == {"id", "stage", "reason", "detail", "record"}
    json.dumps(line)
    if reason == "malformed_json" and isinstance(bad, str) and not bad.startswith("["):
        assert line["record"] == {"raw": bad}


def test_bad_parquet_row_names_row(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    pq.write_table(pa.Table.from_pylist([frow("Q1"), frow("")]), path)
    with pytest.raises(BadRecordError) as e:
        rows_of(str(path))
    assert e.value.where == f"{path}[1]" and e.value.field == "inputs"


# ---- missing paths, unsupported files, the Hub -----------------------------------------------------------
def test_nonexistent_path_names_it(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.jsonl")
    with pytest.raises(SourceError, match="does not exist") as e:
        Source([missing])
    assert missing in str(e.value)


def test_glob_matching_nothing_names_it(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="matches no data files") as e:
        Source([str(tmp_path / "*.parquet")])
    assert str(tmp_path) in str(e.value)


def test_unsupported_file_and_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(SourceError, match="unsupported type"):
        Source([str(tmp_path / "data.csv")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="holds no"):
        Source([str(tmp_path / "empty")])


def test_broken_parquet_is_a_source_error(tmp_path: Path) -> None:
    (tmp_path / "x.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(SourceError, match="not a readable Parquet"):
        rows_of(str(tmp_path / "x.parquet"))


def test_unreachable_hub_id_fails_fast_with_a_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    def no_download(*a: Any, **k: Any) -> None:
        raise AssertionError("load_dataset must not be tried once the probe failed")

    monkeypatch.setattr(datasets, "load_dataset", no_download)
    source = Source(["someone/flan-dump"])  # HF_HUB_OFFLINE=1 (conftest)
    with pytest.raises(SourceError) as e:
        source.check()
    message = str(e.value)
    assert "'someone/flan-dump' could not be reached" in message
    for hint in ("check the id", "HF_TOKEN", "--source"):
        assert hint in message
    with pytest.raises(SourceError, match="could not be reached"):
        list(source.iter_rows())


def test_hub_probe_network_error_becomes_source_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import HfApi

    calls: list[float] = []

    def refuse(self: Any, repo_id: str, *, timeout: float | None = None, **k: Any) -> None:
        calls.append(timeout or 0.0)
        raise ConnectionError("[Errno -2] Name or service not known")

    monkeypatch.setattr(HfApi, "dataset_info", refuse)
    with pytest.raises(SourceError, match="Name or service not known"):
        Source(["someone/flan-dump:validation"]).check()
    assert len(calls) == 1 and 0 < calls[0] <= 30  # one probe with a short timeout, no retry loop


def test_empty_source_list_is_the_flan_v2_preset() -> None:
    source = Source([])
    assert [p.target for p in source.parts] == list(FLAN_V2_PRESET)
    assert all("submix_original" in p for p in FLAN_V2_PRESET) and not any(
        "dialog" in p for p in FLAN_V2_PRESET
    )
    with pytest.raises(SourceError, match="conceptofmind/cot_submix_original"):
        source.check()


def test_path_like_spec_is_never_a_hub_id(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        Source(["data/flan.parquet"])


class _FakeHub:
    """Stands in for the Hub: dataset_info succeeds, load_dataset streams given rows (or fails midway)."""

    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch,
        rows: list[dict[str, Any]],
        fail_after: int | None = None,
        files: tuple[str, ...] = (),
    ):
        import datasets
        from huggingface_hub import HfApi

        self.calls: list[dict[str, Any]] = []
        siblings = [SimpleNamespace(rfilename=f) for f in files]
        monkeypatch.setattr(
            HfApi, "dataset_info", lambda api, repo_id, **k: SimpleNamespace(siblings=siblings)
        )

        def load_dataset(repo_id: str, **kw: Any) -> Any:
            self.calls.append({"repo_id": repo_id, **kw})

            def stream() -> Any:
                for i, r in enumerate(rows):
                    if fail_after is not None and i == fail_after:
                        raise ConnectionError("connection reset by peer")
                    yield r

            return stream()

        monkeypatch.setattr(datasets, "load_dataset", load_dataset)


def test_hub_rows_are_streamed_with_provenance(monkeypatch: pytest.MonkeyPatch) -> None:
    hub = _FakeHub(monkeypatch, [frow("Q1", "t0"), frow("Q2", "dialog"), frow("Q3", "t0")])
    stats = SourceStats()
    rows = list(Source(["someone/flan:validation"]).iter_rows(stats=stats))
    assert [(r.question, r.where) for r in rows] == [("Q1", "someone/flan[0]"), ("Q3", "someone/flan[2]")]
    assert stats.dialog_skipped == 1
    assert hub.calls == [{"repo_id": "someone/flan", "split": "validation", "streaming": True}]


def test_open_orca_flan_preset_streams_zero_shot_folders(monkeypatch: pytest.MonkeyPatch) -> None:
    seqio = {
        "inputs": "Q",
        "targets": "A",
        "_task_source": "NIv2",
        "_task_name": "task1_x",
    }  # no template column
    files = tuple(f"{folder}/part.0.parquet" for folder in OPEN_ORCA_FLAN_LAYOUT)
    hub = _FakeHub(monkeypatch, [seqio], files=files)
    rows = list(Source(["open-orca-flan"]).iter_rows())
    folders = [c["data_files"].split("/")[0] for c in hub.calls]
    assert folders == [
        "cot_zsopt_data",
        "niv2_zsopt_data",
        "flan_zsopt_data",
        "flan_zsnoopt_data",
        "t0_zsopt_data",
        "t0_zsnoopt_data",
    ]
    assert [r.template_type for r in rows] == ["zs_opt", "zs_opt", "zs_opt", "zs_noopt", "zs_opt", "zs_noopt"]
    assert rows[0].where == "Open-Orca/FLAN/cot_zsopt_data[0]"


def test_missing_hub_folder_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    files = tuple(
        f"{folder}/part.0.parquet" for folder in OPEN_ORCA_FLAN_LAYOUT if folder != "t0_zsnoopt_data"
    )
    _FakeHub(monkeypatch, [], files=files)
    with pytest.raises(
        SourceError, match=r"'Open-Orca/FLAN' has no folder 't0_zsnoopt_data' \(it has: cot_fsopt"
    ):
        Source(["open-orca-flan"]).check()


def test_source_target_columns(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "dump.jsonl",
        [
            {
                "source": "Q?",
                "target": "A",
                "task_source": "Flan2021",
                "task_name": "glue/rte:2.0.0",
                "template_type": "zs_opt",
            }
        ],
    )
    [row] = list(Source([str(path)]).iter_rows())
    assert (row.question, row.target, row.submix) == ("Q?", "A", "flan")


def test_hub_stream_failing_midway_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _FakeHub(monkeypatch, [frow("Q1"), frow("Q2")], fail_after=1)
    with pytest.raises(SourceError, match=r"reading stopped at row 1 .*connection reset"):
        list(Source(["someone/flan"]).iter_rows())


def test_task_keys_read_only_metadata_columns_of_parquet(monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow.parquet as pq_module

    asked: list[list[str] | None] = []
    original = pq_module.ParquetFile.iter_batches

    def spy(self: Any, *a: Any, **k: Any) -> Any:
        asked.append(k.get("columns"))
        return original(self, *a, **k)

    monkeypatch.setattr(pq_module.ParquetFile, "iter_batches", spy)
    source = Source([str(SAMPLE / "t0_submix_seqio.parquet")])
    keys = list(source.iter_task_keys())
    assert asked and all(
        cols is not None and "inputs" not in cols and "targets" not in cols for cols in asked
    )
    rows = list(source.iter_rows())
    assert [(r.submix, r.task_name, r.template_type) for r in rows] == keys
    assert source.column_read(0)


def test_task_keys_of_json_lines_read_every_row() -> None:
    source = Source([str(SAMPLE / "cot_submix.jsonl")])
    keys = list(source.iter_task_keys())
    assert keys == [(r.submix, r.task_name, r.template_type) for r in source.iter_rows()]
    assert not source.column_read(0)
