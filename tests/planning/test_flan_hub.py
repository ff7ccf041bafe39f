"""Both FLAN v2 presets planned end to end through ``datasets`` streaming from the fake Hub (HF_ENDPOINT).

Each test builds tiny replicas of the public layouts in the in-package fake Hub and runs the CLI in a child
process whose HF_ENDPOINT points at it (huggingface_hub reads the endpoint at import time).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.flan import REPO
from tracegen.planning.sources import FLAN_V2_DPI_PRESET, FLAN_V2_PRESET, OPEN_ORCA_FLAN_LAYOUT
from tracegen.testing.fake_hub import FakeHub
from tracegen.testing.flan_hub import open_orca_flan_files, submix_original_files


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as fake:
        yield fake


def _plan(hub: FakeHub, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update(
        HF_ENDPOINT=hub.endpoint,
        HF_HUB_OFFLINE="0",
        HF_HOME=str(tmp_path / "hf"),
        HF_DATASETS_CACHE=str(tmp_path / "hf" / "datasets"),
        PYTHONPATH=str(REPO / "src"),
    )
    cmd = [
        sys.executable,
        "-m",
        "tracegen.cli",
        "run",
        "--dry-run",
        "--output-dir",
        str(tmp_path / "run"),
        *args,
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _stats(tmp_path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((tmp_path / "run" / "plan_stats.json").read_text())
    return data


def _records(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "run" / "plan.jsonl").read_text().splitlines()]


def test_open_orca_flan_preset_plans_from_the_hub(hub: FakeHub, tmp_path: Path) -> None:
    files = open_orca_flan_files(rows_per_folder=24)
    hub.add_dataset("Open-Orca/FLAN", files)
    done = _plan(hub, tmp_path, "--source", "open-orca-flan", "--n", "60", "--mix", "uniform")
    assert done.returncode == 0, done.stderr[-2000:]
    stats, records = _stats(tmp_path), _records(tmp_path)
    assert stats["planned_total"] == len(records) == 60 and stats["source_passes"] == 1
    assert stats["task_sizes_read"] == "columns"
    assert {r["template_type"] for r in records} == {"zs_opt", "zs_noopt"}
    assert {r["source"].split("[")[0] for r in records} <= {
        f"Open-Orca/FLAN/{f}" for f in OPEN_ORCA_FLAN_LAYOUT if "_zs" in f and not f.startswith("dialog")
    }
    for r in records:  # FLAN-rendered option lists get the multiple-choice messages, noopt folders too
        if r["submix"] == "flan":
            mc = "question" in r["question"] and "\n" in r["question"]
            assert r["system_message_id"] in ({8, 10} if mc else {3, 4, 7}), r["question"]
    served = {path for _method, path, status in hub.requests() if path.endswith(".parquet") and status < 300}
    assert not any("_fs" in path or "dialog_" in path for path in served)  # few-shot and Dialog never read


@pytest.mark.parametrize("preset", ["flan-v2", "flan-v2-dpi"])
def test_submix_original_presets_plan_from_the_hub(hub: FakeHub, tmp_path: Path, preset: str) -> None:
    repos = FLAN_V2_PRESET if preset == "flan-v2" else FLAN_V2_DPI_PRESET
    for repo_id in repos:
        submix = repo_id.split("/")[1].split("_submix")[0]
        hub.add_dataset(repo_id, submix_original_files(submix, rows=48))
    done = _plan(hub, tmp_path, "--source", preset, "--n", "40", "--mix", "uniform")
    assert done.returncode == 0, done.stderr[-2000:]
    stats, records = _stats(tmp_path), _records(tmp_path)
    assert stats["planned_total"] == 40 and stats["task_sizes_read"] == "columns"
    assert {r["submix"] for r in records} == {"cot", "niv", "flan", "t0"}
    assert {r["source"].split("[")[0] for r in records} == set(repos)
    assert not any("bigbench" in r["task_name"] for r in records)


def test_a_missing_folder_is_named(hub: FakeHub, tmp_path: Path) -> None:
    files = {p: b for p, b in open_orca_flan_files(rows_per_folder=4).items() if "t0_zsnoopt" not in p}
    hub.add_dataset("Open-Orca/FLAN", files)
    done = _plan(hub, tmp_path, "--source", "open-orca-flan", "--n", "10")
    assert done.returncode == 1
    assert "has no folder 't0_zsnoopt_data'" in done.stderr + done.stdout
    assert "HF_TOKEN" not in done.stderr + done.stdout
