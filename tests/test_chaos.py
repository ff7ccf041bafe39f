"""The chaos benchmark, short: a handful of kill -9 over online and batch runs and an export, against the
fake server with faults on; every invariant must hold (bench/bench_chaos.py runs >= 50 kills)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _bench(name: str) -> Any:
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


@pytest.fixture(autouse=True)
def server_in_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_bench("_common"), "SERVER_SUBPROCESS", False)


def test_a_handful_of_kills_breaks_no_invariant(tmp_path: Path) -> None:
    report = _bench("bench_chaos").run(
        kills=4, n=12, seed=7, scenarios=("online", "batch", "export"), quick=True, out_dir=tmp_path
    )
    rows = {r["scenario"]: r for r in report.rows}
    assert set(rows) == {"online", "batch", "export"}
    failed = [f"{c.name}: {c.value} (target {c.target})" for c in report.checks if not c.passed]
    assert not failed, (failed, report.rows, (tmp_path / "chaos-quick.log").read_text()[-3000:])
    assert sum(r["kills"] for r in report.rows) == 4
    for name in ("online", "batch"):
        row = rows[name]
        assert row["billed_usd"] > 0 and row["over_budget_usd"] == 0 and row["answers_lost"] == 0
        assert row["paid_twice"] <= row["in_flight_at_kills"]
    doc = json.loads(report.path.read_text())
    assert doc["params"]["kills"] == 4 and doc["checks"]
