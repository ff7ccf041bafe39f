"""The Python API calls what the CLI calls: ``tracegen.merge`` merges staged run directories as ``tracegen merge``
does, and ``tracegen.push`` is the CLI's push (same lock, same ``PushResult``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import huggingface_hub
import pytest
from typer.testing import CliRunner

import tracegen
from tracegen import pipeline
from tracegen.cli import app
from tracegen.config import RunConfig, StageConfig
from tracegen.publish import hub
from tracegen.publish.export import load_manifest
from tracegen.publish.hub import PushResult
from tracegen.stages import stage_path
from tracegen.testing import FakeServer
from tracegen.testing.fake_hub import FakeHub

SAMPLE = str(Path(__file__).resolve().parents[1] / "examples" / "flan_sample")


def staged_shard(out: Path, base_url: str, index: int) -> Path:
    stages = [
        StageConfig(name="small", model="gpt-3.5-turbo"),
        StageConfig(name="big", model="gpt-4", count=4),
    ]
    config = RunConfig(
        source=[SAMPLE], n=16, output_dir=out, base_url=base_url, max_tokens=200, budget_usd=2.0,
        stages=stages, shard=f"{index}/2",
    )  # fmt: skip
    pipeline.run(config)
    return out


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_the_package_names_are_the_cli_functions() -> None:
    assert tracegen.merge is pipeline.merge
    assert tracegen.push is hub.push  # the CLI's push calls it too (it locks the run directory)
    import tracegen.cleaning.merge as _  # noqa: F401  (the submodule does not hide the function)

    assert tracegen.merge is pipeline.merge


def test_tracegen_merge_handles_staged_run_dirs_like_the_cli(tmp_path: Path) -> None:
    with FakeServer() as srv:
        shards = [staged_shard(tmp_path / f"s{k}", srv.base_url, k) for k in (1, 2)]
    summary = tracegen.merge(shards, tmp_path / "api")
    result = CliRunner().invoke(app, ["merge", *map(str, shards), "-o", str(tmp_path / "cli"), "--json"])
    assert result.exit_code == 0, result.output
    assert set(summary["merge"]) == {"small", "big"}
    for name in ("small", "big"):
        api_rows = rows(stage_path(tmp_path / "api", name) / "traces.jsonl")
        assert api_rows == rows(stage_path(tmp_path / "cli", name) / "traces.jsonl")
        assert len(api_rows) == sum(len(rows(stage_path(s, name) / "traces.jsonl")) for s in shards)
    exported = load_manifest(tmp_path / "api" / "dataset")
    assert {c["name"] for c in exported["configs"]} >= {"openorca-small", "openorca-big"}


def test_tracegen_push_returns_the_push_result_the_cli_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "hf_fakeTOKENforTESTS0123456789"
    with FakeServer() as srv:
        run = tmp_path / "run"
        pipeline.run(RunConfig(source=[SAMPLE], n=8, output_dir=run, base_url=srv.base_url, budget_usd=1.0))
    with FakeHub(token=token, user="tester") as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setenv("HF_TOKEN", token)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        pushed = tracegen.push(run, "tester/orca")
        assert isinstance(pushed, PushResult) and pushed.repo_id == "tester/orca" and pushed.rows > 0
        result = CliRunner().invoke(app, ["push", str(run), "tester/orca"])
        assert result.exit_code == 0, result.output
        assert pushed.url in result.output.replace("\n", "")
