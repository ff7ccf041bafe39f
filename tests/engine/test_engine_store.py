"""Run-directory IO: manifest check, resume, torn lines, a full disk, failed.jsonl compaction."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from tracegen.config import RunConfig
from tracegen.engine import RunDir, generate, request_key
from tracegen.engine import store as store_mod
from tracegen.engine.store import engine_line
from tracegen.errors import RunDirError, SettingChangedError
from tracegen.records import Record
from tracegen.testing import FakeOptions, FakeServer
from tracegen.testing import request_key as fake_request_key

PLAN = {"n": 100, "seed": 0, "mix": "orca", "source": ["flan-v2"]}


def test_manifest_written_once_and_same_params_reuse(tmp_path: Path) -> None:
    cfg = RunConfig().public_dict()
    rd = RunDir.open(tmp_path / "run", PLAN, cfg)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["plan_params"] == PLAN
    assert manifest["teacher"]["model"] == "gpt-4o-mini"
    assert "tracegen_version" in manifest and "created_at" in manifest
    again = RunDir.open(tmp_path / "run", dict(PLAN), cfg)
    assert again.manifest["plan_fingerprint"] == rd.manifest["plan_fingerprint"]


def _spend(path: Path) -> None:
    """Make the directory hold a paid answer: from then on its settings bind."""
    (path / "traces.jsonl").write_text('{"request_key":"' + "0" * 64 + '","cost_usd":0.01}\n')


def test_settings_bind_only_once_money_was_spent(tmp_path: Path) -> None:
    RunDir.open(tmp_path, PLAN, None)
    rd = RunDir.open(tmp_path, {**PLAN, "seed": 1}, None)  # a dry run spent nothing: replaced, replanned
    assert rd.replaced and rd.manifest["plan_params"]["seed"] == 1
    assert not RunDir.open(tmp_path, {**PLAN, "seed": 1}, None).replaced
    _spend(tmp_path)
    with pytest.raises(SettingChangedError):
        RunDir.open(tmp_path, PLAN, None)


def test_changed_plan_parameter_is_refused_naming_the_field(tmp_path: Path) -> None:
    RunDir.open(tmp_path, PLAN, None)
    _spend(tmp_path)
    with pytest.raises(RunDirError) as info:
        RunDir.open(tmp_path, {**PLAN, "seed": 1}, None)
    msg = str(info.value)
    assert "'seed'" in msg and "--output-dir" in msg and "--seed 0" in msg


def test_extend_lets_only_n_grow(tmp_path: Path) -> None:
    RunDir.open(tmp_path, PLAN, None)
    _spend(tmp_path)
    with pytest.raises(RunDirError) as info:
        RunDir.open(tmp_path, {**PLAN, "n": 200}, None)
    assert "--extend" in str(info.value)
    rd = RunDir.open(tmp_path, {**PLAN, "n": 200}, None, extend=True)
    assert rd.manifest["plan_params"]["n"] == 200
    with pytest.raises(RunDirError):
        RunDir.open(tmp_path, {**PLAN, "n": 150}, None, extend=True)  # n may only grow
    with pytest.raises(RunDirError):
        RunDir.open(tmp_path, {**PLAN, "n": 300, "seed": 5}, None, extend=True)


def test_changed_teacher_setting_is_refused(tmp_path: Path) -> None:
    RunDir.open(tmp_path, PLAN, RunConfig().public_dict())
    _spend(tmp_path)
    with pytest.raises(RunDirError) as info:
        RunDir.open(tmp_path, PLAN, RunConfig(model="gpt-4o").public_dict())
    assert "'model'" in str(info.value) and "--model" in str(info.value)


def test_changed_reasoning_effort_is_refused_once_money_was_spent(tmp_path: Path) -> None:
    RunDir.open(tmp_path, PLAN, RunConfig(model="gpt-5-mini", reasoning_effort="low").public_dict())
    _spend(tmp_path)
    with pytest.raises(SettingChangedError) as info:
        RunDir.open(tmp_path, PLAN, RunConfig(model="gpt-5-mini", reasoning_effort="high").public_dict())
    assert "'reasoning_effort'" in str(info.value)
    # a manifest written before the field was checked does not name it: reusing it is not refused
    manifest = tmp_path / "manifest.json"
    data = json.loads(manifest.read_text())
    data["teacher"].pop("reasoning_effort")
    manifest.write_text(json.dumps(data))
    RunDir.open(tmp_path, PLAN, RunConfig(model="gpt-5-mini", reasoning_effort="high").public_dict())


def test_unusable_directory_is_a_run_dir_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RunDirError) as info:
        RunDir.open(blocker / "run", PLAN, None)
    assert "--output-dir" in str(info.value)


def test_request_key_matches_the_fake_servers() -> None:
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "naïve café — ünïcode"}],
        "temperature": 0.7,
        "top_p": 0.95,
        "max_tokens": 10,
    }
    assert request_key(body) == fake_request_key(body)
    assert request_key({**body, "max_tokens": 11}) != request_key(body)


def test_torn_last_line_is_truncated_and_done_set_loaded(tmp_path: Path) -> None:
    rd = RunDir.open(tmp_path, None, None)
    k1, k2 = "a" * 64, "b" * 64
    good = engine_line(k1, 0.5, {"id": "cot.1"}) + engine_line(k2, 0.25, {"id": "cot.2"})
    rd.traces_path.write_bytes(good + b'{"request_key":"' + b"c" * 30)
    done = rd.load_done()
    assert k1 in done and k2 in done and ("c" * 64) not in done
    assert done.n_traces == 2
    assert done.cost_usd == 0.75
    assert rd.traces_path.read_bytes() == good


def test_engine_line_is_plain_json_with_the_key_first() -> None:
    line = engine_line("f" * 64, 0.125, {"id": "x", "cost_usd": 9.0, "response": "hi\nthere"})
    obj = json.loads(line)
    assert obj == {"request_key": "f" * 64, "cost_usd": 0.125, "id": "x", "response": "hi\nthere"}
    assert line.endswith(b"\n") and line.count(b"\n") == 1


def test_failed_compaction_keeps_last_entry_per_key_and_drops_done(tmp_path: Path) -> None:
    rd = RunDir.open(tmp_path, None, None)
    a, b = "a" * 64, "b" * 64
    rd.failed_path.write_bytes(
        engine_line(a, 0, {"attempts": 1})
        + engine_line(b, 0, {"attempts": 1})
        + engine_line(a, 0, {"attempts": 2})
    )
    done = rd.load_done()
    done.add(b)
    assert rd.compact_failed(done) == 1
    lines = [json.loads(x) for x in rd.failed_path.read_text().splitlines()]
    assert lines == [{"request_key": a, "cost_usd": 0.0, "attempts": 2}]


def _records(n: int) -> list[Record]:
    return [Record(id=f"cot.{i}", submix="cot", question=f"Disk test {i}?") for i in range(n)]


async def test_full_disk_stops_with_run_dir_error_and_leaves_complete_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write
    calls = {"n": 0}

    def flaky_write(fd: int, data: bytes | memoryview) -> int:
        calls["n"] += 1
        if calls["n"] > 3:
            # a partial write first, then the disk is full: the writer must roll the partial line back
            if len(data) > 10 and calls["n"] == 4:
                return real_write(fd, bytes(data[:10]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    run = tmp_path / "run"
    with FakeServer(FakeOptions(latency_mean_s=0.01)) as srv:
        cfg = RunConfig(base_url=srv.base_url, concurrency=8, budget_usd=1.0)
        monkeypatch.setattr(store_mod, "_os_write", flaky_write)
        with pytest.raises(RunDirError) as info:
            await generate(_records(200), cfg, run)
        assert "No space left" in str(info.value) and "free disk space" in str(info.value)
        monkeypatch.setattr(store_mod, "_os_write", real_write)
        written = run.joinpath("traces.jsonl").read_bytes()
        assert written == b"" or written.endswith(b"\n")
        keys_before = [json.loads(x)["request_key"] for x in written.splitlines()]
        # space is back: resume finishes the job, nothing is lost or written twice
        result = await generate(_records(200), cfg, run)
        assert result.stop_reason == "completed"
    keys = [json.loads(x)["request_key"] for x in run.joinpath("traces.jsonl").read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 200
    assert set(keys_before) <= set(keys)
