"""Prices fail closed (exact ids, dated snapshots at their own price), the answering model is checked,
reasoning models work online and through the Batch API, cached input is reported at its price."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx2
import pytest
from typer.testing import CliRunner

from tracegen.batch import run_batches
from tracegen.cli import app
from tracegen.config import RunConfig, load_config
from tracegen.engine import RunDir, generate
from tracegen.engine.runner import FIRST_WAVE
from tracegen.errors import ConfigError, EndpointError
from tracegen.planning.estimate import estimate
from tracegen.planning.params import REASONING_MAX_TOKENS, chat_body
from tracegen.planning.prices import price_table, resolve_prices
from tracegen.planning.tokens import count_chat_tokens
from tracegen.records import Record
from tracegen.testing import FakeOptions, FakeServer


def records(n: int, system_prompt: str = "You are an AI assistant.") -> list[Record]:
    return [
        Record(
            id=f"cot.{i}",
            submix="cot",
            question=f"Question {i}: is {i} even? Explain step by step.",
            system_prompt=system_prompt,
            prompt_tokens=0,
        )
        for i in range(n)
    ]


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def billed(server: FakeServer) -> float:
    return sum(e["cost_usd"] for e in server.ledger())


# ---- the table ----------------------------------------------------------------------------------------------
def test_table_is_dated_exact_and_prices_snapshots_at_their_own_list_price() -> None:
    table = price_table()
    assert table.prices_as_of is not None
    old = resolve_prices("gpt-4o-2024-05-13")
    assert (old.online.input_per_mtok, old.online.output_per_mtok) == (5.0, 15.0)
    assert (old.batch.input_per_mtok, old.batch.output_per_mtok) == (2.5, 7.5)
    assert resolve_prices("gpt-4o").online.output_per_mtok == 10.0
    assert resolve_prices("gpt-3.5-turbo-1106").online.input_per_mtok == 1.0
    assert resolve_prices("gpt-3.5-turbo-0613").online.input_per_mtok == 1.5
    for model in ("o1", "o3", "o4-mini", "gpt-5", "gpt-5-mini", "gpt-5-nano"):
        assert resolve_prices(model).reasoning, model
    for model in ("gpt-4o", "gpt-4.1-mini", "gpt-4o-mini-2024-07-18", "gpt-3.5-turbo"):
        assert not resolve_prices(model).reasoning, model
    assert resolve_prices("gpt-4o-mini").online.cached_input_per_mtok == 0.075


@pytest.mark.parametrize("model", ["gpt-4o-2099-01-01", "gpt-5-mini-2030-01-01", "gpt-4-0613-x", "llama-3"])
def test_an_unlisted_id_is_refused_never_priced_by_prefix(model: str) -> None:
    with pytest.raises(ConfigError, match=r"--input-price and --output-price.*--price-file"):
        resolve_prices(model)
    given = resolve_prices(model, input_price=1.0, output_price=2.0)
    assert given.online.cost_usd(1_000_000, 1_000_000) == 3.0
    assert given.batch.cost_usd(1_000_000, 1_000_000) == 1.5


def test_a_dated_variant_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    with FakeServer() as server:
        cfg = RunConfig(base_url=server.base_url, model="gpt-4o-2099-01-01", budget_usd=0.2)
        with pytest.raises(ConfigError, match="no price known for model 'gpt-4o-2099-01-01'"):
            asyncio.run(generate(records(3), cfg, tmp_path / "run"))
        assert server.counters()["requests"] == 0


def test_user_price_file_adds_a_model_and_bad_files_name_themselves(tmp_path: Path) -> None:
    good = tmp_path / "prices.yaml"
    good.write_text(
        "prices_as_of: 2026-01-02\nmodels:\n"
        "  my-llama: {encoding: cl100k_base, context_window: 8192, input: 0.2, output: 0.4}\n"
    )
    got = resolve_prices("my-llama", price_file=str(good))
    assert got.origin == f"price file {good}" and got.prices_as_of == "2026-01-02"
    assert got.batch.output_per_mtok == pytest.approx(0.2)
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "models:\n  my-llama: {encoding: cl100k_base, context_window: 8192, input: 1, outptu: 2}\n"
    )
    with pytest.raises(ConfigError, match=r"price file .*bad.yaml: models.my-llama"):
        resolve_prices("my-llama", price_file=str(bad))


def test_models_command_prints_the_table(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("gpt-4o-2024-05-13 "))
    assert row.split()[1:] == ["o200k", "128,000", "5", "-", "15", "2.5", "7.5"]
    assert "as of " + str(price_table().prices_as_of) in result.output
    as_json = CliRunner().invoke(app, ["models", "--json"])
    rows = {r["id"]: r for r in json.loads(as_json.output)["models"]}
    assert rows["gpt-5-mini"]["reasoning"] is True and rows["gpt-5-mini"]["output"] == 2.0


# ---- the bill of a dated snapshot -----------------------------------------------------------------------
def test_dated_snapshot_is_billed_within_budget_by_the_servers_own_bill(tmp_path: Path) -> None:
    budget = 0.02
    with FakeServer(FakeOptions(mean_completion_tokens=150)) as server:
        cfg = RunConfig(
            base_url=server.base_url, model="gpt-4o-2024-05-13", budget_usd=budget, max_tokens=300
        )
        result = asyncio.run(generate(records(60), cfg, tmp_path / "run"))
        ledger = server.ledger()
    assert result.stop_reason == "budget" and result.succeeded > 0
    assert sum(e["cost_usd"] for e in ledger) <= budget
    for e in ledger:  # the server bills the snapshot's own list price: $5 / $15 per 1M
        assert e["cost_usd"] == pytest.approx((e["prompt_tokens"] * 5 + e["completion_tokens"] * 15) / 1e6)
    stats = json.loads((tmp_path / "run" / "stats.json").read_text())
    assert stats["prices"]["input_usd_per_mtok"] == 5.0 and stats["prices"]["output_usd_per_mtok"] == 15.0
    assert stats["answers_cost_usd"] == pytest.approx(sum(e["cost_usd"] for e in ledger))


# ---- the model that answered ----------------------------------------------------------------------------
def test_an_alias_routed_to_a_pricier_snapshot_stops_the_run(tmp_path: Path) -> None:
    opts = FakeOptions(model_routes=("gpt-4o=gpt-4o-2024-05-13",), mean_completion_tokens=50)
    with FakeServer(opts) as server:
        cfg = RunConfig(base_url=server.base_url, model="gpt-4o", budget_usd=1.0, max_tokens=100)
        with pytest.raises(EndpointError, match=r"answered with model .gpt-4o-2024-05-13.*stopped"):
            asyncio.run(generate(records(50), cfg, tmp_path / "run"))
        ledger = server.ledger()
    assert len(ledger) <= FIRST_WAVE  # the first wave: nothing else was sent
    stats = json.loads((tmp_path / "run" / "stats.json").read_text())
    # every answer of the wave is settled at the snapshot's price and recorded (none lost, none paid twice)
    assert stats["cost_usd"] == pytest.approx(sum(e["cost_usd"] for e in ledger))
    traces = lines(tmp_path / "run" / "traces.jsonl")
    assert len(traces) == len(ledger)
    assert {t["model_returned"] for t in traces} == {"tracegen-fake:gpt-4o-2024-05-13"}


def test_an_alias_routed_to_a_same_price_snapshot_is_fine(tmp_path: Path) -> None:
    opts = FakeOptions(model_routes=("gpt-4o=gpt-4o-2024-08-06",), mean_completion_tokens=50)
    with FakeServer(opts) as server:
        cfg = RunConfig(base_url=server.base_url, model="gpt-4o", budget_usd=1.0, max_tokens=100)
        result = asyncio.run(generate(records(10), cfg, tmp_path / "run"))
    assert result.stop_reason == "completed" and result.succeeded == 10


# ---- reasoning models -------------------------------------------------------------------------------------
def test_fake_server_refuses_chat_parameters_with_the_real_error_texts() -> None:
    with FakeServer() as server:
        url = server.base_url + "/chat/completions"
        msgs = [{"role": "user", "content": "hi"}]

        def post(**body: Any) -> dict[str, Any]:
            r = httpx2.post(url, json={"model": "gpt-5-mini", "messages": msgs, **body})
            assert r.status_code == 400
            err: dict[str, Any] = r.json()["error"]
            return err

        assert post(max_tokens=100) == {
            "message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
            "type": "invalid_request_error",
            "param": "max_tokens",
            "code": "unsupported_parameter",
        }
        err = post(max_completion_tokens=100, temperature=0.7)
        assert err["message"] == (
            "Unsupported value: 'temperature' does not support 0.7 with this model. "
            "Only the default (1) value is supported."
        )
        assert (err["param"], err["code"]) == ("temperature", "unsupported_value")
        assert post(max_completion_tokens=100, top_p=0.95)["code"] == "unsupported_parameter"
        ok = httpx2.post(url, json={"model": "gpt-5-mini", "messages": msgs, "max_completion_tokens": 2000})
        usage = ok.json()["usage"]
        assert usage["completion_tokens_details"]["reasoning_tokens"] > 0
        assert usage["completion_tokens"] > usage["completion_tokens_details"]["reasoning_tokens"]


def test_reasoning_config_defaults_and_refusals() -> None:
    cfg = RunConfig(model="gpt-5-mini", reasoning_effort="low")
    assert cfg.max_tokens == REASONING_MAX_TOKENS
    body = chat_body([{"role": "user", "content": "q"}], cfg)
    assert body == {
        "model": "gpt-5-mini",
        "messages": [{"role": "user", "content": "q"}],
        "max_completion_tokens": REASONING_MAX_TOKENS,
        "reasoning_effort": "low",
    }
    assert RunConfig(model="gpt-4o").max_tokens == 1024
    with pytest.raises(ConfigError, match=r"temperature 0\.7: gpt-5-mini is a reasoning model"):
        load_config(None, {"model": "gpt-5-mini", "temperature": 0.7}, env={})
    with pytest.raises(ConfigError, match=r"top_p 0\.95"):
        load_config(None, {"model": "o3", "top_p": 0.95}, env={})
    with pytest.raises(ConfigError, match="gpt-4o is not a reasoning model"):
        load_config(None, {"model": "gpt-4o", "reasoning_effort": "high"}, env={})


def test_gpt5_mini_runs_online_with_answers_and_reasoning_tokens_billed(tmp_path: Path) -> None:
    with FakeServer(FakeOptions(mean_completion_tokens=80, mean_reasoning_tokens=400)) as server:
        cfg = RunConfig(base_url=server.base_url, model="gpt-5-mini", budget_usd=0.5)
        result = asyncio.run(generate(records(12), cfg, tmp_path / "run"))
        ledger = server.ledger()
    assert result.stop_reason == "completed" and result.succeeded == 12 and result.failed == 0
    traces = lines(tmp_path / "run" / "traces.jsonl")
    assert all(t["response"] and t["finish_reason"] == "stop" for t in traces)
    assert all(0 < t["reasoning_tokens"] < t["completion_tokens"] for t in traces)
    stats = json.loads((tmp_path / "run" / "stats.json").read_text())
    assert stats["reasoning_tokens"] == sum(t["reasoning_tokens"] for t in traces)
    assert stats["completion_tokens"] == sum(e["completion_tokens"] for e in ledger)
    assert stats["cost_usd"] == pytest.approx(sum(e["cost_usd"] for e in ledger))
    assert stats["prices"]["reasoning"] is True


def test_a_cap_eaten_by_reasoning_is_an_empty_length_answer_retried_larger(tmp_path: Path) -> None:
    opts = FakeOptions(mean_completion_tokens=40, mean_reasoning_tokens=300, completion_tokens_spread=0.1)
    with FakeServer(opts) as server:
        cfg = RunConfig(
            base_url=server.base_url, model="gpt-5-nano", budget_usd=0.5, max_tokens=200, retry_length=True
        )
        asyncio.run(generate(records(4), cfg, tmp_path / "run"))
        caps = sorted({e["completion_tokens"] for e in server.ledger() if e["completion_tokens"] == 200})
    stats = json.loads((tmp_path / "run" / "stats.json").read_text())
    assert stats["length"] == stats["length_empty"] == 4
    assert caps == [200]  # the first answers: all 200 tokens reasoning, nothing visible
    traces = lines(tmp_path / "run" / "traces.jsonl")
    assert all(t["response"] and t["finish_reason"] == "stop" for t in traces)  # the 400-token retries


def test_gpt5_mini_through_the_batch_api(tmp_path: Path) -> None:
    with FakeServer(FakeOptions(batch_delay_s=0.05, mean_completion_tokens=60)) as server:
        run = tmp_path / "run"
        cfg = RunConfig(
            base_url=server.base_url, model="gpt-5-mini", budget_usd=0.5, output_dir=run, mode="batch"
        )
        rd = RunDir.open(run, {"n": 6}, cfg.public_dict())
        result = asyncio.run(run_batches(records(6), cfg, rd, poll_interval_s=0.02))
        ledger = server.ledger()
    assert result.stop_reason == "completed" and result.succeeded == 6
    traces = lines(run / "traces.jsonl")
    assert all(t["response"] and t["reasoning_tokens"] > 0 for t in traces)
    assert all(e["kind"] == "batch" for e in ledger)
    stats = json.loads((run / "stats.json").read_text())
    assert stats["cost_usd"] == pytest.approx(sum(e["cost_usd"] for e in ledger))
    assert stats["reasoning_tokens"] == sum(t["reasoning_tokens"] for t in traces)
    assert stats["prices"]["mode"] == "batch" and stats["prices"]["output_usd_per_mtok"] == 1.0


def test_dry_run_counts_expected_reasoning_tokens() -> None:
    recs = records(5)
    for r in recs:
        r.prompt_tokens = count_chat_tokens(r.messages(), "o200k_base")
    prompt = sum(r.prompt_tokens for r in recs)
    est = estimate(recs, RunConfig(model="gpt-5-mini", expected_reasoning_tokens=500))
    assert est.expected_output_tokens == 350 + 500 and est.expected_reasoning_tokens == 500
    assert est.cost_usd["online_expected_usd"] == pytest.approx((prompt * 0.25 + 5 * 850 * 2.0) / 1e6)
    assert est.cost_usd["online_worst_usd"] == pytest.approx(
        (prompt * 0.25 + 5 * REASONING_MAX_TOKENS * 2.0) / 1e6
    )
    assert est.prices_as_of == str(price_table().prices_as_of)
    chat = estimate(recs, RunConfig(model="gpt-4o"))
    assert chat.expected_reasoning_tokens == 0 and chat.expected_output_tokens == 350


# ---- cached input ---------------------------------------------------------------------------------------
def test_cached_input_is_reported_at_its_price_while_the_ledger_stays_conservative(tmp_path: Path) -> None:
    long_system = " ".join(f"Rule {i}: answer carefully and explain each step." for i in range(150))
    with FakeServer(FakeOptions(prompt_cache=True, mean_completion_tokens=30)) as server:
        cfg = RunConfig(base_url=server.base_url, model="gpt-4o-mini", budget_usd=0.5, concurrency=1)
        asyncio.run(generate(records(5, system_prompt=long_system), cfg, tmp_path / "run"))
        ledger = server.ledger()
    stats = json.loads((tmp_path / "run" / "stats.json").read_text())
    assert stats["cached_tokens"] >= 4 * 1024
    assert stats["answers_billed_usd"] == pytest.approx(sum(e["cost_usd"] for e in ledger))
    assert stats["answers_billed_usd"] < stats["answers_cost_usd"]


def test_card_records_prices_and_reasoning_tokens(tmp_path: Path) -> None:
    from tracegen.publish.card import split_card
    from tracegen.publish.export import export

    run = tmp_path / "run"
    with FakeServer(FakeOptions(mean_completion_tokens=60)) as server:
        cfg = RunConfig(base_url=server.base_url, model="gpt-5-mini", budget_usd=0.5, output_dir=run)
        asyncio.run(generate(records(5), cfg, run))
    export(run, formats=["openorca"])
    _, body = split_card((run / "dataset" / "README.md").read_text("utf-8"))
    assert "| temperature | not sent (reasoning model) |" in body
    assert f"| prices_as_of | {price_table().prices_as_of} |" in body
    assert "| output_usd_per_mtok |" in body and "| reasoning_tokens |" in body


def test_an_endpoint_pool_is_priced_by_the_model_served_and_checked(tmp_path: Path) -> None:
    from tracegen.config import EndpointConfig

    routed = FakeOptions(model_routes=("gpt-4o-mini=gpt-4o",), mean_completion_tokens=30)
    with FakeServer(routed) as server:
        cfg = RunConfig(
            model="gpt-4o-mini",
            budget_usd=1.0,
            max_tokens=100,
            endpoints=[
                EndpointConfig(name="east", base_url=server.base_url, api_key_env=None, model="gpt-4o-mini")
            ],
        )
        with pytest.raises(EndpointError, match="answered with model 'gpt-4o'"):
            asyncio.run(generate(records(20), cfg, tmp_path / "run"))
        assert len(server.ledger()) <= FIRST_WAVE
