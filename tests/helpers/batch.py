"""Helpers for tests/batch/, and a driver that dies mid-run (``os._exit``) for the hard-crash tests.

    python tests/helpers/batch.py RUN_DIR BASE_URL N STEP PART [BUDGET_USD [PER_FILE [CONFIG_JSON]]]

runs ``run_batches`` on N synthetic records and exits with code 17, without any cleanup, right after the
durable step STEP ("intent" | "uploaded" | "created" | "collected") of part PART.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from tracegen.batch import run_batches
from tracegen.config import RunConfig
from tracegen.engine import RunDir
from tracegen.records import Record

CRASH_EXIT_CODE = 17
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


if __name__ == "__main__":
    main()
