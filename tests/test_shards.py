"""Sharded runs end to end through the CLI: disjoint plans, own run dirs and budgets, merge with one card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from tracegen.cli import app
from tracegen.publish.export import iter_rows, load_manifest

SAMPLE = str(Path(__file__).resolve().parents[1] / "examples" / "flan_sample")
runner = CliRunner()


def cli(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def rows(run_or_export: Path, config: str) -> set[tuple[str, str]]:
    export_dir = run_or_export / "dataset"
    manifest = load_manifest(export_dir)
    entry = next(c for c in manifest["configs"] if c["name"] == config)
    return {(r["id"], r["response"]) for r in iter_rows(export_dir, entry)}


def test_shard_plans_are_disjoint_and_together_the_whole_plan(tmp_path: Path) -> None:
    common = ("run", "-s", SAMPLE, "--n", "50", "--seed", "3", "--dry-run")
    cli(*common, "-o", str(tmp_path / "whole"))
    whole = (tmp_path / "whole" / "plan.jsonl").read_text().splitlines()
    shards = []
    for k in (1, 2, 3):
        cli(*common, "--shard", f"{k}/3", "-o", str(tmp_path / f"s{k}"))
        shards.append((tmp_path / f"s{k}" / "plan.jsonl").read_text().splitlines())
        again = tmp_path / f"again{k}"
        cli(*common, "--shard", f"{k}/3", "-o", str(again))
        assert (again / "plan.jsonl").read_text().splitlines() == shards[-1]  # same seed, same partition
    ids = [{json.loads(x)["id"] for x in s} for s in shards]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert sorted(x for s in shards for x in s) == sorted(whole)  # the same records, byte for byte
    assert shards[1] == whole[1::3]  # every N-th plan position: each shard spreads over the whole plan
    stats = json.loads((tmp_path / "s2" / "plan_stats.json").read_text())
    assert stats["shard"] == "2/3" and stats["planned_total"] == len(shards[1])


def test_shards_run_with_own_budgets_and_merge_like_one_run(tmp_path: Path) -> None:
    common = ("run", "-s", SAMPLE, "--n", "45", "--rehearse", "--json")
    cli(*common, "--budget", "1", "-o", str(tmp_path / "whole"))
    for k in (1, 2, 3):
        cli(*common, "--shard", f"{k}/3", "--budget", "0.25", "-o", str(tmp_path / f"s{k}"))
        stats = json.loads((tmp_path / f"s{k}" / "stats.json").read_text())
        assert stats["budget_usd"] == 0.25 and stats["succeeded"] == 15 and stats["sent"] == 15
        assert stats["total_spent_usd"] <= 0.25
        assert (tmp_path / f"s{k}" / "ledger.jsonl").exists()  # each shard keeps its own books
    cli("merge", *(str(tmp_path / f"s{k}") for k in (1, 2, 3)), "-o", str(tmp_path / "merged"), "--json")
    merged = tmp_path / "merged"
    assert len(lines(merged / "traces.jsonl")) == 45
    # global dedup over the shards gives exactly what the unsharded run kept (same plan, same answers)
    assert rows(merged, "openorca") == rows(tmp_path / "whole", "openorca")
    assert [p.name for p in merged.rglob("README.md")] == ["README.md"]  # one card
    card = (merged / "dataset" / "README.md").read_text()
    assert "openorca" in card


def test_staged_shards_merge_stage_by_stage(tmp_path: Path) -> None:
    config = tmp_path / "progressive.yaml"
    config.write_text(
        f"source: [{SAMPLE}]\nn: 40\nbudget_usd: 1.0\nmax_tokens: 200\n"
        # near-response dedup keeps the first of two colliding (fake) answers, and a merge orders records
        # shard by shard, not in the whole plan's order: which one survives would differ
        "dedup: {near_response: false}\n"
        "stages:\n"
        "  - {name: gpt35, model: gpt-3.5-turbo}\n"
        "  - {name: gpt4, model: gpt-4, fraction: 0.5}\n"
    )
    cli("run", "-c", str(config), "--rehearse", "-o", str(tmp_path / "whole"))
    for k in (1, 2):
        cli("run", "-c", str(config), "--rehearse", "--shard", f"{k}/2", "-o", str(tmp_path / f"s{k}"))
    cli("merge", str(tmp_path / "s1"), str(tmp_path / "s2"), "-o", str(tmp_path / "merged"))
    merged, whole = tmp_path / "merged", tmp_path / "whole"
    for name in ("openorca-gpt35", "openorca-gpt4"):
        assert rows(merged, name) == rows(whole, name)  # a fraction picks the same pairs sharded or not
    gpt4_whole = lines(whole / "stages" / "gpt4" / "plan.jsonl")
    gpt4_shards = [r for k in (1, 2) for r in lines(tmp_path / f"s{k}" / "stages" / "gpt4" / "plan.jsonl")]
    assert sorted(r["id"] for r in gpt4_shards) == sorted(r["id"] for r in gpt4_whole)
