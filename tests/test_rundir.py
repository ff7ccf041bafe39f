"""The run directory's owner: its names, atomic and appending writers, JSONL readers with file:line errors."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from tracegen import rundir
from tracegen.errors import RunDirError
from tracegen.records import Record
from tracegen.rundir import (
    AtomicFile,
    RunPaths,
    iter_records,
    read_json,
    read_jsonl,
    read_jsonl_numbered,
    read_manifest,
    read_plan,
    write_json,
    write_jsonl,
    write_manifest,
)

SRC = Path(rundir.__file__).parent


def test_named_paths(tmp_path: Path) -> None:
    p = RunPaths(tmp_path)
    assert p.plan == tmp_path / "plan.jsonl"
    assert p.manifest == tmp_path / "manifest.json"
    assert p.traces == tmp_path / "traces.jsonl"
    assert p.failed == tmp_path / "failed.jsonl"
    assert p.rejected == tmp_path / "rejected.jsonl"
    assert p.ledger == tmp_path / "ledger.jsonl"
    assert p.stats == tmp_path / "stats.json"
    assert p.plan_stats == tmp_path / "plan_stats.json"
    assert p.requests == tmp_path / "requests.jsonl"
    assert p.clean == tmp_path / "clean.jsonl"
    assert p.clean_stats == tmp_path / "clean_stats.json"
    assert p.batches == tmp_path / "batches.jsonl"
    assert p.batch_parts == tmp_path / "batches"
    assert p.dedup_state == tmp_path / "dedup_state.npz"
    assert p.report == tmp_path / "report.html"
    assert p.dataset == tmp_path / "dataset"
    assert p.lock == tmp_path / ".tracegen.lock"
    assert p.stage("cot") == tmp_path / "stages" / "cot"


def _string_literals(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
    ]


def test_no_run_dir_file_name_is_spelled_outside_the_owner() -> None:
    names = {
        rundir.PLAN, rundir.PLAN_STATS, rundir.REQUESTS, rundir.MANIFEST, rundir.TRACES, rundir.FAILED,
        rundir.REJECTED, rundir.LEDGER, rundir.STATS, rundir.BATCHES, rundir.CLEAN, rundir.CLEAN_STATS,
        rundir.DEDUP_STATE, rundir.REPORT, rundir.LOCK_NAME,
    }  # fmt: skip
    spelled = {
        f"{path.relative_to(SRC)}: {lit}"
        for path in SRC.rglob("*.py")
        if path.name not in {"rundir.py", "lock.py"} and "testing" not in path.parts
        for lit in _string_literals(path)
        if lit in names
    }
    assert spelled == set()


def test_write_jsonl_then_read_it_back(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    rows = [{"a": 1, "text": "é ✓"}, {"b": [1, 2]}, {"c": None}]
    assert write_jsonl(path, rows) == 3
    assert path.read_bytes().count(b"\n") == 3
    assert list(read_jsonl(path)) == rows
    assert not path.with_name("x.jsonl.tmp").exists()


def test_blank_lines_skipped_and_numbered(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\n\n   \n{"a": 2}\n')
    assert list(read_jsonl_numbered(path)) == [(1, {"a": 1}), (4, {"a": 2})]


def test_an_invalid_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    path.write_bytes(b'{"a": 1}\n\n{"a": 2}\n{oops\n{"a": 3}\n')
    with pytest.raises(RunDirError, match=r"traces\.jsonl:4: not a JSON line .*fix or remove that line"):
        list(read_jsonl(path))
    # a reader that must not fail skips it
    assert list(read_jsonl(path, skip_invalid=True)) == [{"a": 1}, {"a": 2}, {"a": 3}]


def test_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2}\n{"a": ')
    with pytest.raises(RunDirError, match=r"traces\.jsonl:3:"):
        list(read_jsonl(path))
    assert list(read_jsonl(path, torn_tail_ok=True)) == [{"a": 1}, {"a": 2}]
    # a bad line that is not the last one is still an error
    path.write_bytes(b'{"a": 1}\n{"a": \n{"a": 2}')
    with pytest.raises(RunDirError, match=r"traces\.jsonl:2:"):
        list(read_jsonl(path, torn_tail_ok=True))


def test_invalid_utf8_is_reported_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\n"\xff\xfe"\n')
    with pytest.raises(RunDirError, match=r"x\.jsonl:2: .*utf-8"):
        list(read_jsonl(path))


def test_records_and_plan(tmp_path: Path) -> None:
    recs = [Record(id=f"cot.{i}", submix="cot", question=f"Q{i}") for i in range(3)]
    write_jsonl(RunPaths(tmp_path).plan, [r.to_dict() for r in recs])
    assert [r.to_dict() for r in read_plan(tmp_path)] == [r.to_dict() for r in recs]
    with RunPaths(tmp_path).plan.open("a") as f:
        f.write('["not", "a", "record"]\n')
    with pytest.raises(RunDirError, match=r"plan\.jsonl:4: not a Record line .*plan the run again"):
        list(read_plan(tmp_path))
    with pytest.raises(RunDirError, match=r"cannot read the plan .*plan the run first"):
        read_plan(tmp_path / "missing")
    other = tmp_path / "clean.jsonl"
    other.write_text('{"id": "x", "submix": "cot", "question": "Q"}\n"just a string"\n')
    with pytest.raises(RunDirError, match=r"clean\.jsonl:2: not a Record line \(not a JSON object\)"):
        list(iter_records(other))


def test_manifest_round_trip(tmp_path: Path) -> None:
    assert read_manifest(tmp_path) is None
    write_manifest(tmp_path, {"plan_params": {"n": 3}, "teacher": {"model": "m"}})
    assert read_manifest(tmp_path) == {"plan_params": {"n": 3}, "teacher": {"model": "m"}}
    RunPaths(tmp_path).manifest.write_text("[1, 2]\n")
    with pytest.raises(RunDirError, match=r"manifest\.json: not a JSON object"):
        read_manifest(tmp_path)
    RunPaths(tmp_path).manifest.write_text("{broken")
    with pytest.raises(RunDirError, match=r"manifest\.json:1: not valid JSON"):
        read_manifest(tmp_path)


def test_write_json_is_atomic_and_readable(tmp_path: Path) -> None:
    path = tmp_path / "stats.json"
    write_json(path, {"b": 1, "a": {1: 2}}, sort_keys=True)
    text = path.read_text()
    assert text.endswith("}\n") and text.index('"a"') < text.index('"b"')
    assert read_json(path) == {"a": {"1": 2}, "b": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["stats.json"]


def test_atomic_file_commits_or_leaves_the_target_alone(tmp_path: Path) -> None:
    path = tmp_path / "clean.jsonl"
    path.write_bytes(b"old\n")
    with pytest.raises(RuntimeError), AtomicFile(path) as f:
        f.write(b"half")
        raise RuntimeError("boom")
    assert path.read_bytes() == b"old\n" and not f.tmp.exists()
    with AtomicFile(path) as f:
        f.write(b"new\n")
    assert path.read_bytes() == b"new\n" and not f.tmp.exists()


def test_atomic_file_turns_a_full_disk_into_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "clean.jsonl"
    path.write_bytes(b"old\n")

    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rundir.os, "fsync", no_space)
    with pytest.raises(
        RunDirError, match=r"clean\.jsonl: cannot write \(No space left on device\); free disk"
    ):
        write_jsonl(path, [{"a": 1}])
    assert path.read_bytes() == b"old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean.jsonl"]


def test_symlinks_are_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside.jsonl"
    outside.write_bytes(b'{"secret": 1}\n')
    run = tmp_path / "run"
    run.mkdir()
    os.symlink(outside, RunPaths(run).traces)
    with pytest.raises(RunDirError, match="symbolic link"):
        list(read_jsonl(RunPaths(run).traces))
    # a writer does not follow a planted temp-file link either
    os.symlink(outside, run / "clean.jsonl.tmp")
    with pytest.raises(RunDirError, match="symbolic link"):
        write_jsonl(RunPaths(run).clean, [{"a": 1}])
    assert outside.read_bytes() == b'{"secret": 1}\n'


def test_engine_run_dir_uses_the_owner(tmp_path: Path) -> None:
    from tracegen.engine import RunDir

    rd = RunDir.open(tmp_path / "run")
    assert rd.paths == RunPaths(tmp_path / "run")
    assert rd.traces_path == rd.paths.traces and rd.manifest_path == rd.paths.manifest
    assert read_manifest(rd.path) == rd.manifest
