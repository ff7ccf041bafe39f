"""After an export, the report samples clean.jsonl from the export's counts (tracegen.publish.clean_digest), parsing
only the rows it shows: the report data must be exactly what reading the whole file gives."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tracegen.publish import clean_digest as digest
from tracegen.publish.export import export
from tracegen.records import Record
from tracegen.report import collect

BASE = Record(id="flan.0", submix="flan", question="Q?", response="A.", model="gpt-4o-mini")


def make_run(run: Path, n: int) -> Path:
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"config": {"model": "gpt-4o-mini"}}), encoding="utf-8")
    rows = []
    for i in range(n):
        agrees = [None, True, False][i % 3] if i % 5 else None
        rows.append(replace(BASE, id=f"r{i}", submix=["cot", "niv", "flan", "t0"][i % 4], agrees_with_target=agrees,
                            question=f"question {i}", response=None if i == 7 else f"answer {i}"))  # fmt: skip
    lines = [json.dumps(r.to_dict()) + "\n" for r in rows]
    lines.insert(3, "\n")  # a blank line is no row
    (run / "clean.jsonl").write_text("".join(lines), encoding="utf-8")
    (run / "traces.jsonl").write_text("".join(lines), encoding="utf-8")
    rejected = {
        "id": "x",
        "stage": "filter",
        "reason": "too_short",
        "record": {"submix": "t0", "agrees_with_target": True},
    }
    (run / "rejected.jsonl").write_text(json.dumps(rejected) + "\n", encoding="utf-8")
    return run


@pytest.fixture(autouse=True)
def _no_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(digest, "_noted", None)


@pytest.mark.parametrize("n", [30, 1500])
def test_sampling_from_the_digest_gives_the_same_report(tmp_path: Path, n: int) -> None:
    run = make_run(tmp_path / "run", n)
    export(run, formats=["openorca"])
    noted = digest.noted(run / "clean.jsonl")
    assert noted is not None and noted.rows == n
    from_digest = json.dumps(collect(run, seed=3))
    digest.note(replace(noted, identity=(0, 0, 0, 0)))  # another file's: the report reads this one in full
    assert digest.noted(run / "clean.jsonl") is None
    assert json.dumps(collect(run, seed=3)) == from_digest
    assert len(json.loads(from_digest)["rows"]) == min(n, 400) + 1  # kept sample + the rejected row


def test_a_file_written_since_is_read_in_full(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", 20)
    export(run, formats=["openorca"])
    with (run / "clean.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps(replace(BASE, id="late", submix="cot", agrees_with_target=True).to_dict()) + "\n")
    assert digest.noted(run / "clean.jsonl") is None
    data = collect(run)
    assert data["answer_check"]["cot"]["agrees"] == 1 + sum(
        1 for i in range(20) if i % 4 == 0 and i % 5 and i % 3 == 1
    )
