"""``--shard auto``: the shard from a scheduler's array index (SLURM job arrays, Kubernetes indexed Jobs)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tracegen.cli import app
from tracegen.config import RunConfig, load_config
from tracegen.errors import ConfigError
from tracegen.shards import shard_from_scheduler

SAMPLE = str(Path(__file__).resolve().parents[1] / "examples" / "flan_sample")


@pytest.mark.parametrize(
    ("env", "count", "shard"),
    [
        ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "0"}, None, "1/4"),
        ({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"}, None, "4/4"),
        ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}, None, "4/4"),
        (
            {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "0",
             "SLURM_ARRAY_TASK_STEP": "2"},
            None,
            "3/3",
        ),
        ({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "8"}, 3, "3/3"),  # --shard-count wins
        ({"JOB_COMPLETION_INDEX": "0"}, 5, "1/5"),
        ({"JOB_COMPLETION_INDEX": "4"}, 5, "5/5"),
    ],
)  # fmt: skip
def test_shard_from_scheduler(env: dict[str, str], count: int | None, shard: str) -> None:
    assert shard_from_scheduler(env, count) == shard


@pytest.mark.parametrize(
    ("env", "count", "says"),
    [
        ({}, None, "no scheduler array index"),
        ({"JOB_COMPLETION_INDEX": "2"}, None, "--shard-count"),
        ({"JOB_COMPLETION_INDEX": "5"}, 5, "not in 0..4"),
        ({"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "4"}, None, "not an integer"),
        ({"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "0"}, None, "--array=0-3"),
        ({"SLURM_ARRAY_TASK_ID": "1"}, None, "--shard-count"),
    ],
)  # fmt: skip
def test_shard_auto_errors_say_what_to_set(env: dict[str, str], count: int | None, says: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        shard_from_scheduler(env, count)
    assert says in str(info.value) and "\n" not in str(info.value)


def test_load_config_resolves_auto_from_its_environment() -> None:
    env = {"JOB_COMPLETION_INDEX": "1", "TRACEGEN_SHARD_COUNT": "3"}
    assert load_config(None, {"shard": "auto"}, env=env).shard == "2/3"
    assert load_config(None, {"shard": "auto", "shard_count": 4}, env=env).shard == "2/4"  # flag > env
    assert load_config(None, {}, env={"TRACEGEN_SHARD": "auto", "SLURM_ARRAY_TASK_ID": "0",
                                      "SLURM_ARRAY_TASK_COUNT": "2"}).shard == "1/2"  # fmt: skip
    with pytest.raises(ConfigError, match="TRACEGEN_SHARD_COUNT"):
        load_config(None, {"shard": "auto"}, env={"JOB_COMPLETION_INDEX": "0"})
    assert load_config(None, {}, env={"SLURM_ARRAY_TASK_ID": "0"}).shard is None  # never implicit


def test_python_api_resolves_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "0")
    assert RunConfig(shard="auto").shard_index() == (2, 3)


def test_an_array_task_plans_the_same_shard_as_shard_k_n(tmp_path: Path) -> None:
    runner = CliRunner()
    common = ["run", "-s", SAMPLE, "--n", "30", "--seed", "3", "--dry-run"]
    explicit = runner.invoke(app, [*common, "--shard", "2/3", "-o", str(tmp_path / "k")])
    assert explicit.exit_code == 0, explicit.output
    env = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "0"}
    auto = runner.invoke(app, [*common, "--shard", "auto", "-o", str(tmp_path / "a")], env=env)
    assert auto.exit_code == 0, auto.output
    assert (tmp_path / "a" / "plan.jsonl").read_bytes() == (tmp_path / "k" / "plan.jsonl").read_bytes()
    bad = runner.invoke(app, [*common, "--shard", "auto", "-o", str(tmp_path / "b")], env={})
    assert bad.exit_code == 1 and "--shard auto" in bad.output
