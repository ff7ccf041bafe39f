"""Shared helpers of the benchmarks: metadata, results JSON, tables, targets, the bare aiohttp reference loop.

Every benchmark compares its figure with a reference measured in the same run (ratios, not absolute times:
this machine is shared and noisy) and records the load average before and after, so a noisy figure can be
recognised and rerun.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
#: Generated sources and plans are cached here between runs (sources are big: 1.7 GB for 5M rows).
CACHE_DIR = Path(os.environ.get("TRACEGEN_BENCH_CACHE", "/tmp/tracegen-bench-cache"))

if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))


def loadavg() -> list[float]:
    """1, 5 and 15 minute load averages (the machine has 2 cores shared with other work)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Linux
        return []


def raise_fd_limit() -> int:
    """Raise the soft open-files limit to the hard one (4,096 sockets in flight need it); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def meta() -> dict[str, Any]:
    """Where and when: Python, CPUs, git commit, tracegen version."""
    import tracegen

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "tracegen": getattr(tracegen, "__version__", ""),
        "git_commit": commit,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


@dataclass
class Check:
    """One figure against its target: ``better`` is "higher" (figure >= target) or "lower" (<=).

    ``target`` None: a figure reported without a target (status INFO).
    """

    benchmark: str
    name: str
    value: float
    target: float | None
    better: str
    unit: str = ""
    note: str = ""

    @property
    def passed(self) -> bool:
        if self.target is None:
            return True
        return self.value >= self.target if self.better == "higher" else self.value <= self.target

    @property
    def status(self) -> str:
        if self.target is None:
            return "INFO"
        return "PASS" if self.passed else "MISS"

    @property
    def ratio(self) -> float | None:
        """figure / target (higher is better) or target / figure (lower is better); None when undefined."""
        if self.target is None:
            return None
        if self.better == "higher":
            return self.value / self.target if self.target else None
        return self.target / self.value if self.value else None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["passed"] = self.passed
        out["status"] = self.status
        return out


@dataclass
class Report:
    """What a benchmark returns: its rows, its checks against targets, and the JSON it wrote."""

    name: str
    rows: list[dict[str, Any]]
    checks: list[Check]
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        if abs(value) >= 0.01:
            return f"{value:.3f}"
        return f"{value:.2g}"
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else str(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A plain text table of ``rows`` (dicts) over ``columns`` (default: keys of the first row)."""
    if not rows:
        return "(no rows)"
    cols = list(columns or rows[0].keys())
    cells = [[fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cols, widths, strict=True))
        )
    ]
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append(
            "  ".join(
                v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    return "\n".join(lines)


def checks_table(checks: Iterable[Check]) -> str:
    rows = [
        {
            "benchmark": c.benchmark,
            "figure": c.name,
            "value": c.value,
            "target": "(reported)"
            if c.target is None
            else f"{'>=' if c.better == 'higher' else '<='} {fmt(c.target)}{c.unit and ' ' + c.unit}",
            "ratio": c.ratio,
            "status": c.status,
        }
        for c in checks
    ]
    return table(rows)


def save(
    report: Report, payload: dict[str, Any], out_dir: Path | None, load_before: list[float], quick: bool
) -> Path:
    """Write bench/results/<name>[-quick].json with metadata, load averages, rows, checks and ``payload``."""
    out = out_dir or RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{report.name}{'-quick' if quick else ''}.json"
    doc = {
        "benchmark": report.name,
        "quick": quick,
        "meta": meta(),
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "rows": report.rows,
        "checks": [c.to_dict() for c in report.checks],
        **payload,
    }
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    report.path = path
    return path


def print_report(report: Report, title: str) -> None:
    print(f"\n## {title}")
    print(table(report.rows))
    if report.checks:
        print()
        print(checks_table(report.checks))
    if report.path is not None:
        print(f"wrote {report.path}")


# ---- measuring ------------------------------------------------------------------------------------------
@dataclass
class Timing:
    """Wall and process CPU time of one measured block (CPU: every thread of this process)."""

    wall_s: float = 0.0
    cpu_s: float = 0.0


class timed:
    """``with timed() as t:`` fills ``t.wall_s`` and ``t.cpu_s`` (time.process_time: this process only)."""

    def __enter__(self) -> Timing:
        self.t = Timing()
        self._w, self._c = time.perf_counter(), time.process_time()
        return self.t

    def __exit__(self, *exc: object) -> None:
        self.t.wall_s = time.perf_counter() - self._w
        self.t.cpu_s = time.process_time() - self._c


@dataclass
class LoopResult:
    ok: int
    errors: int
    timeouts: int
    wall_s: float
    cpu_s: float


async def bare_loop(
    url: str, bodies: Sequence[dict[str, Any]], concurrency: int, timeout_s: float
) -> LoopResult:
    """The reference client: one aiohttp session, ``concurrency`` workers, json in and out, nothing else.

    Posts every body once to ``url/chat/completions`` (no retries, no limits, no files).
    """
    ok = errors = timeouts = 0
    it: Iterator[dict[str, Any]] = iter(bodies)
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}
    endpoint = url.rstrip("/") + "/chat/completions"
    connector = aiohttp.TCPConnector(limit=concurrency)
    t0, c0 = time.perf_counter(), time.process_time()
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s)
    ) as session:

        async def worker() -> None:
            nonlocal ok, errors, timeouts
            for body in it:
                try:
                    async with session.post(endpoint, data=json.dumps(body).encode(), headers=headers) as r:
                        data = await r.read()
                        if r.status == 200:
                            json.loads(data)
                            ok += 1
                        else:
                            errors += 1
                except asyncio.TimeoutError:
                    timeouts += 1
                except aiohttp.ClientError:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(bodies)))))
    return LoopResult(ok, errors, timeouts, time.perf_counter() - t0, time.process_time() - c0)


