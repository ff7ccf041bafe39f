"""Benchmark 4, budget: a dollar budget that binds mid-run, checked against the fake server's own ledger.

    .venv/bin/python bench/bench_budget.py [--quick] [--n 20000] [--budget-share 0.4]

A plan of ``--n`` requests (cached) is run with ``budget_usd`` set to ``--budget-share`` of its expected cost
(prompt tokens are known; answers average the fake server's 120 tokens), so the budget binds mid-run. The
reference is the server's ledger: the sum of ``cost_usd`` over every billed answer, delivered or not (a
request that timed out or was cut off mid-answer was billed all the same, as a real provider would).

Cases (fake server in a child process, latency 0.2 s +/- 0.1 s, 256 in flight):

* ``clean`` -- no faults;
* ``faults`` -- 1 % timeouts (server holds 3 s, client gives up after 2 s: billed, outcome unknown to the
  client), 1 % connections dropped mid-answer (billed, unknown), 1 % 500s (not billed, retried).

Each case then runs a second session on the same run directory (a rerun: the budget belongs to the run
directory), and the server's total after both sessions is checked again. Figures: server spend / budget
after session 1 and after session 2 (never above 1; target >= 0.98), the engine's own account of its spend
(unknown outcomes charged at their worst-case reservation), and requests answered.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

import _common
from _common import BENCH_MODEL, Check, Report, loadavg, plan_config, planned_dir, print_report, save

from tracegen.engine import generate
from tracegen.planning.plan import iter_plan
from tracegen.planning.tokens import pricing_for
from tracegen.testing import FakeOptions

NAME = "budget"
MEAN_COMPLETION_TOKENS = 120

CASES: dict[str, dict[str, Any]] = {
    "clean": {},
    "faults": {"timeout_rate": 0.01, "drop_rate": 0.01, "error_rate_500": 0.01, "hang_s": 3.0},
}


def expected_cost_usd(plan_dir: Path) -> tuple[int, float]:
    """(requests, expected cost) of the plan: exact prompt tokens, mean-length answers."""
    pricing = pricing_for(BENCH_MODEL)
    n = prompt = 0
    for rec in iter_plan(plan_dir):
        n += 1
        prompt += rec.prompt_tokens
    return n, pricing.cost_usd(prompt, n * MEAN_COMPLETION_TOKENS)


async def _case(plan_dir: Path, work: Path, name: str, budget_usd: float, n: int) -> dict[str, Any]:
    opts = FakeOptions(
        latency_mean_s=0.2, latency_jitter_s=0.1, mean_completion_tokens=MEAN_COMPLETION_TOKENS, **CASES[name]
    )
    run_dir = work / f"run-{name}"
    row: dict[str, Any] = {"case": name, "planned": n, "budget_usd": round(budget_usd, 6)}
    with _common.fake_server(opts) as srv:
        cfg = plan_config(
            run_dir,
            base_url=srv.base_url,
            concurrency=256,
            budget_usd=budget_usd,
            timeout_s=2.0 if name == "faults" else 60.0,
        )
        for session in (1, 2):
            result = await generate(iter_plan(plan_dir), cfg, run_dir, total=n, grace_s=5.0)
            ledger = srv.ledger()
            server_usd = sum(e["cost_usd"] for e in ledger)
            row[f"s{session}_server_spend_ratio"] = round(server_usd / budget_usd, 5)
            row[f"s{session}_engine_spent_ratio"] = round(result.total_spent_usd / budget_usd, 5)
            row[f"s{session}_answered"] = result.succeeded
            row[f"s{session}_stop"] = result.stop_reason
            if session == 1:
                row["billed"] = len(ledger)
                row["undelivered_billed"] = sum(1 for e in ledger if not e["delivered"])
                row["unknown_usd"] = round(result.stats["reserved_usd_unknown"], 6)
                row["timeouts"] = int(result.stats["n_timeouts"])
                row["conn_errors"] = int(result.stats["n_connection_errors"])
        row["s2_billed_more"] = len(ledger) - row["billed"]
    return row


def run(
    *,
    n: int = 20_000,
    budget_share: float = 0.4,
    cases: list[str] | None = None,
    quick: bool = False,
    out_dir: Path | None = None,
    cache_dir: Path | None = None,
) -> Report:
    """Measure and return the report (also written as JSON); see the module docstring."""
    load_before = loadavg()
    plan_dir = planned_dir(n, cache_dir)
    planned, expected = expected_cost_usd(plan_dir)
    budget_usd = expected * budget_share
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tracegen-bench-budget-") as tmp:
        for name in cases or list(CASES):
            rows.append(asyncio.run(_case(plan_dir, Path(tmp), name, budget_usd, planned)))
    checks: list[Check] = []
    for r in rows:
        c = r["case"]
        worst = max(r["s1_server_spend_ratio"], r["s2_server_spend_ratio"])
        checks.append(Check(NAME, f"server spend / budget, max over sessions ({c})", worst, 1.0, "lower"))
        checks.append(
            Check(
                NAME, f"server spend / budget after the run ({c})", r["s1_server_spend_ratio"], 0.98, "higher"
            )
        )
        checks.append(
            Check(NAME, f"engine's own spend / budget ({c})", r["s2_engine_spent_ratio"], 1.0, "lower")
        )
    report = Report(NAME, rows, checks)
    save(
        report,
        {
            "params": {
                "n": n,
                "budget_share": budget_share,
                "expected_plan_cost_usd": expected,
                "cases": CASES,
            }
        },
        out_dir,
        load_before,
        quick,
    )
    return report


def main(argv: list[str]) -> Report:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    ap.add_argument("--n", type=int, default=None, help="planned requests (default 20,000; quick 2,000)")
    ap.add_argument("--budget-share", type=float, default=0.4, help="budget as a share of the expected cost")
    ap.add_argument("--out-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    n = args.n or (2_000 if args.quick else 20_000)
    report = run(n=n, budget_share=args.budget_share, quick=args.quick, out_dir=args.out_dir)
    print_report(report, f"budget: plan of {n:,} requests, budget {args.budget_share:g} of its expected cost")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
