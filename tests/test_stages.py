"""Progressive teachers: stage subsets, per-stage run dirs, budgets, resume, dry run, export (offline)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from helpers import REPO
from tracegen import pipeline
from tracegen.config import EndpointConfig, RunConfig, StageConfig, load_config
from tracegen.errors import ConfigError, RunDirError
from tracegen.publish.export import iter_rows, load_manifest
from tracegen.stages import select_mask, stage_path
from tracegen.testing import FakeServer

SAMPLE = str(REPO / "examples" / "flan_sample")


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def staged(out: Path, base_url: str | None = None, **fields: Any) -> RunConfig:
    stages = fields.pop(
        "stages",
        [
            {"name": "gpt35", "model": "gpt-3.5-turbo"},
            {"name": "gpt4", "model": "gpt-4", "count": 12, "max_tokens": 300},
        ],
    )
    values: dict[str, Any] = {"source": [SAMPLE], "n": 40, "output_dir": out, "base_url": base_url}
    values.update(max_tokens=200, stages=[StageConfig(**s) for s in stages])
    return RunConfig(**{**values, **fields})


def paid_keys(ledger: list[dict[str, Any]]) -> list[str]:
    return [e["request_key"] for e in ledger if e["delivered"]]


# ---- subsets -----------------------------------------------------------------------------------------------
KEYS = [f"{i:032x}" for i in range(4000)]


def chosen(stage: StageConfig, seed: int = 0, keys: list[str] = KEYS, shard: Any = None) -> set[str]:
    mask = select_mask(keys, stage, seed, shard)
    return set(keys) if mask is None else {k for k, m in zip(keys, mask, strict=True) if m}


def test_fraction_subsets_are_seeded_nested_and_shard_consistent() -> None:
    small = chosen(StageConfig(name="a", model="gpt-4", fraction=0.1))
    large = chosen(StageConfig(name="b", model="gpt-4", fraction=0.2))
    assert small < large  # same seed: the 10% lie inside the 20%
    assert 300 < len(small) < 500 and 650 < len(large) < 950
    assert chosen(StageConfig(name="a", model="gpt-4", fraction=0.1), seed=1) != small
    assert chosen(StageConfig(name="a", model="gpt-4", fraction=0.1)) == small  # deterministic
    # shards hold every 3rd plan position: the union of their picks is the unsharded pick
    union: set[str] = set()
    for k in range(3):
        union |= chosen(StageConfig(name="a", model="gpt-4", fraction=0.1), keys=KEYS[k::3], shard=(k, 3))
    assert union == small


def test_count_is_exact_in_total_and_across_shards() -> None:
    stage = StageConfig(name="a", model="gpt-4", count=1000)
    assert len(chosen(stage)) == 1000
    shares = [len(chosen(stage, keys=KEYS[k::3], shard=(k, 3))) for k in range(3)]
    assert sum(shares) == 1000 and max(shares) - min(shares) <= 1
    assert chosen(StageConfig(name="a", model="gpt-4", count=10**6)) == set(KEYS)  # more than the plan: all
    assert select_mask(KEYS, StageConfig(name="a", model="gpt-4"), 0) is None  # no subset: the whole plan


def test_stage_config_is_validated_with_named_fields(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("stages:\n  - name: gpt4\n    model: gpt-4\n    count: 5\n    fraction: 0.1\n")
    with pytest.raises(ConfigError, match="count or fraction, not both"):
        load_config(path, env={})
    path.write_text("stages:\n  - name: gpt4\n    model: gpt-4\n    temprature: 0.1\n")
    with pytest.raises(ConfigError, match=r"stages\.0\.temprature.*known keys: name, model"):
        load_config(path, env={})
    path.write_text("stages:\n  - {name: a, model: gpt-4}\n  - {name: a, model: gpt-4}\n")
    with pytest.raises(ConfigError, match="unique"):
        load_config(path, env={})
    path.write_text("stages:\n  - {name: 'bad name', model: gpt-4}\n")
    with pytest.raises(ConfigError, match="not a stage name"):
        load_config(path, env={})


# ---- the dry run -------------------------------------------------------------------------------------------
def test_dry_run_estimates_every_stage_and_the_total(tmp_path: Path) -> None:
    est = pipeline.estimate_run(staged(tmp_path / "run", budget_usd=2.0))
    gpt35, gpt4 = est["stages"]
    assert (gpt35["model"], gpt35["requests"]) == ("gpt-3.5-turbo", 40)
    assert (gpt4["model"], gpt4["requests"], gpt4["max_tokens"]) == ("gpt-4", 12, 300)
    assert est["requests"] == 52
    for key, total in est["cost_usd"].items():
        assert total == pytest.approx(gpt35["cost_usd"][key] + gpt4["cost_usd"][key])
    # the gpt-4 subset is priced at gpt-4's prices: far dearer per request than gpt-3.5
    per_request = [e["cost_usd"]["online_worst_usd"] / e["requests"] for e in (gpt35, gpt4)]
    assert per_request[1] > 10 * per_request[0]
    gpt4_plan = lines(stage_path(tmp_path / "run", "gpt4") / "requests.jsonl")
    assert len(gpt4_plan) == 12 and {r["body"]["model"] for r in gpt4_plan} == {"gpt-4"}
    assert {r["body"]["max_tokens"] for r in gpt4_plan} == {300}
    assert not (stage_path(tmp_path / "run", "gpt4") / "traces.jsonl").exists()  # nothing sent


# ---- end to end --------------------------------------------------------------------------------------------
def test_staged_run_keeps_stages_apart_and_exports_one_config_each(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with FakeServer() as srv:
        summary = pipeline.run(staged(out, srv.base_url, budget_usd=2.0))
        ledger = srv.ledger()
    assert summary["stop_reason"] == "completed"
    plan = lines(out / "plan.jsonl")
    traces = {name: lines(stage_path(out, name) / "traces.jsonl") for name in ("gpt35", "gpt4")}
    assert len(traces["gpt35"]) == 40 and len(traces["gpt4"]) == 12
    assert {t["stage"] for t in traces["gpt35"]} == {"gpt35"} and {t["model"] for t in traces["gpt35"]} == {
        "gpt-3.5-turbo"
    }
    assert {t["stage"] for t in traces["gpt4"]} == {"gpt4"} and {t["model"] for t in traces["gpt4"]} == {
        "gpt-4"
    }
    # the gpt-4 stage asks the SAME (system message, question) pairs, a subset in plan order
    order = [r["key"] for r in plan]
    gpt4_plan = [r["key"] for r in lines(stage_path(out, "gpt4") / "plan.jsonl")]
    assert set(gpt4_plan) <= set(order)
    assert gpt4_plan == sorted(gpt4_plan, key=order.index)
    # every answer paid once; the books of each stage match the server's
    keys = paid_keys(ledger)
    assert len(keys) == len(set(keys)) == 52
    spent = sum(
        json.loads((stage_path(out, n) / "stats.json").read_text())["total_spent_usd"] for n in traces
    )
    assert spent == pytest.approx(sum(e["cost_usd"] for e in ledger)) and spent <= 2.0
    # one dataset, one config per stage and format
    manifest = load_manifest(out / "dataset")
    rows = {c["name"]: c["rows"] for c in manifest["configs"]}
    assert set(rows) == {"openorca-gpt35", "openorca-gpt4", "full-gpt35", "full-gpt4"}
    assert 0 < rows["openorca-gpt4"] <= 12 < rows["openorca-gpt35"] <= 40
    full4 = next(c for c in manifest["configs"] if c["name"] == "full-gpt4")
    assert {r["stage"] for r in iter_rows(out / "dataset", full4)} == {"gpt4"}
    card = (out / "dataset" / "README.md").read_text()
    assert "openorca-gpt4" in card and "`gpt35` then `gpt4`" in card
    stats = json.loads((out / "stats.json").read_text())
    assert stats["stages"] == ["gpt35", "gpt4"] and stats["succeeded"] == 52


def test_resume_per_stage_pays_nothing_twice(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with FakeServer() as srv:
        first = pipeline.run(staged(out, srv.base_url, max_requests=25))
        assert first["stop_reason"] == "max_requests"
        assert not (stage_path(out, "gpt4") / "traces.jsonl").exists()  # stage 2 waits for stage 1
        again = pipeline.run(staged(out, srv.base_url))
        ledger = srv.ledger()
    assert again["stop_reason"] == "completed"
    assert (again["stage_gpt35"]["skipped_done"], again["stage_gpt35"]["sent"]) == (25, 15)
    assert again["stage_gpt4"]["sent"] == 12
    keys = paid_keys(ledger)
    assert len(keys) == len(set(keys)) == 52


def test_one_run_budget_is_spent_in_stage_order(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with FakeServer() as srv:
        pipeline.run(staged(out, srv.base_url, budget_usd=0.06))
        ledger = srv.ledger()
    s35 = json.loads((stage_path(out, "gpt35") / "stats.json").read_text())
    s4 = json.loads((stage_path(out, "gpt4") / "stats.json").read_text())
    assert s35["stop_reason"] == "completed"  # the cheap stage first, whole
    assert s4["stop_reason"] == "budget" and 0 < s4["succeeded"] < 12  # gpt-4 gets what is left
    assert s4["budget_usd"] == pytest.approx(0.06 - s35["total_spent_usd"])
    total = sum(e["cost_usd"] for e in ledger)
    assert total == pytest.approx(s35["total_spent_usd"] + s4["total_spent_usd"]) and total <= 0.06


def test_a_stage_budget_share_caps_only_that_stage(tmp_path: Path) -> None:
    out = tmp_path / "run"
    stages = [
        {"name": "gpt4", "model": "gpt-4", "count": 12, "budget_usd": 0.03},
        {"name": "gpt35", "model": "gpt-3.5-turbo"},
    ]
    with FakeServer() as srv:
        summary = pipeline.run(staged(out, srv.base_url, stages=stages))
        ledger = srv.ledger()
    assert summary["stage_gpt4"]["stop_reason"] == "budget"  # its share ran out...
    assert summary["stage_gpt35"]["stop_reason"] == "completed"  # ...the next stage still ran
    gpt4_cost = sum(e["cost_usd"] for e in ledger if e["model"] == "gpt-4")
    assert gpt4_cost <= 0.03


def test_changed_stage_selection_is_refused_with_the_fix(tmp_path: Path) -> None:
    out = tmp_path / "run"
    pipeline.estimate_run(staged(out))
    stages = [{"name": "gpt35", "model": "gpt-3.5-turbo"}, {"name": "gpt4", "model": "gpt-4", "count": 20}]
    est = pipeline.estimate_run(staged(out, stages=stages))  # nothing spent yet: the change is taken
    assert [e["requests"] for e in est["stages"]] == [40, 20]
    pipeline.estimate_run(staged(out))
    (out / "stages" / "gpt4" / "traces.jsonl").write_text(
        '{"request_key":"' + "0" * 64 + '","cost_usd":0.1}\n'
    )
    with pytest.raises(RunDirError, match="new name"):
        pipeline.estimate_run(staged(out, stages=stages))
    stages[1]["name"] = "gpt4-20"  # a new stage name is a new sub directory: fine
    est = pipeline.estimate_run(staged(out, stages=stages))
    assert [e["requests"] for e in est["stages"]] == [40, 20]


def test_staged_and_unstaged_run_dirs_do_not_mix(tmp_path: Path) -> None:
    out = tmp_path / "run"
    pipeline.estimate_run(staged(out))
    with pytest.raises(RunDirError, match="staged run"):
        pipeline.estimate_run(RunConfig(source=[SAMPLE], n=40, output_dir=out, max_tokens=200))


def test_stages_pick_their_endpoints_by_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEY_35", "sk-35-SECRET")
    monkeypatch.setenv("KEY_4", "sk-4-SECRET")
    out = tmp_path / "run"
    with FakeServer() as cheap, FakeServer() as dear:
        endpoints = [
            EndpointConfig(
                name="cheap", base_url=cheap.base_url, api_key_env="KEY_35", model="gpt-3.5-turbo"
            ),
            EndpointConfig(name="dear", base_url=dear.base_url, api_key_env="KEY_4", model="gpt-4"),
        ]
        summary = pipeline.run(staged(out, endpoints=endpoints))
        models = {"cheap": {e["model"] for e in cheap.ledger()}, "dear": {e["model"] for e in dear.ledger()}}
    assert summary["stop_reason"] == "completed"
    assert models == {"cheap": {"gpt-3.5-turbo"}, "dear": {"gpt-4"}}
    stats = json.loads((stage_path(out, "gpt4") / "stats.json").read_text())
    assert [e["name"] for e in stats["endpoints"]] == ["dear"] and stats["endpoints"][0]["succeeded"] == 12
    for path in out.rglob("*"):
        if path.is_file():
            assert b"SECRET" not in path.read_bytes(), path


def test_progressive_example_plans_and_estimates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    config = load_config(REPO / "examples" / "progressive.yaml", {"output_dir": tmp_path / "run"}, env={})
    assert [s.name for s in config.stages] == ["gpt35", "gpt4"]
    est = pipeline.estimate_run(config)
    assert est["stages"][0]["requests"] == 100 and 0 < est["stages"][1]["requests"] < 100
    assert est["stage_gpt4"]["budget_usd"] == 4.0 and est["budget_usd"] == 5.0


def test_extend_grows_every_stage_plan(tmp_path: Path) -> None:
    out = tmp_path / "run"
    pipeline.estimate_run(staged(out))
    (out / "stages" / "gpt35" / "traces.jsonl").write_text(
        '{"request_key":"' + "0" * 64 + '","cost_usd":0.1}\n'
    )
    with pytest.raises(RunDirError, match="--extend"):  # once money was spent, n grows only with --extend
        pipeline.estimate_run(staged(out, n=60))
    est = pipeline.estimate_run(staged(out, n=60), extend=True)
    assert [e["requests"] for e in est["stages"]] == [60, 12]  # the stage plans follow the parent's
    parent = [r["key"] for r in lines(out / "plan.jsonl")]
    assert [r["key"] for r in lines(stage_path(out, "gpt35") / "plan.jsonl")] == parent
