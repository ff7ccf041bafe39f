"""Helpers for tests/batch/, and a driver that dies mid-run (``os._exit``) for the hard-crash tests.

    python tests/helpers/batch.py RUN_DIR BASE_URL N STEP PART [BUDGET_USD [PER_FILE [CONFIG_JSON]]]

runs ``run_batches`` on N synthetic records and exits with code 17, without any cleanup, right after the
durable step STEP ("intent" | "uploaded" | "created" | "collected") of part PART.
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from tracegen.batch import run_batches
from tracegen.config import RunConfig
from tracegen.engine import RunDir, RunResult
from tracegen.planning.tokens import count_chat_tokens, encoding_for_model, pricing_for
from tracegen.records import Record
from tracegen.testing import FakeServer

CRASH_EXIT_CODE = 17
MODEL = "gpt-4o-mini"
POLL_S = 0.02
BUDGET_USD = 0.05
MAX_TOKENS = 64
PER_FILE = 4


def records(n: int, prefix: str = "cot") -> list[Record]:
    """A deterministic plan (a resume sees the same request keys)."""
    return [
        Record(
            id=f"{prefix}.{i}",
            submix=prefix,
            question=f"Question {i}: explain step by step.",
            system_prompt="You are an AI assistant." if i % 2 else "",
            target=str(i),
        )
        for i in range(n)
    ]


def config(base_url: str, run_dir: Path, **changes: object) -> RunConfig:
    values: dict[str, object] = {
        "base_url": base_url,
        "output_dir": run_dir,
        "budget_usd": BUDGET_USD,
        "max_tokens": MAX_TOKENS,
        "timeout_s": 30,
        "max_attempts": 3,
    }
    values.update(changes)
    return RunConfig.model_validate(values)


def open_run(run_dir: Path, cfg: RunConfig, n: int) -> RunDir:
    return RunDir.open(run_dir, {"n": n}, cfg.public_dict())


def main() -> None:
    run_dir, base_url, n, step, part = (
        Path(sys.argv[1]),
        sys.argv[2],
        int(sys.argv[3]),
        sys.argv[4],
        int(sys.argv[5]),
    )
    budget_usd = float(sys.argv[6]) if len(sys.argv) > 6 else BUDGET_USD
    per_file = int(sys.argv[7]) if len(sys.argv) > 7 else PER_FILE
    changes = json.loads(sys.argv[8]) if len(sys.argv) > 8 else {}
    cfg = config(base_url, run_dir, budget_usd=budget_usd, **changes)

    def die(at: str, number: int) -> None:
        if at == step and number == part:
            os._exit(CRASH_EXIT_CODE)  # no finally, no ledger close: a kill -9 at this point

    asyncio.run(
        run_batches(
            records(n),
            cfg,
            open_run(run_dir, cfg, n),
            poll_interval_s=0.02,
            max_requests_per_file=per_file,
            checkpoint=die,
        )
    )


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def journal(run: Path) -> list[dict[str, Any]]:
    return lines(run / "batches.jsonl")


def billed_usd(server: FakeServer) -> float:
    return sum(e["cost_usd"] for e in server.ledger())


async def go(recs: list[Record], cfg: RunConfig, rd: RunDir | Path, **kw: Any) -> RunResult:
    kw.setdefault("poll_interval_s", POLL_S)
    kw.setdefault("max_requests_per_file", PER_FILE)
    return await run_batches(recs, cfg, rd, **kw)


def billed_keys(server: FakeServer) -> collections.Counter[str]:
    return collections.Counter(e["request_key"] for e in server.ledger())


def assert_never_paid_twice(server: FakeServer) -> None:
    twice = {k: c for k, c in billed_keys(server).items() if c > 1}
    assert not twice, f"requests billed more than once: {twice}"


def assert_traces_match_ledger(run: Path, server: FakeServer) -> None:
    """Every trace is one billed answer, with the same tokens and the batch-price cost."""
    by_key = {e["request_key"]: e for e in server.ledger()}
    traces = lines(run / "traces.jsonl")
    assert len({t["request_key"] for t in traces}) == len(traces)
    pricing = pricing_for(MODEL, batch=True)
    for t in traces:
        billed = by_key[t["request_key"]]
        assert billed["kind"] == "batch" and billed["delivered"]
        assert (t["prompt_tokens"], t["completion_tokens"]) == (
            billed["prompt_tokens"],
            billed["completion_tokens"],
        )
        assert t["cost_usd"] == pytest.approx(billed["cost_usd"], abs=1e-12)
        assert t["cost_usd"] == pytest.approx(pricing.cost_usd(t["prompt_tokens"], t["completion_tokens"]))


def spent_in_ledger(run: Path) -> float:
    """What the budget ledger says the run directory spent (closed sessions; leases of crashed ones)."""
    from tracegen.engine.budget import prior_spend_usd

    return prior_spend_usd(lines(run / "ledger.jsonl"))


def worst_case_usd(rec: Record, *, batch_prices: bool) -> float:
    prompt = count_chat_tokens(rec.messages(), encoding_for_model(MODEL))
    worst_prompt = math.ceil(prompt * 1.02) + 8
    return pricing_for(MODEL, batch=batch_prices).cost_usd(worst_prompt, MAX_TOKENS)


if __name__ == "__main__":
    main()