# ---- the server ---------------------------------------------------------------------------------------
#: Benchmarks run the fake server in a child process (client and server on different cores). The smoke test
#: sets this to False: a server thread in the test process starts faster, and no figure is read there.
SERVER_SUBPROCESS = True


def fake_server(opts: Any) -> Any:
    """``FakeServer(opts)`` in a child process (or a thread when SERVER_SUBPROCESS is False)."""
    from tracegen.testing import FakeServer

    return FakeServer(opts, subprocess=SERVER_SUBPROCESS)


# ---- plans ----------------------------------------------------------------------------------------------
BENCH_MODEL = "gpt-4o-mini"
BENCH_MAX_TOKENS = 256


def planned_dir(n: int, cache_dir: Path | None = None, *, max_tokens: int = BENCH_MAX_TOKENS) -> Path:
    """A run directory holding a plan of ``n`` requests over a synthetic FLAN source (cached).

    The source has 5n rows (the Orca ratio: 1M requests from 5M rows).
    """
    from synth_flan import cached_source

    from tracegen.pipeline import prepare

    cache = cache_dir or CACHE_DIR
    rows = max(5 * n, 1000)
    out = cache / f"plan-{n}-mt{max_tokens}"
    if (out / "plan.jsonl").exists() and (out / "plan_stats.json").exists():
        return out
    source = cached_source(rows, cache)
    prepare(plan_config(out, source=source, n=n, max_tokens=max_tokens))
    return out


def plan_config(output_dir: Path, **changes: Any) -> Any:
    """The RunConfig the benchmarks use (gpt-4o-mini prices, max_tokens 256), with ``changes``."""
    from tracegen.config import RunConfig

    base: dict[str, Any] = {
        "model": BENCH_MODEL,
        "max_tokens": BENCH_MAX_TOKENS,
        "output_dir": output_dir,
    }
    base.update(changes)
    if "source" in base and not isinstance(base["source"], list):
        base["source"] = [str(base["source"])]
    return RunConfig(**base)


def plan_bodies(plan_dir: Path, config: Any) -> list[dict[str, Any]]:
    """The chat bodies the engine would send for ``plan_dir``'s plan (what the bare loop posts)."""
    from tracegen.planning.plan import iter_plan, request_body

    return [request_body(rec, config) for rec in iter_plan(plan_dir)]


def child_rusage_run(argv: Sequence[str], **kwargs: Any) -> tuple[int, float, float, float]:
    """Run ``argv``; return (exit code, wall s, CPU s, ru_maxrss MiB) of that child alone (os.wait4).

    Caveat: Linux carries the parent's RSS high-water mark over fork + exec into the child's ru_maxrss, so
    the last figure is only meaningful from a small parent; children report their own VmHWM instead.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(argv), **kwargs)
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024
