"""The export's fast paths give the bytes the plain ones give: rows from clean.jsonl dicts (no Record built)
equal rows from Records, and JSON parsed into Arrow a part at a time writes the same Parquet and num_bytes as
one parse of the whole row group."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tracegen.publish import export_writers
from tracegen.publish.export import FORMATS, export
from tracegen.publish.export_records import read_record_dicts, read_records
from tracegen.records import Record
from tracegen.rundir import RunDirError

BASE = Record(
    id="flan.0",
    submix="flan",
    question="What is 2+2? " * 40,
    system_prompt="You are an AI assistant.",
    response="It is 4. " * 60,
    target="4",
    model="gpt-4o-mini",
    model_returned="tracegen-fake:gpt-4o-mini",
    prompt_tokens=12,
    completion_tokens=3,
    cost_usd=0.000123,
    finish_reason="stop",
)


def records(n: int) -> list[Record]:
    out = []
    for i in range(n):
        r = replace(BASE, id=f"flan.{i}", system_message_id=i % 16 or None, cost_usd=i * 1e-5)
        if i % 3 == 0:
            r = replace(r, train_system_prompt="", agrees_with_target=i % 2 == 0, question=f"é {i} 😀 \u2028")
        if i % 7 == 0:
            r = replace(r, stage="gpt4" if i % 2 else "gpt35")
        out.append(r)
    return out


def make_run(root: Path, lines: list[str]) -> Path:
    run = root / "run"
    run.mkdir(parents=True)
    (run / "clean.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return run


def tree(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name not in ("export.json", "README.md")
    }


def test_dicts_are_the_records_as_dicts(tmp_path: Path) -> None:
    full = records(3)
    short = {"id": "s", "submix": "cot", "question": "q", "response": "r"}  # a hand-written line: defaults
    foreign = {**full[1].to_dict(), "latency_s": 0.2}  # a key this version does not know
    unkeyed = {**full[2].to_dict(), "key": ""}  # the key is filled in from the texts
    run = make_run(tmp_path, [json.dumps(full[0].to_dict()), json.dumps(short), json.dumps(foreign),
                              json.dumps(unkeyed)])  # fmt: skip
    _, dicts = read_record_dicts(run)
    _, recs = read_records(run)
    expected = [r.to_dict() for r in recs]
    got = list(dicts)
    assert got == expected
    for fmt in FORMATS.values():
        rows = [fmt.row_of_dict(d) for d in got]
        assert [json.dumps(r) for r in rows] == [json.dumps(fmt.row(Record.from_dict(d))) for d in expected]


def test_a_line_that_is_no_record_names_its_line(tmp_path: Path) -> None:
    run = make_run(tmp_path, [json.dumps(BASE.to_dict()), json.dumps({"id": "x"}), "[1, 2]"])
    _, dicts = read_record_dicts(run)
    with pytest.raises(RunDirError, match=r"clean\.jsonl:2: not a Record line"):
        list(dicts)


@pytest.mark.parametrize("batch_rows", [10_000, 7])
def test_parsing_in_parts_writes_the_same_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch_rows: int
) -> None:
    lines = [json.dumps(r.to_dict(), ensure_ascii=False) for r in records(60)]
    formats = list(FORMATS)
    whole = export(make_run(tmp_path / "a", lines), formats=formats, batch_rows=batch_rows, shard_rows=25)
    monkeypatch.setattr(export_writers, "_PART_BYTES", 3000)  # a part every two or three rows
    parts = export(make_run(tmp_path / "b", lines), formats=formats, batch_rows=batch_rows, shard_rows=25)
    assert [c.to_dict() for c in parts.configs] == [c.to_dict() for c in whole.configs]  # num_bytes too
    assert len(whole.configs) == 3 * len(formats)  # three stages
    assert tree(parts.output_dir) == tree(whole.output_dir)
    manifest = json.loads((parts.output_dir / "export.json").read_text(encoding="utf-8"))
    assert manifest["configs"][0]["download_size"] > 0
