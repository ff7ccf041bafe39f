"""Benchmark 7, resume: kill -9 a real ``tracegen run`` at 50 %, rerun it, count requests paid twice.

    .venv/bin/python bench/bench_resume.py [--quick] [--n 20000] [--concurrency 256]

The CLI (``.venv/bin/tracegen run --source ... --base-url ...``, ``OPENAI_API_KEY`` in its environment) runs in
a subprocess against the fake server in another process (latency 0.1 s +/- 0.05 s, no faults, so no request
is ever legitimately billed twice). This process polls the server's counters every 10 ms and sends SIGKILL
when half of the plan has been billed, then reruns the same command and waits for it to finish.

Figures, from the server's ledger (``request_key`` of every billed answer):

* paid twice: keys billed more than once over both sessions; reference: the requests *in flight at the kill*
  (billed by the server but not yet durably in traces.jsonl when the process died) -- the only ones a rerun
  may pay again. Target: 0 beyond those.
* time to resume: from the restart to the first new request at the server, against the same figure of the
  first (fresh) start, which plans first; the time to the rerun's last billed answer (the end of generation)
  and to its exit (generate, then clean and export), against the time the remaining requests would take at
  the first session's rate.
* completeness: traces.jsonl holds every planned request exactly once.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import _common
from _common import CACHE_DIR, Check, Report, loadavg, print_report, save
from synth_flan import cached_source

from tracegen.testing import FakeOptions, FakeServer

NAME = "resume"
TRACEGEN = Path(sys.executable).with_name("tracegen")


def _trace_keys(path: Path) -> list[str]:
    keys: list[str] = []
    if not path.exists():
        return keys
    with open(path, "rb") as f:
        for line in f:
            if line.endswith(b"\n") and line.startswith(b'{"request_key":"'):
                keys.append(line[16:80].decode())
    return keys


def _wait_first_request(
    srv: FakeServer, proc: subprocess.Popen[bytes], above: int, t0: float
) -> float | None:
    while proc.poll() is None:
        if srv.counters()["requests"] > above:
            return time.perf_counter() - t0
        time.sleep(0.01)
    return None


def run(
    *,
    n: int = 20_000,
    concurrency: int = 256,
    latency_s: float = 0.1,
    quick: bool = False,
    out_dir: Path | None = None,
    cache_dir: Path | None = None,
) -> Report:
    """Measure and return the report (also written as JSON); see the module docstring."""
    load_before = loadavg()
    cache = cache_dir or CACHE_DIR
    source = cached_source(max(5 * n, 1000), cache)
    opts = FakeOptions(latency_mean_s=latency_s, latency_jitter_s=latency_s / 2)
    with (
        tempfile.TemporaryDirectory(prefix="tracegen-bench-resume-") as tmp,
        _common.fake_server(opts) as srv,
    ):
        run_dir = Path(tmp) / "run"
        cmd = [
            str(TRACEGEN),
            "run",
            "--source",
            str(source),
            "--n",
            str(n),
            "--output-dir",
            str(run_dir),
            "--base-url",
            srv.base_url,
            "--max-tokens",
            "256",
            "--budget",
            "1000",
            "--concurrency",
            str(concurrency),
            "--json",
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "TRACEGEN_"))}
        env["OPENAI_API_KEY"] = "sk-bench-resume"
        log1 = open(Path(tmp) / "session1.log", "wb")  # noqa: SIM115 - closed below
        log2 = open(Path(tmp) / "session2.log", "wb")  # noqa: SIM115 - closed below
        try:
            # session 1: fresh start (plans first), killed at 50 %
            t0 = time.perf_counter()
            p1 = subprocess.Popen(cmd, env=env, stdout=log1, stderr=subprocess.STDOUT)
            fresh_first_s = _wait_first_request(srv, p1, 0, t0)
            t_first = time.perf_counter()
            half = n // 2
            billed_at_kill = 0
            while p1.poll() is None:
                billed_at_kill = srv.counters()["billed"]
                if billed_at_kill >= half:
                    os.kill(p1.pid, signal.SIGKILL)
                    break
                time.sleep(0.01)
            t_kill = time.perf_counter()
            p1.wait()
            killed = p1.returncode == -signal.SIGKILL
            time.sleep(max(0.3, latency_s * 3))  # let the server finish (and bill) what was in flight
            ledger1 = srv.ledger()
            requests1 = srv.counters()["requests"]
            traces1 = set(_trace_keys(run_dir / "traces.jsonl"))
            billed1 = {e["request_key"] for e in ledger1}
            in_flight_at_kill = billed1 - traces1
            rate1 = len(traces1) / max(t_kill - t_first, 1e-9)

            # session 2: the same command resumes
            t1 = time.perf_counter()
            p2 = subprocess.Popen(cmd, env=env, stdout=log2, stderr=subprocess.STDOUT)
            resume_first_s = _wait_first_request(srv, p2, requests1, t1)
            last_billed, resume_last_s = -1, 0.0
            while p2.poll() is None:  # the time of the last billed answer: the end of generation
                billed = srv.counters()["billed"]
                if billed != last_billed:
                    last_billed, resume_last_s = billed, time.perf_counter() - t1
                time.sleep(0.02)
            resume_total_s = time.perf_counter() - t1
        finally:
            log1.close()
            log2.close()
        ledger = srv.ledger()
        counts = Counter(e["request_key"] for e in ledger)
        paid_twice = {k for k, c in counts.items() if c > 1}
        beyond = paid_twice - in_flight_at_kill
        final_keys = _trace_keys(run_dir / "traces.jsonl")
        remaining = n - len(traces1)
        row: dict[str, Any] = {
            "planned": n,
            "concurrency": concurrency,
            "killed_with_sigkill": killed,
            "billed_at_kill": billed_at_kill,
            "billed_session1": len(ledger1),
            "traces_after_kill": len(traces1),
            "in_flight_at_kill": len(in_flight_at_kill),
            "paid_twice": len(paid_twice),
            "paid_twice_beyond_in_flight": len(beyond),
            "billed_total": len(ledger),
            "traces_final": len(final_keys),
            "traces_unique": len(set(final_keys)),
            "session2_exit": p2.returncode,
            "fresh_first_request_s": round(fresh_first_s or -1, 3),
            "resume_first_request_s": round(resume_first_s or -1, 3),
            "resume_last_answer_s": round(resume_last_s, 2),
            "resume_total_s": round(resume_total_s, 2),
            "remaining_at_session1_rate_s": round(remaining / rate1, 2),
        }
    checks = [
        Check(NAME, "requests paid twice beyond those in flight at the kill", float(len(beyond)), 0, "lower"),
        Check(
            NAME,
            "planned requests missing or duplicated after resume",
            float(abs(n - len(set(final_keys))) + len(final_keys) - len(set(final_keys))),
            0,
            "lower",
        ),
        Check(
            NAME,
            "time to first new request: resume / fresh start",
            round((resume_first_s or 0) / (fresh_first_s or 1), 3),
            1.0,
            "lower",
            "x",
        ),
    ]
    report = Report(NAME, [row], checks)
    save(
        report,
        {"params": {"n": n, "concurrency": concurrency, "latency_s": latency_s}},
        out_dir,
        load_before,
        quick,
    )
    return report


def main(argv: list[str]) -> Report:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    ap.add_argument("--n", type=int, default=None, help="planned requests (default 20,000; quick 2,000)")
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--out-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    n = args.n or (2_000 if args.quick else 20_000)
    report = run(n=n, concurrency=args.concurrency, quick=args.quick, out_dir=args.out_dir)
    print_report(report, f"resume: kill -9 at 50 % of {n:,} requests, then rerun")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
