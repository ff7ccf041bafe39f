"""Dry-run cost estimate of a plan: what it would cost, online and with the Batch API, and what a budget buys.

* **Worst case**: every answer runs to ``max_tokens``.
* **Expected**: every answer is ``min(expected_output_tokens + reasoning, max_tokens)`` tokens long
  (``RunConfig.expected_output_tokens``, default 350: a mean Orca-style explanation; Orca reports GPT-4
  answers ~1.5x longer than ChatGPT's, so raise it for GPT-4-class teachers). ``reasoning`` is the hidden
  reasoning tokens a reasoning model bills as output (``expected_reasoning_tokens``, default 1024; 0 for chat
  models); the worst case covers them already (they count against ``max_tokens``). Prompt tokens are exact.
* **Budget**: how many requests ``budget_usd`` pays for *in plan order*, walking the plan prefix (prompt
  lengths differ), for each price mode and assumption. From a :class:`~tracegen.planning.plan.PlanStats` alone the
  per-request prompt lengths are unknown, so the mean is used and ``budget_requests_exact`` is False.

Prices come from :func:`tracegen.planning.prices.resolve_prices` (exact ids; ``input_price``/``output_price`` override,
USD per 1M tokens; ``price_file`` adds models); an unknown model without both overrides is a ConfigError that
says to pass them. The estimate records which prices it used (origin, date taken).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..config import RunConfig
from ..records import SUBMIXES, Record
from .params import expected_reasoning_tokens
from .plan import Plan, PlanStats
from .prices import Pricing, ResolvedPrices, resolve_prices
from .tokens import encoding_for_model

__all__ = ["Estimate", "estimate"]

_MODES = ("online", "batch")
_CASES = ("worst", "expected")


@dataclass
class Estimate:
    """The dry-run numbers. :meth:`to_dict` is flat scalars plus one level of tables (CLI-friendly)."""

    model: str
    encoding: str
    requests: int
    prompt_tokens: int
    max_tokens: int
    expected_output_tokens: int
    """Assumed answer length per request: min(config.expected_output_tokens, max_tokens)."""
    output_tokens_worst: int
    output_tokens_expected: int
    budget_usd: float | None
    budget_requests_exact: bool
    requests_per_submix: dict[str, int] = field(default_factory=dict)
    requests_per_system_message: dict[str, int] = field(default_factory=dict)
    prices_usd_per_mtok: dict[str, float] = field(default_factory=dict)
    """online_input, online_output, batch_input, batch_output."""
    cost_usd: dict[str, float] = field(default_factory=dict)
    """online_worst_usd, online_expected_usd, batch_worst_usd, batch_expected_usd."""
    budget_buys_requests: dict[str, int] = field(default_factory=dict)
    """online_worst, online_expected, batch_worst, batch_expected (empty without a budget)."""
    expected_reasoning_tokens: int = 0
    """Hidden reasoning tokens assumed per answer (part of expected_output_tokens); 0 for chat models."""
    reasoning: bool = False
    prices_origin: str = ""
    """Where the prices came from: tracegen's table (with the date taken), a price file, or flags."""
    prices_as_of: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "encoding": self.encoding,
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "max_tokens": self.max_tokens,
            "expected_output_tokens": self.expected_output_tokens,
            "output_tokens_worst": self.output_tokens_worst,
            "output_tokens_expected": self.output_tokens_expected,
            "budget_usd": self.budget_usd,
            "budget_requests_exact": self.budget_requests_exact,
            "requests_per_submix": dict(self.requests_per_submix),
            "requests_per_system_message": dict(self.requests_per_system_message),
            "prices_usd_per_mtok": dict(self.prices_usd_per_mtok),
            "cost_usd": dict(self.cost_usd),
            "budget_buys_requests": dict(self.budget_buys_requests),
            "expected_reasoning_tokens": self.expected_reasoning_tokens,
            "reasoning": self.reasoning,
            "prices_origin": self.prices_origin,
            "prices_as_of": self.prices_as_of,
        }


def _resolved(config: RunConfig) -> ResolvedPrices:
    return resolve_prices(
        config.model,
        input_price=config.input_price,
        output_price=config.output_price,
        price_file=config.price_file,
    )


