"""Dry-run estimate: arithmetic against hand-computed values, price modes, budget walk, unknown models."""

from __future__ import annotations

import json
from typing import Any

import pytest

from helpers.flan import SAMPLE
from tracegen.config import RunConfig
from tracegen.errors import ConfigError
from tracegen.planning.estimate import estimate
from tracegen.planning.plan import PlanStats, build_plan
from tracegen.records import Record


def records(*prompt_tokens: int) -> list[Record]:
    out = []
    for i, p in enumerate(prompt_tokens):
        submix = ("cot", "niv", "flan")[i % 3]
        r = Record(id=f"{submix}.{i}", submix=submix, question=f"q{i}", system_message_id=(6, 1, 3)[i % 3])
        r.prompt_tokens = p
        out.append(r)
    return out


def cfg(**kw: Any) -> RunConfig:
    base: dict[str, Any] = {
        "model": "my-teacher",
        "input_price": 1.0,
        "output_price": 2.0,
        "max_tokens": 1000,
        "expected_output_tokens": 500,
    }
    return RunConfig(**{**base, **kw})


def test_costs_match_hand_computed_values() -> None:
    est = estimate(records(100, 200, 300), cfg())
    assert (est.requests, est.prompt_tokens) == (3, 600)
    assert (est.output_tokens_worst, est.output_tokens_expected) == (3000, 1500)
    # online: $1/M in, $2/M out; worst: 600 in + 3000 out; expected: 600 in + 1500 out
    assert est.cost_usd["online_worst_usd"] == pytest.approx(0.0066)
    assert est.cost_usd["online_expected_usd"] == pytest.approx(0.0036)
    # a user-given price is the online price; the Batch API bills half
    assert est.cost_usd["batch_worst_usd"] == pytest.approx(0.0033)
    assert est.cost_usd["batch_expected_usd"] == pytest.approx(0.0018)
    assert est.prices_usd_per_mtok == {
        "online_input": 1.0,
        "online_output": 2.0,
        "batch_input": 0.5,
        "batch_output": 1.0,
    }
    assert est.requests_per_submix == {"cot": 1, "niv": 1, "flan": 1, "t0": 0}
    assert est.requests_per_system_message == {"1": 1, "3": 1, "6": 1}
    assert est.budget_buys_requests == {} and est.budget_usd is None


def test_budget_walks_the_plan_prefix() -> None:
    # per request, online worst: 0.0021, 0.0022, 0.0023; online expected: 0.0011, 0.0012, 0.0013
    # batch worst: 0.00105, 0.0011, 0.00115; batch expected: 0.00055, 0.0006, 0.00065
    est = estimate(records(100, 200, 300), cfg(budget_usd=0.0025))
    assert est.budget_buys_requests == {
        "online_worst": 1,
        "online_expected": 2,
        "batch_worst": 2,
        "batch_expected": 3,
    }
    assert est.budget_requests_exact
    # order matters: a long prompt first buys fewer requests than the same prompts short-first
    long_first = estimate(records(2000, 100, 100), cfg(budget_usd=0.00425, max_tokens=1000))
    short_first = estimate(records(100, 100, 2000), cfg(budget_usd=0.00425, max_tokens=1000))
    assert long_first.budget_buys_requests["online_worst"] == 1
    assert short_first.budget_buys_requests["online_worst"] == 2


def test_expected_output_is_capped_at_max_tokens() -> None:
    est = estimate(records(10), cfg(max_tokens=200, expected_output_tokens=350))
    assert est.expected_output_tokens == 200
    assert est.cost_usd["online_expected_usd"] == est.cost_usd["online_worst_usd"] == pytest.approx(410e-6)


def test_table_prices_for_a_known_model() -> None:
    est = estimate(records(1_000_000), RunConfig(model="gpt-4o-mini", max_tokens=1_000_000))
    # gpt-4o-mini: $0.15/M in, $0.60/M out online; half with the Batch API
    assert est.cost_usd["online_worst_usd"] == pytest.approx(0.15 + 0.60)
    assert est.cost_usd["batch_worst_usd"] == pytest.approx(0.075 + 0.30)
    assert est.encoding == "o200k_base"


def test_unknown_model_without_prices_says_how_to_fix() -> None:
    with pytest.raises(ConfigError, match="--input-price and --output-price"):
        estimate(records(10), RunConfig(model="my-teacher"))
    with pytest.raises(ConfigError, match="--input-price"):
        estimate(records(10), RunConfig(model="my-teacher", input_price=1.0))


def test_plan_stats_and_plan_agree() -> None:
    config = RunConfig(source=[str(SAMPLE)], n=300, budget_usd=0.02, model="gpt-4o-mini")
    with build_plan(config) as plan:
        from_plan = estimate(plan, config)
        from_records = estimate(list(plan), config)
        from_stats = estimate(PlanStats.from_dict(plan.stats.to_dict()), config)
    assert from_plan.requests == from_stats.requests == from_records.requests == 300
    assert from_plan.prompt_tokens == from_stats.prompt_tokens == plan.stats.prompt_tokens
    assert from_plan.cost_usd == pytest.approx(from_stats.cost_usd)
    assert from_plan.requests_per_submix == from_stats.requests_per_submix == plan.stats.planned
    assert from_plan.requests_per_system_message == plan.stats.planned_per_system_message
    assert from_plan.budget_buys_requests == from_records.budget_buys_requests
    assert from_plan.budget_requests_exact and not from_stats.budget_requests_exact
    for key, bought in from_stats.budget_buys_requests.items():  # mean-based: close to the exact walk
        assert abs(bought - from_plan.budget_buys_requests[key]) <= max(3, bought // 10)


def test_to_dict_is_json_and_one_level_deep() -> None:
    data = estimate(records(100, 200), cfg(budget_usd=1.0)).to_dict()
    json.dumps(data)
    for value in data.values():
        if isinstance(value, dict):
            assert all(not isinstance(v, (dict, list)) for v in value.values())
    assert data["budget_buys_requests"] == {
        "online_worst": 2,
        "online_expected": 2,
        "batch_worst": 2,
        "batch_expected": 2,
    }
