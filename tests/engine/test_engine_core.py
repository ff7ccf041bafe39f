"""The generation core shared by the online engine and the Batch API runner (tracegen.engine.core)."""

from __future__ import annotations

import logging

import pytest

from tracegen.batch.parts import Item
from tracegen.config import RunConfig
from tracegen.engine._json import request_key
from tracegen.engine.core import PROMPT_MARGIN, PROMPT_MARGIN_TOKENS, Pricer, Request, stop_reason_of
from tracegen.engine.counters import Counters
from tracegen.engine.settings import EngineSettings, Teacher
from tracegen.errors import (
    AuthError,
    EndpointError,
    FailingRunError,
    MissingKeyError,
    QuotaError,
    RunDirError,
    TracegenError,
    WaitTooLongError,
)
from tracegen.planning.prices import Pricing
from tracegen.records import Record

PRICING = Pricing(2.0, 8.0)


def teacher(**fields: object) -> Teacher:
    """The engine's teacher for a RunConfig with ``fields``."""
    return EngineSettings.of(RunConfig.model_validate(fields)).teacher


def record(prompt_tokens: int | None = 40) -> Record:
    return Record(
        id="cot.1",
        submix="cot",
        question="Question 1: explain step by step.",
        system_prompt="You are an AI assistant.",
        target="1",
        prompt_tokens=prompt_tokens,
    )


def test_online_and_batch_build_the_same_request_for_a_chat_model() -> None:
    cfg = teacher(model="gpt-4o-mini", max_tokens=100)
    online = Request(record(), cfg, PRICING, "o200k_base")
    batch = Item.make(record(), cfg, PRICING, "o200k_base")
    assert online.key == batch.key == request_key(online.body)
    assert online.digest == batch.digest == bytes.fromhex(online.key[:32])
    assert (online.res_usd, online.res_tokens) == (batch.res_usd, batch.res_tokens)
    worst = -(-40 * PROMPT_MARGIN // 1) + PROMPT_MARGIN_TOKENS
    assert online.res_tokens == worst + 100 and online.limit_tokens == 140
    assert online.res_usd == pytest.approx(PRICING.cost_usd(int(worst), 100))
    assert online.payload is not None and batch.req.payload is None


@pytest.mark.parametrize("effort", [None, "high"])
def test_online_and_batch_key_a_reasoning_model_alike_so_switching_modes_never_pays_twice(
    effort: str | None,
) -> None:
    from tracegen.testing import request_key as ledger_key

    cfg = teacher(model="o3", max_tokens=2000, reasoning_effort=effort)
    online = Request(record(), cfg, PRICING, "o200k_base")
    batch = Item.make(record(), cfg, PRICING, "o200k_base")
    assert "max_completion_tokens" in online.body and "temperature" not in online.body
    assert online.key == batch.key == request_key(online.body) == ledger_key(online.body)
    assert online.digest == batch.digest
    chat = Request(record(), teacher(model="gpt-4o-mini", max_tokens=2000), PRICING, "o200k_base")
    assert chat.key != online.key


def test_a_length_retry_keeps_the_key_and_reserves_its_larger_cap() -> None:
    cfg = teacher(model="gpt-4o-mini", max_tokens=100)
    first = Item.make(record(), cfg, PRICING, "o200k_base")
    retry = Item.make(record(), cfg, PRICING, "o200k_base", attempt=2, cap=200)
    assert retry.key == first.key
    assert retry.req.body["max_tokens"] == 200 and b'"max_tokens":200' in retry.line
    assert retry.res_tokens == first.res_tokens + 100
    assert retry.req.limit_tokens == 240


def test_prompt_tokens_are_counted_when_the_plan_has_none() -> None:
    cfg = teacher(model="gpt-4o-mini", max_tokens=100)
    counted = Request(record(prompt_tokens=None), cfg, PRICING, "o200k_base")
    assert counted.prompt_tokens > 5
    assert counted.limit_tokens == counted.prompt_tokens + 100


@pytest.mark.parametrize(
    ("err", "reason"),
    [
        (AuthError("x"), "auth"),
        (MissingKeyError("x"), "auth"),
        (QuotaError("x"), "quota"),
        (WaitTooLongError("x"), "quota"),
        (FailingRunError("x"), "circuit_breaker"),
        (RunDirError("x"), "run_dir"),
        (EndpointError("x"), "endpoint"),
    ],
)
def test_one_mapping_from_error_to_stop_reason(err: Exception, reason: str) -> None:
    assert stop_reason_of(err) == reason


def test_pricer_without_a_price_records_zero_unless_a_budget_needs_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        pricer = Pricer(teacher(model="no-such-model-xyz"), batch=False, budget_usd=None)
    assert pricer.pricing == Pricing(0.0, 0.0) and "no price known" in caplog.text
    assert pricer.of("anything") == Pricing(0.0, 0.0) and pricer.model_problem is None
    with pytest.raises(TracegenError, match="no-such-model-xyz"):
        Pricer(teacher(model="no-such-model-xyz"), batch=False, budget_usd=1.0)


def test_pricer_uses_batch_prices_in_batch_mode() -> None:
    online = Pricer(teacher(model="gpt-4o-mini"), batch=False, budget_usd=None)
    batch = Pricer(teacher(model="gpt-4o-mini"), batch=True, budget_usd=None)
    assert batch.pricing.input_per_mtok < online.pricing.input_per_mtok
    assert online.of("gpt-4o-mini") == online.pricing and online.model_problem is None


def test_counters_name_every_counter_once_and_batch_leaves_out_online_only_keys() -> None:
    c = Counters()
    c.note_usage(anomaly="negative", mismatch=None)
    for _ in range(7):
        c.note_usage(anomaly=None, mismatch="off by 3")
    online = c.counter_stats(batch=False)
    assert online["usage_anomalies"] == 1 and online["usage_mismatches"] == 7
    assert online["usage_anomaly_examples"] == ["negative"] and len(online["usage_mismatch_examples"]) == 5
    batch = c.counter_stats(batch=True)
    assert set(online) - set(batch) == {
        "answers_billed_usd",
        "n_protocol_errors",
        "usage_anomaly_examples",
        "usage_mismatch_examples",
    }
