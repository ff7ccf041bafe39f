"""clean(hand_off=True) hands its kept records to the export and what the report counts of traces.jsonl and
rejected.jsonl to the report (tracegen.cleaning.handoff): the files and the report data must be exactly what
reading the files again gives, and a file changed since is read again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tracegen.cleaning import handoff
from tracegen.cleaning.postprocess import clean
from tracegen.publish.export import export
from tracegen.records import Record
from tracegen.report import collect

BASE = Record(id="flan.0", submix="flan", question="Q?", target="yes", model="gpt-4o-mini", cost_usd=0.001)
WORDS = [f"w{c}" for c in "abcdefghijklmnopqrs"]


def _response(i: int) -> str:
    if i % 7 == 3:
        return ""  # the filters reject an empty answer
    k = i if i % 3 else i // 3  # every third answer repeats an earlier one: dedup drops it
    return "Yes. " + " ".join(WORDS[(k + j) % len(WORDS)] + str(k) for j in range(30))


def make_run(run: Path, n: int) -> Path:
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"config": {"model": "gpt-4o-mini"}}), encoding="utf-8")
    rows = []
    for i in range(n):
        question = f"Is {i} a number? OPTIONS:\n- yes\n- no"
        rows.append(replace(BASE, id=f"r{i}", submix=["cot", "niv", "flan", "t0"][i % 4], question=question,
                            response=_response(i), key=""))  # fmt: skip
    lines = [dict(r.to_dict(), answered_at=1000.0 + i / 100, latency_s=0.5) for i, r in enumerate(rows)]
    (run / "traces.jsonl").write_text("".join(json.dumps(d) + "\n" for d in lines), encoding="utf-8")
    engine = [
        {
            "id": "p1",
            "stage": "plan",
            "reason": "contaminated",
            "record": {"eval_set": "mmlu", "question": "Q"},
        },
        {"id": "p2", "stage": "plan", "reason": "few_shot", "detail": "d", "record": {"question": "Q2"}},
        {"id": "g1", "stage": "generate", "reason": "length", "record": "not an object"},
    ]
    (run / "rejected.jsonl").write_text("".join(json.dumps(e) + "\n" for e in engine), encoding="utf-8")
    return run


@pytest.fixture(autouse=True)
def _no_notes() -> Iterator[None]:
    for kind in ("kept", "traces", "rejected"):
        handoff.forget(kind)
    yield
    for kind in ("kept", "traces", "rejected"):
        handoff.forget(kind)


def _dataset(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()
            and p.name not in ("export.json", "README.md")}  # fmt: skip


def test_notes_give_the_same_export_and_report(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", 300)
    result = clean(run, hand_off=True)
    assert result.rejected_by_filter and result.removed_by_dedup  # both kinds of lines clean writes
    assert max(result.removed_by_dedup.values()) > 40  # past the report's reservoir of 40 per reason
    assert handoff.noted("kept", run / "clean.jsonl") is not None  # taken once: gone after this
    clean(run, hand_off=True)
    noted = export(run, tmp_path / "noted", formats=["openorca", "full"])
    from_notes = json.dumps(collect(run, seed=5))
    for kind in ("kept", "traces", "rejected"):
        assert handoff._notes.get(kind) is None  # every note was used (and dropped)
    reread = export(run, tmp_path / "reread", formats=["openorca", "full"])
    assert reread.rows == noted.rows == result.kept
    assert _dataset(tmp_path / "noted") == _dataset(tmp_path / "reread")
    assert json.dumps(collect(run, seed=5)) == from_notes


def test_no_notes_without_hand_off_and_none_for_a_changed_file(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", 30)
    clean(run)
    assert not handoff._notes
    clean(run, hand_off=True)
    with (run / "traces.jsonl").open("a", encoding="utf-8") as f:
        f.write("\n")  # the same lines, but not the file clean read
    assert handoff.noted("traces", run / "traces.jsonl") is None
    assert handoff.noted("rejected", run / "rejected.jsonl") is not None


def test_an_unreadable_trace_line_leaves_traces_to_the_report(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", 30)
    with (run / "traces.jsonl").open("a", encoding="utf-8") as f:
        f.write('{"id": "torn", "submix": \n')
    clean(run, hand_off=True)
    assert handoff.noted("traces", run / "traces.jsonl") is None  # the report's reader skips it itself
    assert handoff.noted("kept", run / "clean.jsonl") is not None
