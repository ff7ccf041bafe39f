"""Smoke test of the benchmarks in bench/: each one's run() on tiny sizes, so the scripts do not rot.

No timing is asserted (timings belong to the benchmarks); what is asserted holds at any speed: every request
answered, the JSON written with its checks, spend never above the budget, nothing paid twice beyond the
requests in flight at a kill -9, the planner's peak RSS measured.
"""

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
    """The fake server in a thread of this process: it starts faster, and no figure is read here."""
    monkeypatch.setattr(_bench("_common"), "SERVER_SUBPROCESS", False)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench-cache")


def _written(report: Any) -> dict[str, Any]:
    assert report.path is not None and report.path.exists()
    doc: dict[str, Any] = json.loads(report.path.read_text())
    assert doc["checks"] and doc["rows"] and doc["loadavg_before"] is not None
    return doc


def test_client(tmp_path: Path, cache: Path) -> None:
    report = _bench("bench_client").run(
        n=150, concurrency=32, repeat=1, quick=True, out_dir=tmp_path, cache_dir=cache
    )
    _written(report)
    assert {r["row"] for r in report.rows} == {
        "bare aiohttp loop",
        "engine (http)",
        "engine (aiohttp)",
        "engine (sdk)",
        "engine (http), tokens counted",
    }
    assert all(r["ok"] == 150 and r["errors"] == 0 for r in report.rows)
    assert all(r["cpu_ms_per_req"] > 0 and r["vs_bare"] > 0 for r in report.rows)


def test_latency(tmp_path: Path, cache: Path) -> None:
    report = _bench("bench_latency").run(
        n=150, concurrencies=[64], repeat=1, latency_s=0.1, jitter_s=0.03, out_dir=tmp_path, cache_dir=cache
    )
    _written(report)
    assert len(report.rows) == 2 and all(r["ok"] == 150 for r in report.rows)
    assert all(r["ideal_s"] == pytest.approx(150 * 0.1 / 64, abs=0.01) for r in report.rows)


def test_ratelimit(tmp_path: Path, cache: Path) -> None:
    mod = _bench("bench_ratelimit")
    report = mod.run(
        rpm=6000,
        duration_s=2.0,
        cases=[("per_second", False, "rpm")],
        latency_s=0.05,
        quick=True,
        out_dir=tmp_path,
        cache_dir=cache,
    )
    _written(report)
    (row,) = report.rows
    assert row["failed"] == 0 and row["unanswered"] == 0
    assert row["learned_rpm"] == 6000  # learned from the server's headers
    assert row["util"] > 0 and row["util_whole_run"] > 0


def test_budget(tmp_path: Path, cache: Path) -> None:
    report = _bench("bench_budget").run(n=150, cases=["clean"], quick=True, out_dir=tmp_path, cache_dir=cache)
    _written(report)
    (row,) = report.rows
    assert row["s1_stop"] == "budget"
    assert 0 < row["s1_server_spend_ratio"] <= row["s2_server_spend_ratio"] <= 1.0


def test_scale(tmp_path: Path, cache: Path) -> None:
    report = _bench("bench_scale").run(sizes=[1000], quick=True, out_dir=tmp_path, cache_dir=cache)
    _written(report)
    (row,) = report.rows
    assert row["planned"] == 200 and row["peak_rss_mb"] > row["baseline_rss_mb"] > 0


def test_dedup_mode() -> None:
    result = _bench("bench_dedup").run_mode(300, "exact", 0)
    assert result["records"] == 300 and 0 < result["kept"] <= 300


def test_resume(tmp_path: Path, cache: Path) -> None:
    report = _bench("bench_resume").run(
        n=100, concurrency=8, latency_s=0.05, quick=True, out_dir=tmp_path, cache_dir=cache
    )
    _written(report)
    (row,) = report.rows
    assert row["session2_exit"] == 0
    assert row["paid_twice_beyond_in_flight"] == 0
    assert row["traces_unique"] == row["traces_final"] == 100


def test_command(tmp_path: Path, cache: Path) -> None:
    """The whole `tracegen run` and the bare loop process, each as a child process, against one server."""
    report = _bench("bench_command").run(
        zero_n=[120],
        latency=[(120, 32)],
        latency_s=0.05,
        jitter_s=0.01,
        repeat=1,
        out_dir=tmp_path,
        cache_dir=cache,
    )
    doc = _written(report)
    assert len(report.rows) == 2
    assert all(
        r["command_s"] > r["generate_s"] > 0 and r["bare_process_s"] > r["bare_loop_s"] > 0
        for r in report.rows
    )
    assert {r["row"] for r in doc["all_repetitions"]} == {"bare loop process", "tracegen run"}
    assert all(r["ok"] == r["server_requests"] == 120 for r in doc["all_repetitions"])


# ---- chaos: kill -9 at a handful of moments (the full benchmark runs >= 50) --------------------------------
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
