"""clean(): plan order, filters + answer check + dedup, atomic idempotent outputs, rejected.jsonl rewrite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.clean import (
    answered,
    basic_run,
    engine_rejection,
    long_text,
    make_run_dir,
    planned,
    read_jsonl,
    write_jsonl,
)
from tracegen.cleaning.dedup import DedupConfig
from tracegen.cleaning.filters import FilterConfig
from tracegen.cleaning.postprocess import clean, iter_jsonl, plan_order
from tracegen.errors import RunDirError


def test_clean_keeps_plan_order_and_counts(tmp_path: Path) -> None:
    run = basic_run(tmp_path)
    result = clean(run)
    kept = read_jsonl(run / "clean.jsonl")
    ids = [r["id"] for r in kept]
    assert ids == sorted(ids, key=lambda s: int(s.split(".")[1]))  # plan order, not completion order
    assert ids == [f"flan.{i}" for i in (0, 1, 5, 8, 10, 12, 13, 14, 15, 16, 17, 18, 19)]
    # flan.5 comes first in plan order, so flan.6 (same response) is the duplicate that goes.
    assert result.rejected_by_filter == {
        "empty": 1,
        "truncated": 1,
        "refusal": 1,
        "asks_question": 1,
        "too_short": 1,
    }
    assert result.removed_by_dedup == {"exact_response": 1}
    assert result.kept == 13 and result.records == 19 and result.traces_lines == 19
    data = result.to_dict()
    assert data["rows_per_submix"] == {"flan": 13}
    assert sum(data["rows_per_system_message"].values()) == 13
    assert set(data["rows_per_system_message"]) == {"1", "3"}
    assert data["kept_completion_tokens"] == 13 * 120
    assert data["filters"]["min_response_chars"] == 10 and data["dedup"]["response_lsh"]["bands"] == 8
    stats = json.loads((run / "clean_stats.json").read_text())
    assert stats == json.loads(json.dumps(data))
    assert str(tmp_path) not in (run / "clean_stats.json").read_text()  # no local paths in stats
    assert (run / "dedup_state.npz").is_file()
    assert not list(run.glob("*.tmp"))


def test_rejected_rewrite_keeps_engine_lines_and_is_idempotent(tmp_path: Path) -> None:
    run = basic_run(tmp_path)
    # A stale filter line from an earlier clean with other settings must disappear.
    stale = engine_rejection(planned(19), "filter", "refusal")
    with open(run / "rejected.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(stale) + "\n")
    clean(run)
    first = {
        name: (run / name).read_bytes() for name in ("clean.jsonl", "rejected.jsonl", "clean_stats.json")
    }
    rows = read_jsonl(run / "rejected.jsonl")
    engine = [(r["id"], r["stage"]) for r in rows if r["stage"] in ("source", "plan", "generate")]
    assert engine == [("flan.11", "generate"), ("flan.12", "plan")]
    mine = [(r["id"], r["stage"], r["reason"]) for r in rows if r["stage"] in ("filter", "dedup")]
    assert ("flan.19", "filter", "refusal") not in mine
    assert ("flan.6", "dedup", "exact_response") in mine and len(mine) == 6
    assert all(r["record"]["id"] == r["id"] and r["detail"] for r in rows)
    clean(run)
    second = {name: (run / name).read_bytes() for name in first}
    assert first == second


def test_filter_and_dedup_settings_apply(tmp_path: Path) -> None:
    run = basic_run(tmp_path)
    result = clean(
        run,
        FilterConfig(refusal=False, asks_question=False),
        DedupConfig(exact_response=False, near_response=False),
    )
    ids = [r["id"] for r in read_jsonl(run / "clean.jsonl")]
    assert {"flan.4", "flan.6", "flan.7"} <= set(ids)
    assert "refusal" not in result.rejected_by_filter and result.removed_by_dedup == {}
    # Running again with the defaults replaces those results (and their rejected lines) completely.
    clean(run)
    assert "flan.4" not in [r["id"] for r in read_jsonl(run / "clean.jsonl")]


def test_answer_check_annotates_and_can_drop_disagreements(tmp_path: Path) -> None:
    q = "Is the sky blue?\nOPTIONS:\n- yes\n- no"
    plan = [planned(i, question=f"({i}) {q}", target="yes") for i in range(4)]
    traces = [
        answered(plan[0], response="Yes, the sky is blue because of Rayleigh scattering of sunlight."),
        answered(plan[1], response="No. The sky is actually green, as everybody can see on a clear day."),
        answered(plan[2], response="The sky's colour depends on the time of day and the weather outside."),
        answered(plan[3], response="Yes. Sunlight scatters off air molecules, blue light the most of all."),
    ]
    run = make_run_dir(tmp_path / "run", plan, traces)
    result = clean(run)
    kept = {r["id"]: r["agrees_with_target"] for r in read_jsonl(run / "clean.jsonl")}
    assert kept == {"flan.0": True, "flan.1": False, "flan.2": None, "flan.3": True}
    assert result.agreement_kept == {"true": 2, "false": 1, "null": 1}
    result = clean(run, FilterConfig(answer_disagrees=True))
    assert [r["id"] for r in read_jsonl(run / "clean.jsonl")] == ["flan.0", "flan.2", "flan.3"]
    assert result.rejected_by_filter == {"answer_disagrees": 1}
    assert result.agreement_all == {"true": 2, "false": 1, "null": 1}
    off = clean(run, answer_check=False)
    assert off.agreement_kept == {"true": 0, "false": 0, "null": 4}


def test_torn_last_line_duplicate_ids_and_unplanned(tmp_path: Path) -> None:
    plan = [planned(i) for i in range(5)]
    run = make_run_dir(tmp_path / "run", plan, [answered(r) for r in plan], shuffle_seed=None)
    extra = answered(planned(99, submix="niv"))  # answered but not in the plan
    again = answered(plan[1], response=long_text(777))  # id flan.1 answered a second time
    with open(run / "traces.jsonl", "ab") as f:
        f.write((json.dumps(extra.to_dict()) + "\n").encode())
        f.write((json.dumps(again.to_dict()) + "\n").encode())
        f.write(b'{"id": "flan.4", "submix": "flan", "question": "tor')  # crash mid-write
    result = clean(run)
    kept = read_jsonl(run / "clean.jsonl")
    assert [r["id"] for r in kept] == ["flan.0", "flan.1", "flan.2", "flan.3", "flan.4", "niv.99"]
    assert kept[1]["response"] == again.response  # the last answer of an id wins
    assert result.unreadable_lines == 1 and result.duplicate_ids == 1 and result.not_in_plan == 1
    assert result.removed_by_dedup == {"duplicate_id": 1}
    dup = [r for r in read_jsonl(run / "rejected.jsonl") if r["reason"] == "duplicate_id"]
    assert len(dup) == 1 and dup[0]["id"] == "flan.1" and dup[0]["record"]["response"] != again.response


def test_corrupt_middle_line_is_skipped_and_counted(tmp_path: Path) -> None:
    plan = [planned(i) for i in range(3)]
    run = make_run_dir(tmp_path / "run", plan, [answered(r) for r in plan], shuffle_seed=None)
    lines = (run / "traces.jsonl").read_bytes().splitlines(keepends=True)
    lines[1] = lines[1][:40] + b"\n"  # cut short but newline-terminated
    (run / "traces.jsonl").write_bytes(b"".join(lines))
    result = clean(run)
    assert [r["id"] for r in read_jsonl(run / "clean.jsonl")] == ["flan.0", "flan.2"]
    assert result.unreadable_lines == 1 and result.records == 2 and result.kept == 2


def test_without_plan_file_order_is_used(tmp_path: Path) -> None:
    plan = [planned(i) for i in range(6)]
    run = make_run_dir(tmp_path / "run", plan, [answered(r) for r in plan], shuffle_seed=3)
    (run / "plan.jsonl").unlink()
    clean(run)
    traces_ids = [r["id"] for r in read_jsonl(run / "traces.jsonl")]
    assert [r["id"] for r in read_jsonl(run / "clean.jsonl")] == traces_ids


def test_against_other_run_state(tmp_path: Path) -> None:
    plan_a = [planned(i) for i in range(5)]
    run_a = make_run_dir(tmp_path / "a", plan_a, [answered(r) for r in plan_a])
    clean(run_a)
    # Run B asks two of A's questions again (other ids) and three new ones.
    plan_b = [planned(100 + i, question=plan_a[i].question) for i in range(2)]
    plan_b += [planned(200 + i) for i in range(3)]
    run_b = make_run_dir(tmp_path / "b", plan_b, [answered(r) for r in plan_b])
    alone = clean(run_b)
    assert alone.kept == 5
    result = clean(run_b, against=[run_a / "dedup_state.npz"])
    assert result.kept == 3 and result.removed_by_dedup == {"exact_pair": 2}


def test_missing_traces_is_a_run_dir_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match=r"no traces\.jsonl"):
        clean(tmp_path / "empty")


def test_empty_traces_gives_empty_clean(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run", [planned(0)], [])
    result = clean(run)
    assert result.kept == 0 and (run / "clean.jsonl").read_bytes() == b""


def test_plan_order_index_and_iter_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "plan.jsonl"
    write_jsonl(path, [planned(i).to_dict() for i in (5, 3, 5, 9)], tail=b'{"id": "flan.')
    index = plan_order(path)
    assert index.size == 4 and index.hashes.size == 3  # flan.5 twice: first position wins
    rows = list(iter_jsonl(path))
    assert [r["id"] for r in rows] == ["flan.5", "flan.3", "flan.5", "flan.9"]
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"id": 1}\nnot json\n{"id": 2}\n')
    with pytest.raises(RunDirError, match=r"bad\.jsonl:2"):
        list(iter_jsonl(bad))
