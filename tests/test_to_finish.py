"""A budget stop says what is left and the budget that finishes it, for Batch API and staged runs too.

stats.json ``to_finish`` (requests_left, requests_planned, more_usd, finish_budget_usd) and the CLI line
"stopped by the budget: N of M requests not sent; about $X more would finish them: `tracegen run … --budget B`".
The proof that the figure is not an under-estimate: rerunning with it finishes the plan.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from helpers import REPO
from helpers.batch import config, open_run, records
from tracegen import pipeline, progress_view
from tracegen.batch import run_batches
from tracegen.cli import app
from tracegen.cli_support import run_exit_line
from tracegen.config import RunConfig, StageConfig
from tracegen.engine.core import finish_figures
from tracegen.stages import stage_path
from tracegen.testing import FakeOptions, FakeServer

SAMPLE = str(REPO / "examples" / "flan_sample")
POLL_S = 0.02
SMALL_BUDGET_USD = 0.00015  # about 7 worst cases of a test request at batch prices
#: Prices (USD per 1M tokens) that make a request cost dollars, so rounding to the cent hides nothing.
DEAR = {"input_price": 1000.0, "output_price": 3000.0}
DEAR_BUDGET_USD = 0.6  # about 6 worst cases of a test request at those prices' batch half


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def stats_of(run: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run / "stats.json").read_text())
    return data


@pytest.fixture
def srv() -> Iterator[FakeServer]:
    with FakeServer(FakeOptions(batch_delay_s=0.05, mean_completion_tokens=40)) as server:
        yield server


# ---- the shared rule -------------------------------------------------------------------------------------------
def test_finish_figures_one_at_a_time_and_all_at_once() -> None:
    online = finish_figures(10, 4, mean_usd=0.5, spent_usd=3.0, last_worst_usd=2.0)
    assert online == {"requests_left": 4, "requests_planned": 10, "more_usd": 2.0, "finish_budget_usd": 7.0}
    batch = finish_figures(10, 4, mean_usd=0.5, spent_usd=3.0, all_worst_usd=8.0)
    assert (
        batch["more_usd"] == 2.0 and batch["finish_budget_usd"] == 11.0
    )  # every worst case reserved at once
    # no answer yet: online has no figure, batch still knows what its reservations need
    assert "finish_budget_usd" not in finish_figures(10, 4, mean_usd=None, spent_usd=0.0, last_worst_usd=1.0)
    assert (
        finish_figures(10, 4, mean_usd=None, spent_usd=0.0, all_worst_usd=1.234)["finish_budget_usd"] == 1.24
    )
    assert finish_figures(10, 0, mean_usd=0.5, spent_usd=3.0) == {"requests_left": 0, "requests_planned": 10}
    # rounded up to the cent, never down
    assert (
        finish_figures(1, 1, mean_usd=0.001, spent_usd=0.0, last_worst_usd=0.0)["finish_budget_usd"] == 0.01
    )


# ---- Batch API -------------------------------------------------------------------------------------------------
async def test_batch_budget_stop_says_what_budget_submits_the_rest(srv: FakeServer, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = config(srv.base_url, run, budget_usd=DEAR_BUDGET_USD, **DEAR)
    recs = records(40)
    first = await run_batches(recs, cfg, open_run(run, cfg, 40), poll_interval_s=POLL_S, total=40)
    assert first.stop_reason == "budget"
    stats = stats_of(run)
    left = stats["to_finish"]
    answered = stats["succeeded"] + stats["rejected"] + stats["failed"]
    assert 0 < answered < 40
    assert (left["requests_left"], left["requests_planned"]) == (40 - answered, 40)
    # the finish budget covers every left request's worst case at batch prices (a part reserves them all)
    parts = [e for e in lines(run / "batches.jsonl") if e["event"] == "part"]
    worst_each = max(p["reserve_usd"] / p["requests"] for p in parts)
    assert left["finish_budget_usd"] >= stats["total_spent_usd"] + left["more_usd"]
    assert left["finish_budget_usd"] <= stats["total_spent_usd"] + left["requests_left"] * worst_each + 0.01
    assert 0 < left["more_usd"] < left["requests_left"] * worst_each  # the bill: answers cost less
    # rerunning with it submits the rest at once and finishes the plan
    cfg2 = cfg.model_copy(update={"budget_usd": left["finish_budget_usd"]})
    again = await run_batches(
        recs, cfg2, open_run(run, cfg2, 40), poll_interval_s=POLL_S, total=40, max_requests_per_file=50
    )
    assert again.stop_reason == "completed"
    assert len(lines(run / "traces.jsonl")) == 40
    new_parts = [e for e in lines(run / "batches.jsonl") if e["event"] == "part"][len(parts) :]
    assert new_parts[0]["requests"] == left["requests_left"]
    assert "to_finish" not in stats_of(run)


async def test_batch_finish_budget_has_room_for_failed_requests_a_rerun_resends(
    srv: FakeServer, tmp_path: Path
) -> None:
    srv.update(batch_fail_rate=0.5, seed=3)
    run = tmp_path / "run"
    cfg = config(srv.base_url, run, budget_usd=DEAR_BUDGET_USD, max_attempts=1, **DEAR)
    recs = records(40)
    first = await run_batches(recs, cfg, open_run(run, cfg, 40), poll_interval_s=POLL_S, total=40)
    stats = stats_of(run)
    assert first.stop_reason == "budget" and stats["failed"] > 0
    left = stats["to_finish"]
    assert left["requests_left"] == 40 - stats["succeeded"] - stats["rejected"] - stats["failed"]
    # the failed ones are sent again by the rerun: it still submits everything at once and finishes
    srv.update(batch_fail_rate=0.0)
    cfg2 = cfg.model_copy(update={"budget_usd": left["finish_budget_usd"]})
    n_parts = len([e for e in lines(run / "batches.jsonl") if e["event"] == "part"])
    again = await run_batches(recs, cfg2, open_run(run, cfg2, 40), poll_interval_s=POLL_S, total=40)
    assert again.stop_reason == "completed" and len(lines(run / "traces.jsonl")) == 40
    new_parts = [e for e in lines(run / "batches.jsonl") if e["event"] == "part"][n_parts:]
    assert new_parts[0]["requests"] == left["requests_left"] + stats["failed"]


async def test_batch_to_finish_without_total_counts_the_rest_of_the_plan(
    srv: FakeServer, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    cfg = config(srv.base_url, run, budget_usd=SMALL_BUDGET_USD)
    first = await run_batches(iter(records(30)), cfg, open_run(run, cfg, 30), poll_interval_s=POLL_S)
    assert first.stop_reason == "budget"
    stats = stats_of(run)
    assert stats["planned"] == stats["to_finish"]["requests_planned"] == 30
    answered = stats["succeeded"] + stats["rejected"] + stats["failed"]
    assert stats["to_finish"]["requests_left"] == 30 - answered


# ---- staged runs -----------------------------------------------------------------------------------------------
def staged(out: Path, base_url: str | None, **fields: Any) -> RunConfig:
    stages = [
        {"name": "gpt35", "model": "gpt-3.5-turbo"},
        {"name": "gpt4", "model": "gpt-4", "count": 12, "max_tokens": 300},
    ]
    values: dict[str, Any] = {"source": [SAMPLE], "n": 40, "output_dir": out, "base_url": base_url}
    values.update(max_tokens=200, stages=[StageConfig(**s) for s in stages])
    return RunConfig(**{**values, **fields})


# 0.004: stage 1 stopped by the budget, stage 2 could not afford one request (walked over its plan);
# 0.06: stage 1 finished, stage 2 stopped by the budget (its own figures)
@pytest.mark.parametrize("budget", [0.004, 0.06])
def test_staged_budget_stop_sums_the_stages_and_its_budget_finishes(tmp_path: Path, budget: float) -> None:
    out = tmp_path / "run"
    with FakeServer() as srv:
        summary = pipeline.run(staged(out, srv.base_url, budget_usd=budget))
        assert summary["stop_reason"] == "budget"
        stats = stats_of(out)
        left = stats["to_finish"]
        per = {
            name: stats_of(stage_path(out, name)) if (stage_path(out, name) / "stats.json").exists() else None
            for name in ("gpt35", "gpt4")
        }
        done35 = per["gpt35"]["succeeded"] + per["gpt35"]["rejected"] + per["gpt35"]["failed"]  # type: ignore[index]
        s4 = per["gpt4"]
        done4 = 0 if s4 is None else s4["succeeded"] + s4["rejected"] + s4["failed"]
        assert left["requests_planned"] == 40 + 12
        assert left["requests_left"] == 52 - done35 - done4
        assert left["finish_budget_usd"] > stats["total_spent_usd"] + left["more_usd"] * 0.99
        if budget == 0.004:
            assert per["gpt35"]["stop_reason"] == "budget"  # type: ignore[index]
            assert s4 is None or s4["succeeded"] == 0
        else:
            assert per["gpt35"]["stop_reason"] == "completed" and s4 is not None  # type: ignore[index]
            assert s4["stop_reason"] == "budget"
        again = pipeline.run(staged(out, srv.base_url, budget_usd=left["finish_budget_usd"]))
    assert again["stop_reason"] == "completed", again
    assert "to_finish" not in stats_of(out)
    assert len(lines(stage_path(out, "gpt4") / "traces.jsonl")) == 12
    assert len(lines(stage_path(out, "gpt35") / "traces.jsonl")) == 40


def test_staged_stop_names_a_stage_cap_that_must_be_raised(tmp_path: Path) -> None:
    out = tmp_path / "run"
    stages = [
        {"name": "gpt4", "model": "gpt-4", "count": 12, "budget_usd": 0.02},
        {"name": "gpt35", "model": "gpt-3.5-turbo"},
    ]
    cfg = staged(out, None, stages=[StageConfig(**s) for s in stages], budget_usd=5.0)
    with FakeServer() as srv:
        summary = pipeline.run(cfg.model_copy(update={"base_url": srv.base_url}))
    assert summary["stop_reason"] == "budget"
    left = stats_of(out)["to_finish"]
    assert left["stage_budgets_usd"]["gpt4"] > 0.02 and "gpt35" not in left["stage_budgets_usd"]
    line = progress_view.budget_stop_line(stats_of(out), lambda usd: f"tracegen run --budget {usd:g}")
    assert line is not None and "(first raise budget_usd in the config: stage gpt4 to $" in line


# ---- the CLI line ----------------------------------------------------------------------------------------------
runner = CliRunner()


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def _stop_line(text: str) -> str:
    return next(x for x in text.splitlines() if x.startswith("stopped by the budget"))


def test_cli_prints_the_line_for_a_batch_run(tmp_path: Path) -> None:
    out = str(tmp_path / "run")
    args = ["run", "-s", SAMPLE, "--n", "30", "--mode", "batch", "--poll-interval", "0.05", "--rehearse"]
    args += ["--budget", "0.001", "-o", out]
    code, text = _run(*args)
    stats = stats_of(Path(out))
    assert stats["stop_reason"] == "budget" and code == 3, text
    left = stats["to_finish"]
    line = _stop_line(text)
    assert f"{left['requests_left']} of {left['requests_planned']} requests not sent" in line
    assert f"--budget {left['finish_budget_usd']:g}`" in line
    code, text = _run(*args[:-4], "--budget", f"{left['finish_budget_usd']:g}", "-o", out)
    assert stats_of(Path(out))["stop_reason"] == "completed" and code == 0, text


def test_cli_prints_the_line_for_a_staged_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg_file = tmp_path / "stages.yaml"
    cfg_file.write_text(
        "max_tokens: 200\nstages:\n  - name: gpt35\n    model: gpt-3.5-turbo\n"
        "  - name: gpt4\n    model: gpt-4\n    count: 12\n    max_tokens: 300\n"
    )
    args = ["run", "--config", str(cfg_file), "-s", SAMPLE, "--n", "40", "--rehearse", "--budget", "0.01"]
    code, text = _run(*args, "-o", str(out))
    stats = stats_of(out)
    assert stats["stop_reason"] == "budget" and code == 3, text
    left = stats["to_finish"]
    line = _stop_line(text)
    assert f"{left['requests_left']} of {left['requests_planned']} requests not sent" in line
    assert f"--budget {left['finish_budget_usd']:g}`" in line
    code, text = _run(*args[:-2], "--budget", f"{left['finish_budget_usd']:g}", "-o", str(out))
    assert stats_of(out)["stop_reason"] == "completed" and code == 0, text


def test_the_line_reads_a_staged_run_dir_when_the_summary_is_flat(tmp_path: Path) -> None:
    tf = {"requests_left": 3, "requests_planned": 9, "more_usd": 0.5, "finish_budget_usd": 2.5}
    (tmp_path / "stats.json").write_text(json.dumps({"stop_reason": "budget", "to_finish": tf}))
    console = Console(record=True, width=200)
    code = run_exit_line(console, {"stop_reason": "budget", "run": {"stop_reason": "budget"}}, 1.0, tmp_path)
    assert code == 3
    assert "3 of 9 requests not sent; about $0.5000 more would finish them" in console.export_text()
