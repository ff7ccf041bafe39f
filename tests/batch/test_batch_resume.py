"""Batch resume accounting: a rerun after kill -9 continues with exactly the budget really left."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import HELPERS
from helpers.batch import (
    CRASH_EXIT_CODE,
    assert_never_paid_twice,
    assert_traces_match_ledger,
    billed_usd,
    config,
    go,
    journal,
    lines,
    open_run,
    records,
    spent_in_ledger,
    worst_case_usd,
)
from tracegen.testing import FakeOptions, FakeServer

N = 10


@pytest.fixture
def srv() -> Iterator[FakeServer]:
    with FakeServer(FakeOptions(batch_delay_s=0.3, mean_completion_tokens=40)) as server:
        yield server


def tight_budget() -> float:
    """Room for 8 worst cases of 10 requests: enough once answers settle below their worst case."""
    return 8 * max(worst_case_usd(r, batch_prices=True) for r in records(N))


async def test_a_tight_budget_completes_without_a_crash(srv: FakeServer, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = config(srv.base_url, run, budget_usd=tight_budget())
    result = await go(records(N), cfg, open_run(run, cfg, N), max_requests_per_file=50)
    assert result.stop_reason == "completed" and result.succeeded == N
    assert billed_usd(srv) <= tight_budget()


@pytest.mark.parametrize("step", ["leased", "created"])
async def test_resume_after_kill_releases_the_killed_sessions_part(
    srv: FakeServer, tmp_path: Path, step: str
) -> None:
    """Issue 15: killed once part 1 exists, the rerun collected part 1 and then stopped "budget"."""
    run = tmp_path / "run"
    budget = tight_budget()
    driver = [sys.executable, str(HELPERS / "batch.py"), str(run), srv.base_url, str(N), step, "1"]
    proc = await asyncio.to_thread(
        subprocess.run, [*driver, repr(budget), "50"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == CRASH_EXIT_CODE, proc.stderr
    parts = [e for e in journal(run) if e["event"] == "part"]
    assert [p["part"] for p in parts] == [1] and parts[0][
        "requests"
    ] == 8  # part 1 holds nearly all the budget

    cfg = config(srv.base_url, run, budget_usd=budget)
    result = await go(records(N), cfg, open_run(run, cfg, N), max_requests_per_file=50)
    assert result.stop_reason == "completed", result.stats
    assert result.succeeded == N and len(lines(run / "traces.jsonl")) == N
    assert billed_usd(srv) <= budget
    assert_never_paid_twice(srv)
    assert_traces_match_ledger(run, srv)
    assert spent_in_ledger(run) == pytest.approx(billed_usd(srv), abs=1e-12)
    assert result.total_spent_usd == pytest.approx(billed_usd(srv), abs=1e-12)
    assert result.stats["batch"]["parts_collected"] >= 2
