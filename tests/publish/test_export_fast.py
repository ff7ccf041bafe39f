"""Export builds its Arrow tables from the JSON lines (pyarrow's JSON reader) instead of ``Table.from_pylist``:
the tables, and so the Parquet files, must be exactly what from_pylist gives, edge cases included."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tracegen.publish.export import FORMATS, _arrow_table
from tracegen.records import Record
from tracegen.rundir import json_line

BASE = Record(
    id="flan.1",
    submix="flan",
    question="What is 2+2?",
    system_prompt="You are an AI assistant.",
    key="k1",
    response="4",
    target="4",
    model="gpt-4o-mini",
    prompt_tokens=12,
    completion_tokens=3,
    cost_usd=0.000123,
)

RECORDS = [
    BASE,
    replace(
        BASE, id="u", question='é\u2028 "quoted" \\ back \t tab 😀 \x00 nul', response="ünïcödé\n\nlines"
    ),
    replace(BASE, id="n", system_prompt="", train_system_prompt="", agrees_with_target=None, target=None),
    replace(BASE, id="t", train_system_prompt="short", agrees_with_target=True, system_message_id=7),
    replace(
        BASE, id="f", cost_usd=0.1 + 0.2, prompt_tokens=2**62, completion_tokens=0, agrees_with_target=False
    ),
    replace(BASE, id="e", cost_usd=1e-300, response="", question=""),
    replace(BASE, id="x", finish_reason="length", model_returned="tracegen-fake:gpt-4o-mini", stage="gpt4"),
]


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


@pytest.mark.parametrize("name", list(FORMATS))
def test_table_from_json_lines_equals_from_pylist(name: str) -> None:
    fmt = FORMATS[name]
    schema = fmt.features.arrow_schema
    rows = [fmt.row(r) for r in RECORDS]
    lines = [json_line(row) for row in rows]
    ours = _arrow_table(lines, schema)
    theirs = pa.Table.from_pylist(rows, schema=schema)
    assert ours.equals(theirs, check_metadata=True)
    assert ours.nbytes == theirs.nbytes  # export.json's num_bytes
    assert parquet_bytes(ours) == parquet_bytes(theirs)


def test_rows_the_json_reader_refuses_go_through_from_pylist() -> None:
    fmt = FORMATS["full"]
    schema = fmt.features.arrow_schema
    rows = [fmt.row(replace(BASE, cost_usd=float("nan"))), fmt.row(BASE)]  # JSON has no NaN: "NaN" is refused
    ours = _arrow_table([(json.dumps(row) + "\n").encode() for row in rows], schema)
    assert parquet_bytes(ours) == parquet_bytes(pa.Table.from_pylist(rows, schema=schema))
    # what from_pylist rejects is still rejected
    bad = {"id": 5, "system_prompt": "", "question": "q", "response": "r"}
    with pytest.raises(pa.ArrowTypeError):
        _arrow_table([(json.dumps(bad) + "\n").encode()], FORMATS["openorca"].features.arrow_schema)


def test_export_loads_neither_datasets_nor_pandas(tmp_path: Path) -> None:
    """Exporting (Parquet + JSONL + card) needs pyarrow only; checked in a fresh interpreter."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "clean.jsonl").write_text(
        "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in RECORDS), encoding="utf-8"
    )
    code = (
        "import sys; from tracegen.publish.export import export, FORMATS; "
        f"export({str(run)!r}, formats=list(FORMATS)); "
        "print(sorted(m for m in ('datasets', 'pandas', 'openai') if m in sys.modules))"
    )
    src = str(Path(__file__).resolve().parents[2] / "src")
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": src},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"
    manifest = json.loads((run / "dataset" / "export.json").read_text(encoding="utf-8"))
    assert {c["format"] for c in manifest["configs"]} == set(FORMATS)


def test_the_warm_up_touches_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tracegen.publish.export_writers import warm_up

    monkeypatch.chdir(tmp_path)
    warm_up()
    assert list(tmp_path.iterdir()) == []


def test_json_lines_are_utf8_and_fall_back_to_the_stdlib_for_huge_integers() -> None:
    row = {"q": "naïve “quotes” 😀", "n": 3, "x": 0.25}
    assert json_line(row) == '{"q":"naïve “quotes” 😀","n":3,"x":0.25}\n'.encode()
    assert json.loads(json_line({"big": 2**70})) == {"big": 2**70}
