"""Benchmark 1, client overhead: the whole generation step against a bare aiohttp loop, zero latency.

    .venv/bin/python bench/bench_client.py [--quick] [--n 20000] [--concurrency 256] [--repeat 2]

A plan of ``--n`` requests (planned once from a synthetic FLAN source, cached) is answered by the fake server
(zero latency, no limits) running in a child process, so client and server sit on different cores. Rows:

* ``bare aiohttp loop`` -- the reference: the same request bodies posted by ``--concurrency`` workers on one
  aiohttp session, json in and out, nothing else;
* ``engine (http)`` -- ``tracegen.engine.generate`` over the plan file: read + parse plan records, request
  key, budget reservation (a budget is set, so the ledger leases), limiter, retry wrapper, durable fsynced
  write of traces.jsonl -- on the default transport, tracegen's own HTTP/1.1 client;
* ``engine (aiohttp)`` -- the same on the aiohttp transport;
* ``engine (sdk)`` -- the same with ``transport="sdk"`` (openai.AsyncOpenAI);
* ``engine (http), tokens counted`` -- plan records without their prompt-token count, so the engine counts
  them (tiktoken) itself.

Figures: completed requests/s, client CPU ms per request (``time.process_time`` of this process: every thread,
the server excluded), and the ratio to the bare loop of the same repetition. Rows are interleaved
``--repeat`` times; the fastest repetition of each row counts, and ratios are best against best (noise on a
shared machine only slows things).
Targets (default transport): engine >= 0.6 of the bare loop, <= 0.5 ms CPU per request.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _common
from _common import (
    Check,
    Report,
    bare_loop,
    loadavg,
    plan_bodies,
    plan_config,
    planned_dir,
    print_report,
    raise_fd_limit,
    save,
    timed,
)

from tracegen.engine import generate
from tracegen.planning.plan import iter_plan
from tracegen.records import Record
from tracegen.testing import FakeOptions

NAME = "client"
TIMEOUT_S = 60.0


def _without_tokens(plan_dir: Path) -> Iterator[Record]:
    for rec in iter_plan(plan_dir):
        rec.prompt_tokens = 0
        yield rec


async def _engine(
    plan_dir: Path, work: Path, base_url: str, n: int, concurrency: int, transport: str, count_tokens: bool
) -> dict[str, Any]:
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=work))
    cfg = plan_config(
        run_dir,
        base_url=base_url,
        concurrency=concurrency,
        budget_usd=10_000.0,
        timeout_s=TIMEOUT_S,
        transport=transport,
    )
    records = _without_tokens(plan_dir) if count_tokens else iter_plan(plan_dir)
    with timed() as t:
        result = await generate(records, cfg, run_dir, total=n)
    return {
        "ok": result.succeeded,
        "errors": result.failed + result.rejected + (n - result.succeeded - result.failed - result.rejected),
        "timeouts": int(result.stats["n_timeouts"]),
        "wall_s": t.wall_s,
        "cpu_s": t.cpu_s,
    }


async def _measure(
    plan_dir: Path, work: Path, n: int, concurrency: int, repeat: int, transports: list[str]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with _common.fake_server(FakeOptions()) as srv:
        cfg = plan_config(work / "unused", base_url=srv.base_url)
        bodies = plan_bodies(plan_dir, cfg)[:n]
        await bare_loop(srv.base_url, bodies[: min(n, 2000)], concurrency, TIMEOUT_S)  # warm up both sides
        for rep in range(repeat):
            srv.reset()
            ref = await bare_loop(srv.base_url, bodies, concurrency, TIMEOUT_S)
            runs: list[tuple[str, dict[str, Any]]] = [
                (
                    "bare aiohttp loop",
                    {
                        "ok": ref.ok,
                        "errors": ref.errors,
                        "timeouts": ref.timeouts,
                        "wall_s": ref.wall_s,
                        "cpu_s": ref.cpu_s,
                    },
                )
            ]
            for transport in transports:
                srv.reset()
                runs.append(
                    (
                        f"engine ({transport})",
                        await _engine(plan_dir, work, srv.base_url, n, concurrency, transport, False),
                    )
                )
            srv.reset()
            runs.append(
                (
                    "engine (http), tokens counted",
                    await _engine(plan_dir, work, srv.base_url, n, concurrency, "http", True),
                )
            )
            billed = srv.counters()["billed"]
            ref_rps = ref.ok / ref.wall_s
            for name, r in runs:
                rps = r["ok"] / r["wall_s"]
                rows.append(
                    {
                        "row": name,
                        "rep": rep + 1,
                        "n": n,
                        "req_per_s": round(rps, 1),
                        "vs_bare": round(rps / ref_rps, 3),
                        "cpu_ms_per_req": round(r["cpu_s"] / n * 1000, 4),
                        "wall_s": round(r["wall_s"], 3),
                        "ok": r["ok"],
                        "errors": r["errors"],
                        "timeouts": r["timeouts"],
                    }
                )
            rows[-1]["server_billed_last_row"] = billed
    return rows


def best_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per row name, its fastest repetition; ``vs_bare`` = its req/s over the bare loop's best req/s.

    Best against best: a repetition in which only the reference was slowed (the machine is shared) cannot
    flatter the ratio.
    """
    best: dict[str, dict[str, Any]] = {}
    for r in rows:
        cur = best.get(r["row"])
        if cur is None or r["req_per_s"] > cur["req_per_s"]:
            best[r["row"]] = r
    ref = best["bare aiohttp loop"]["req_per_s"]
    return [{**r, "vs_bare": round(r["req_per_s"] / ref, 3)} for r in best.values()]


