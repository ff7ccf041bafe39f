"""Benchmark 3, rate-limited: achieved throughput against server-enforced RPM / TPM limits.

    .venv/bin/python bench/bench_ratelimit.py [--quick] [--duration-s 75] [--rpm 6000] [--all]

The fake server (child process, latency 0.3 s +/- 0.1 s) enforces an RPM and a TPM limit with OpenAI's
``x-ratelimit-*`` headers and 429s, in one of its two modes: ``rolling`` (at most the limit in any 60 s window)
or ``per_second`` (pro rata: a bucket of one second's share). A request costs 1 request and
``prompt_tokens + max_tokens`` tokens (the server, like OpenAI, counts the maximum).

Cases: each mode with the limits given to the client (``requests_per_minute`` / ``tokens_per_minute``, as
``--rpm/--tpm`` do) and with no limits given, so the client must learn them from the headers. In every case
both limits are enforced; in half of the cases the TPM limit binds (set to 0.8x of the token rate RPM
allows), in the other half RPM binds (TPM at 2x). ``--all`` runs the full matrix (8 cases). Each case sends
as many requests as the binding limit admits in ``--duration-s`` (default 75 s: more than the rolling
minute).

Figures per case: utilization of the binding limit = max(requests/min / RPM, server-counted tokens/min /
TPM), in the steady state (``util``: the completion rate between 5 % and 95 % of the run, from the engine's
progress reports; the token rate uses the run's mean billed tokens per request) and over the whole run
(``util_whole_run``: start-up and tail included, each about one latency plus the probe, so it approaches the
steady figure as runs get longer); the share of requests answered 429 (server counters), and failed
requests. Targets: steady >= 0.97 of the limit, < 0.5 % 429s, 0 failed. The client keeps 2 % headroom
(its buckets refill at 0.98 x the limit), so 0.98 is the most it aims for.

Gateway cases (``gateway`` = the fake server's gateway mode, per-second RPM; ``gateway_rolling`` = a rolling
minute): 429s without any ``x-ratelimit-*`` header, retry-after only as ``llm_provider-retry-after``, as a
LiteLLM proxy enforcing its own limit answers; the client must find the rate (AIMD on requests/min). The
default set runs ``gateway``; ``--gateway`` runs both. Figures: the 429 share and failed records (target:
0 failed with ``--max-attempts 4``; 429s < 5 %), and the steady utilization (INFO: nobody told the rate).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import tempfile
from pathlib import Path
from typing import Any

import _common
from _common import (
    BENCH_MAX_TOKENS,
    Check,
    Report,
    loadavg,
    plan_config,
    planned_dir,
    print_report,
    save,
    timed,
)

from tracegen.engine import Progress, generate
from tracegen.planning.plan import iter_plan
from tracegen.testing import FakeOptions

NAME = "ratelimit"
PLAN_N = 20_000

#: (mode, limits given to the client, binding limit)
DEFAULT_CASES: list[tuple[str, bool, str]] = [
    ("rolling", True, "rpm"),
    ("rolling", False, "tpm"),
    ("per_second", True, "tpm"),
    ("per_second", False, "rpm"),
    ("gateway", False, "rpm"),
]
GATEWAY_CASES: list[tuple[str, bool, str]] = [("gateway", False, "rpm"), ("gateway_rolling", False, "rpm")]
ALL_CASES = [(m, g, b) for m in ("rolling", "per_second") for g in (True, False) for b in ("rpm", "tpm")]
ALL_CASES += GATEWAY_CASES


def _mean_request_tokens(plan_dir: Path, n: int) -> float:
    total = count = 0
    for rec in itertools.islice(iter_plan(plan_dir), n):
        total += rec.prompt_tokens + BENCH_MAX_TOKENS
        count += 1
    return total / max(count, 1)


async def _case(
    plan_dir: Path,
    work: Path,
    mode: str,
    given: bool,
    binding: str,
    rpm: int,
    duration_s: float,
    mean_tokens: float,
    latency_s: float,
) -> dict[str, Any]:
    rpm_tokens = rpm * mean_tokens  # tokens/min when RPM binds
    tpm = int(rpm_tokens * (0.8 if binding == "tpm" else 2.0))
    admits_per_min = min(rpm, tpm / mean_tokens)
    n = min(PLAN_N, max(50, round(admits_per_min * duration_s / 60)))
    gateway = mode.startswith("gateway")
    opts = FakeOptions(
        requests_per_minute=rpm,
        tokens_per_minute=None if gateway else tpm,
        ratelimit_mode="rolling" if mode in ("rolling", "gateway_rolling") else "per_second",
        latency_mean_s=latency_s,
        latency_jitter_s=latency_s / 3,
        gateway=gateway,
    )
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=work))
    with _common.fake_server(opts) as srv:
        cfg = plan_config(
            run_dir,
            base_url=srv.base_url,
            concurrency=256,
            budget_usd=10_000.0,
            timeout_s=60.0,
            requests_per_minute=float(rpm) if given else None,
            tokens_per_minute=float(tpm) if given else None,
            max_attempts=4 if gateway else 8,
        )
        samples: list[tuple[float, int]] = []

        def on_progress(p: Progress) -> None:
            samples.append((p.elapsed_s, p.succeeded + p.failed + p.rejected))

        with timed() as t:
            result = await generate(
                itertools.islice(iter_plan(plan_dir), n), cfg, run_dir, total=n, on_progress=on_progress
            )
        ledger = srv.ledger()
        counters = srv.counters()
    minutes = t.wall_s / 60
    billed_tokens = sum(e["prompt_tokens"] for e in ledger) + len(ledger) * BENCH_MAX_TOKENS
    req_util = len(ledger) / minutes / rpm
    tok_util = billed_tokens / minutes / tpm
    # steady state: the completion rate between 5 % and 95 % of the run (start-up and tail excluded)
    mid = [(e, d) for e, d in samples if 0.05 * n <= d <= 0.95 * n]
    steady_rps = (mid[-1][1] - mid[0][1]) / (mid[-1][0] - mid[0][0]) if len(mid) > 1 else 0.0
    tokens_per_request = billed_tokens / max(len(ledger), 1)
    steady_util = max(steady_rps * 60 / rpm, steady_rps * 60 * tokens_per_request / tpm)
    requests = counters["requests"]
    return {
        "mode": mode,
        "limits": "given" if given else "learned",
        "binding": binding,
        "rpm": rpm,
        "tpm": tpm,
        "n": n,
        "wall_s": round(t.wall_s, 1),
        "rpm_util": round(req_util, 4),
        "tpm_util": round(tok_util, 4),
        "util_whole_run": round(max(req_util, tok_util), 4),
        "util": round(steady_util, 4),
        "share_429": round(counters["rate_limited"] / requests, 5) if requests else 0.0,
        "n_429": counters["rate_limited"],
        "failed": result.failed,
        "unanswered": n - result.succeeded,
        "retries": int(result.stats["n_retries"]),
        "learned_rpm": result.stats["limits"]["requests_per_minute"],
        "learned_tpm": result.stats["limits"]["tokens_per_minute"],
    }


def run(
    *,
    rpm: int = 6000,
    duration_s: float = 75.0,
    cases: list[tuple[str, bool, str]] | None = None,
    latency_s: float = 0.3,
    quick: bool = False,
    out_dir: Path | None = None,
    cache_dir: Path | None = None,
) -> Report:
    """Measure and return the report (also written as JSON); see the module docstring."""
    load_before = loadavg()
    cases = cases or DEFAULT_CASES
    plan_dir = planned_dir(PLAN_N if not quick else 2_000, cache_dir)
    mean_tokens = _mean_request_tokens(plan_dir, 5_000)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tracegen-bench-ratelimit-") as tmp:
        for mode, given, binding in cases:
            rows.append(
                asyncio.run(
                    _case(plan_dir, Path(tmp), mode, given, binding, rpm, duration_s, mean_tokens, latency_s)
                )
            )
            rows[-1]["loadavg_1m"] = loadavg()[0] if loadavg() else None
    checks: list[Check] = []
    for r in rows:
        if r["mode"].startswith("gateway"):
            label = f"{r['mode']}: 429s without limit headers"
            checks.append(Check(NAME, f"steady throughput / limit ({label})", r["util"], None, "higher"))
            checks.append(Check(NAME, f"429 share ({label})", r["share_429"] * 100, 5.0, "lower", "%"))
            checks.append(Check(NAME, f"failed ({label})", float(r["failed"] + r["unanswered"]), 0, "lower"))
            continue
        label = f"{r['mode']}, {r['limits']}, {r['binding'].upper()} binds"
        checks.append(Check(NAME, f"steady throughput / limit ({label})", r["util"], 0.97, "higher"))
        checks.append(Check(NAME, f"429 share ({label})", r["share_429"] * 100, 0.5, "lower", "%"))
        checks.append(Check(NAME, f"failed ({label})", float(r["failed"] + r["unanswered"]), 0, "lower"))
    report = Report(NAME, rows, checks)
    save(
        report,
        {
            "params": {
                "rpm": rpm,
                "duration_s": duration_s,
                "latency_mean_s": latency_s,
                "max_tokens": BENCH_MAX_TOKENS,
                "mean_request_tokens": round(mean_tokens, 1),
            }
        },
        out_dir,
        load_before,
        quick,
    )
    return report


def main(argv: list[str]) -> Report:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run (10 s cases)")
    ap.add_argument("--rpm", type=int, default=6000, help="server RPM limit (TPM derived from it)")
    ap.add_argument("--duration-s", type=float, default=None, help="target length of each case (default 75)")
    ap.add_argument("--all", action="store_true", help="the full matrix: 8 cases and the 2 gateway cases")
    ap.add_argument("--gateway", action="store_true", help="only the gateway cases (429s without headers)")
    ap.add_argument("--latency-s", type=float, default=0.3, help="mean server latency, seconds")
    ap.add_argument("--out-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    duration = args.duration_s or (10.0 if args.quick else 75.0)
    report = run(
        rpm=args.rpm,
        duration_s=duration,
        cases=ALL_CASES if args.all else GATEWAY_CASES if args.gateway else None,
        latency_s=args.latency_s,
        quick=args.quick,
        out_dir=args.out_dir,
    )
    print_report(report, f"rate-limited: RPM {args.rpm:,}, ~{duration:g} s per case")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
