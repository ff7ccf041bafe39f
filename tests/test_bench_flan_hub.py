"""Smoke test of bench/bench_flan_hub.py on a tiny layout, so the script does not rot (no timing asserted)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_bench_flan_hub_runs(tmp_path: Path) -> None:
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    mod = importlib.import_module("bench_flan_hub")
    report = mod.run(sizes=[4000], quick=True, out_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert report.path is not None and report.path.exists()
    assert [r["row"] for r in report.rows] == ["local", "hub"]
    local, hub = report.rows
    assert local["planned"] == hub["planned"] > 0  # same zero-shot rows, read from disk or from the Hub
    for r in report.rows:
        assert r["source_passes"] == 1 and r["task_sizes_read"] == "columns"
        assert r["peak_rss_mb"] > 0 and r["bytes_read_per_row"] > 0