def run(
    *,
    n: int = 20_000,
    concurrency: int = 256,
    repeat: int = 2,
    transports: list[str] | None = None,
    quick: bool = False,
    out_dir: Path | None = None,
    cache_dir: Path | None = None,
) -> Report:
    """Measure and return the report (also written as JSON); see the module docstring."""
    load_before = loadavg()
    raise_fd_limit()
    transports = transports or ["http", "aiohttp", "sdk"]
    plan_dir = planned_dir(n, cache_dir)
    with tempfile.TemporaryDirectory(prefix="tracegen-bench-client-") as tmp:
        rows = asyncio.run(_measure(plan_dir, Path(tmp), n, concurrency, repeat, transports))
    best = best_rows(rows)
    by_name = {r["row"]: r for r in best}
    eng = by_name["engine (http)"]
    checks = [
        Check(NAME, "engine (http) req/s vs bare loop", eng["vs_bare"], 0.6, "higher"),
        Check(NAME, "engine (http) client CPU per request", eng["cpu_ms_per_req"], 0.5, "lower", "ms"),
        Check(NAME, "engine (http) requests not answered", float(n - eng["ok"]), 0, "lower"),
    ]
    if "engine (aiohttp)" in by_name:
        checks.append(
            Check(
                NAME,
                "engine (aiohttp) req/s vs bare loop",
                by_name["engine (aiohttp)"]["vs_bare"],
                None,
                "higher",
                note="the aiohttp transport (used behind a proxy): no target",
            )
        )
    if "engine (sdk)" in by_name:
        sdk = by_name["engine (sdk)"]
        checks.append(
            Check(
                NAME,
                "engine (sdk) req/s vs bare loop",
                sdk["vs_bare"],
                None,
                "higher",
                note="the opt-in SDK transport: no target",
            )
        )
    report = Report(NAME, best, checks)
    save(
        report,
        {
            "params": {"n": n, "concurrency": concurrency, "repeat": repeat, "latency_s": 0.0},
            "all_repetitions": rows,
        },
        out_dir,
        load_before,
        quick,
    )
    return report


def main(argv: list[str]) -> Report:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    ap.add_argument("--n", type=int, default=None, help="requests per row (default 20,000; quick 2,000)")
    ap.add_argument("--concurrency", type=int, default=256, help="requests in flight")
    ap.add_argument("--repeat", type=int, default=None, help="interleaved repetitions (default 2; quick 1)")
    ap.add_argument(
        "--transports", nargs="*", default=["http", "aiohttp", "sdk"], choices=["http", "aiohttp", "sdk"]
    )
    ap.add_argument("--out-dir", type=Path, default=None, help="where the JSON goes (default bench/results)")
    args = ap.parse_args(argv)
    n = args.n or (2_000 if args.quick else 20_000)
    repeat = args.repeat or (1 if args.quick else 2)
    report = run(
        n=n,
        concurrency=args.concurrency,
        repeat=repeat,
        transports=args.transports,
        quick=args.quick,
        out_dir=args.out_dir,
    )
    print_report(report, f"client overhead: {n:,} requests, {args.concurrency} in flight, zero latency")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