class _Budget:
    """Counts the plan prefix each (mode, case) budget pays for, one request at a time."""

    def __init__(self, budget_usd: float, prices: dict[str, Pricing], outputs: dict[str, int]) -> None:
        self.budget_usd = budget_usd
        self.rates = {(mode, case): (prices[mode], outputs[case]) for mode in _MODES for case in _CASES}
        self.spent = dict.fromkeys(self.rates, 0.0)
        self.bought = dict.fromkeys(self.rates, 0)
        self.open = set(self.rates)

    def add(self, prompt_tokens: int) -> None:
        for key in list(self.open):
            pricing, output = self.rates[key]
            spent = self.spent[key] + pricing.cost_usd(prompt_tokens, output)
            if spent > self.budget_usd:
                self.open.discard(key)
            else:
                self.spent[key] = spent
                self.bought[key] += 1

    def result(self) -> dict[str, int]:
        return {f"{mode}_{case}": self.bought[(mode, case)] for mode, case in self.rates}


def estimate(plan: Plan | PlanStats | Iterable[Record], config: RunConfig) -> Estimate:
    """Estimate the cost of ``plan`` (a Plan, its PlanStats, or Records in plan order) for ``config``."""
    resolved = _resolved(config)
    prices: dict[str, Pricing] = {mode: resolved.for_mode(mode == "batch") for mode in _MODES}
    reasoning = expected_reasoning_tokens(config)
    expected_out = min(config.expected_output_tokens + reasoning, config.max_tokens)
    outputs = {"worst": config.max_tokens, "expected": expected_out}
    budget = _Budget(config.budget_usd, prices, outputs) if config.budget_usd is not None else None

    if isinstance(plan, PlanStats):
        stats: PlanStats | None = plan
    elif isinstance(plan, Plan):
        stats = plan.stats
    else:
        stats = None
    exact = True
    if stats is not None and (budget is None or not isinstance(plan, Plan)):
        requests = stats.planned_total
        prompt_tokens = stats.prompt_tokens
        per_submix = dict(stats.planned)
        per_message = dict(stats.planned_per_system_message)
        if budget is not None:
            exact = False
            mean_prompt = prompt_tokens / requests if requests else 0.0
            for key, (pricing, output) in budget.rates.items():
                unit = pricing.cost_usd(0, output) + pricing.input_per_mtok * mean_prompt / 1e6
                budget.bought[key] = min(requests, int(budget.budget_usd // unit)) if unit > 0 else requests
    else:
        assert not isinstance(plan, PlanStats)
        records: Iterable[Record] = plan
        requests = prompt_tokens = 0
        per_submix = dict.fromkeys(SUBMIXES, 0)
        per_message = {}
        for record in records:
            requests += 1
            prompt_tokens += record.prompt_tokens
            per_submix[record.submix] = per_submix.get(record.submix, 0) + 1
            label = str(record.system_message_id) if record.system_message_id is not None else "template"
            per_message[label] = per_message.get(label, 0) + 1
            if budget is not None:
                budget.add(record.prompt_tokens)
        if stats is not None:  # a Plan: its stats name template messages precisely
            per_message = dict(stats.planned_per_system_message)
        else:
            per_message = {k: per_message[k] for k in sorted(per_message, key=_label_key)}

    cost = {
        f"{mode}_{case}_usd": prices[mode].cost_usd(prompt_tokens, requests * outputs[case])
        for mode in _MODES
        for case in _CASES
    }
    return Estimate(
        model=config.model,
        encoding=encoding_for_model(config.model, config.price_file),
        requests=requests,
        prompt_tokens=prompt_tokens,
        max_tokens=config.max_tokens,
        expected_output_tokens=expected_out,
        output_tokens_worst=requests * config.max_tokens,
        output_tokens_expected=requests * expected_out,
        budget_usd=config.budget_usd,
        budget_requests_exact=exact,
        requests_per_submix=per_submix,
        requests_per_system_message=per_message,
        prices_usd_per_mtok={
            f"{mode}_{side}": getattr(prices[mode], f"{side}_per_mtok")
            for mode in _MODES
            for side in ("input", "output")
        },
        cost_usd=cost,
        budget_buys_requests=budget.result() if budget is not None else {},
        expected_reasoning_tokens=min(reasoning, expected_out),
        reasoning=resolved.reasoning,
        prices_origin=resolved.origin,
        prices_as_of=resolved.prices_as_of,
    )


def _label_key(label: str) -> tuple[int, int, str]:
    return (0, int(label), "") if label.isdigit() else (1, 0, label)
