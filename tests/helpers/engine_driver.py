"""Run the engine in a subprocess for the kill -9 test: ``python tests/helpers/engine_driver.py RUN_DIR URL N``.

Plans N synthetic records and answers them against BASE_URL with the budget and concurrency the test uses.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from tracegen.config import RunConfig
from tracegen.engine import generate
from tracegen.records import Record

BUDGET_USD = 0.5
CONCURRENCY = 32


def records(n: int) -> list[Record]:
    """The plan: deterministic, so a resume sees the same request keys."""
    return [Record(id=f"t0.{i}", submix="t0", question=f"Kill test question {i}?") for i in range(n)]


def config(base_url: str) -> RunConfig:
    return RunConfig(
        base_url=base_url, budget_usd=BUDGET_USD, concurrency=CONCURRENCY, max_tokens=200, timeout_s=30
    )


def main() -> None:
    run_dir, base_url, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    asyncio.run(generate(records(n), config(base_url), run_dir))


if __name__ == "__main__":
    main()
