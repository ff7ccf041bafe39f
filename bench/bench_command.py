"""Benchmark 8, the whole command: `tracegen run` as a user times it, against a bare aiohttp loop process.

    .venv/bin/python bench/bench_command.py [--quick] [--zero-n 5000 20000] [--latency 3000:1024 12000:4096]
                                            [--repeat 2] [--concurrency 256]

What a user times is the whole command: interpreter start, imports, planning from the source (tokenizer
included), generation, clean + dedup, export (Parquet, JSONL, card), exit. Each row runs, in the same run and
alternating, as two child processes against one fake server:

* the **bare loop process**: ``python`` + aiohttp, reads the planned chat bodies from a JSONL file and posts
  each once (``concurrency`` workers on one session; no plan, no budget, no files written) -- the least a
  client process must do to send them;
* the **whole command**: ``python -m tracegen.cli run --source SRC --n N ...`` into a fresh run directory,
  the default path (http transport, default export formats).

The fake server runs in its own process pinned to one core, both clients on another (``sched_setaffinity``,
what ``taskset -c`` does), when the machine has two cores or more. The children read tracegen's bytecode
from a cache compiled before timing (``PYTHONPYCACHEPREFIX`` under the bench cache), as an installed package
does: a source checkout with ``PYTHONDONTWRITEBYTECODE`` would recompile ~30 modules on every start. Rows: zero latency at ``--zero-n``
requests, and latency 1 s +/- 0.3 s at ``--latency N:IN_FLIGHT`` pairs (timeout 10 s).

Figures (best of ``--repeat`` for each side):

* whole command vs bare loop process: bare process wall / command wall (latency rows: target >= 0.8 at
  1,024 in flight), and command wall / bare process wall at zero latency (target < 2 at 5,000 requests);
* generation step vs bare loop: the bare loop's own send-all time / the command's generation step
  (``stats.json`` ``elapsed_s``), target >= 0.95 at 1,024 and 4,096 in flight;
* where the command's time goes: ``startup+plan`` (to ``plan_stats.json``), ``generate`` (elapsed_s),
  ``clean+export`` (``stats.json`` to ``dataset/export.json``) and the rest (imports before planning are in
  startup, interpreter exit after export in the rest), from the files' modification times.

Every request answered is checked from the server's counters (requests received, per row).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import _common
from _common import (
    BENCH_MODEL,
    CACHE_DIR,
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
)

NAME = "command"
TIMEOUT_S = 10.0
BUDGET_USD = 10_000.0
API_KEY = "sk-bench"
HERE = Path(__file__).resolve()


# ---- cores -------------------------------------------------------------------------------------------------
def _cores() -> tuple[set[int] | None, set[int] | None]:
    """(server cores, client cores): one core each when there are two or more, else no pinning."""
    if not hasattr(os, "sched_getaffinity"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return {cpus[0]}, {cpus[1]}


def _pinned(cores: set[int] | None) -> Any:
    """A preexec_fn pinning the child to ``cores`` (None: no pinning)."""
    if cores is None:
        return None
    return lambda: os.sched_setaffinity(0, cores)


# ---- the server ----------------------------------------------------------------------------------------
class _Server:
    """The fake server in a child process pinned to its core; reset and counters over HTTP."""

    def __init__(self, base_url: str, proc: subprocess.Popen[str]) -> None:
        self.base_url, self.proc = base_url, proc
        self.root = base_url.rsplit("/v1", 1)[0]

    def _call(self, method: str, path: str) -> Any:
        req = urllib.request.Request(
            self.root + path, method=method, data=b"{}" if method == "POST" else None
        )
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"null")

    def reset(self) -> None:
        self._call("POST", "/_fake/reset")

    def counters(self) -> dict[str, Any]:
        out: dict[str, Any] = self._call("GET", "/_fake/counters")
        return out


@contextmanager
def _server(latency_s: float, jitter_s: float, cores: set[int] | None) -> Iterator[_Server]:
    from tracegen.testing import FakeOptions
    from tracegen.testing.server import READY_PREFIX, options_to_argv

    opts = FakeOptions(latency_mean_s=latency_s, latency_jitter_s=jitter_s)
    argv = [sys.executable, "-m", "tracegen.testing.fake_openai", "--port", "0", *options_to_argv(opts)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, preexec_fn=_pinned(cores))
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith(READY_PREFIX):
            raise RuntimeError(f"the fake server did not start: {line!r}")
        yield _Server(line[len(READY_PREFIX) :].strip(), proc)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---- the two clients -------------------------------------------------------------------------------------
def _child_env(pycache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "TRACEGEN_"))}
    env["OPENAI_API_KEY"] = API_KEY
    # Bytecode as an installed package has it (pip compiles at install): a source checkout run with
    # PYTHONDONTWRITEBYTECODE would recompile tracegen's modules on every start (~0.1-0.3 s).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    src = str(_common.REPO / "src")
    if (_common.REPO / "src" / "tracegen").is_dir() and src not in env.get("PYTHONPATH", "").split(
        os.pathsep
    ):
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    return env


def _warm_up(env: dict[str, str]) -> None:
    """Compile tracegen's modules into the bytecode cache once, before anything is timed."""
    package = _common.REPO / "src" / "tracegen"
    if package.is_dir():
        argv = [sys.executable, "-m", "compileall", "-q", str(package)]
        subprocess.run(argv, env=env, check=False, stdout=subprocess.DEVNULL)


def _timed_child(
    argv: Sequence[str], cores: set[int] | None, log: Path, env: dict[str, str]
) -> tuple[int, float, float]:
    """Run ``argv`` pinned to ``cores``; (exit code, wall s, CPU s of that child)."""
    with log.open("wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=_pinned(cores)
        )
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, wall, ru.ru_utime + ru.ru_stime


def _bare(
    srv: _Server, bodies: Path, concurrency: int, work: Path, cores: set[int] | None, env: dict[str, str]
) -> dict[str, Any]:
    out = work / f"bare-{time.monotonic_ns()}.json"
    argv = [sys.executable, str(HERE), "--bare-child", srv.base_url, str(bodies), str(concurrency), str(out)]
    code, wall, cpu = _timed_child(argv, cores, out.with_suffix(".log"), env)
    if code != 0:
        raise RuntimeError(
            f"the bare loop process failed (exit {code}): {out.with_suffix('.log').read_text()}"
        )
    loop = json.loads(out.read_text())
    return {"process_wall_s": wall, "process_cpu_s": cpu, "generate_s": loop["wall_s"], "ok": loop["ok"]}


def _command(
    srv: _Server,
    source: Path,
    n: int,
    concurrency: int,
    work: Path,
    cores: set[int] | None,
    env: dict[str, str],
) -> dict[str, Any]:
    run = Path(tempfile.mkdtemp(prefix="run-", dir=work))
    argv = [
        sys.executable, "-m", "tracegen.cli", "run",
        "--source", str(source), "--output-dir", str(run), "--n", str(n),
        "--model", BENCH_MODEL, "--max-tokens", str(_common.BENCH_MAX_TOKENS),
        "--base-url", srv.base_url, "--budget", str(BUDGET_USD),
        "--concurrency", str(concurrency), "--timeout", str(TIMEOUT_S),
    ]  # fmt: skip
    started = time.time()
    code, wall, cpu = _timed_child(argv, cores, work / f"{run.name}.log", env)
    if code != 0:
        raise RuntimeError(
            f"tracegen run failed (exit {code}): {(work / f'{run.name}.log').read_text()[-3000:]}"
        )
    stats = json.loads((run / "stats.json").read_text())
    planned = (run / "plan_stats.json").stat().st_mtime
    generated = (run / "stats.json").stat().st_mtime
    exported = (run / "dataset" / "export.json").stat().st_mtime
    row = {
        "process_wall_s": wall,
        "process_cpu_s": cpu,
        "generate_s": float(stats["elapsed_s"]),
        "ok": int(stats["succeeded"]),
        "startup_plan_s": planned - started,
        "clean_export_s": exported - generated,
        "rows_exported": json.loads((run / "dataset" / "export.json").read_text())["rows"],
    }
    shutil.rmtree(run, ignore_errors=True)
    return row


# ---- measuring -----------------------------------------------------------------------------------------
def _measure_row(
    label: str,
    n: int,
    concurrency: int,
    latency_s: float,
    jitter_s: float,
    repeat: int,
    work: Path,
    cache: Path,
    env: dict[str, str],
) -> list[dict[str, Any]]:
    from synth_flan import cached_source

    server_cores, client_cores = _cores()
    plan_dir = planned_dir(n, cache)
    source = cached_source(max(5 * n, 1000), cache)
    bodies = work / f"bodies-{n}.jsonl"
    if not bodies.exists():
        with bodies.open("w", encoding="utf-8") as f:
            for body in plan_bodies(plan_dir, plan_config(work / "unused", base_url="http://unused/v1"))[:n]:
                f.write(json.dumps(body, ensure_ascii=False) + "\n")
    rows: list[dict[str, Any]] = []
    with _server(latency_s, jitter_s, server_cores) as srv:
        for rep in range(repeat):
            for name, fn in (
                ("bare loop process", lambda: _bare(srv, bodies, concurrency, work, client_cores, env)),
                ("tracegen run", lambda: _command(srv, source, n, concurrency, work, client_cores, env)),
            ):
                srv.reset()
                got = fn()
                got["server_requests"] = int(srv.counters().get("requests", 0))
                rows.append(
                    {
                        "case": label,
                        "row": name,
                        "rep": rep + 1,
                        "n": n,
                        "in_flight": concurrency,
                        "pinned": server_cores is not None,
                        **{k: round(v, 3) if isinstance(v, float) else v for k, v in got.items()},
                    }
                )
    return rows


def _best(rows: list[dict[str, Any]], case: str, name: str, key: str) -> dict[str, Any]:
    return min((r for r in rows if r["case"] == case and r["row"] == name), key=lambda r: r[key])


def run(
    *,
    zero_n: Sequence[int] = (5_000, 20_000),
    latency: Sequence[tuple[int, int]] = ((3_000, 1_024), (12_000, 4_096)),
    concurrency: int = 256,
    repeat: int = 2,
    latency_s: float = 1.0,
    jitter_s: float = 0.3,
    quick: bool = False,
    out_dir: Path | None = None,
    cache_dir: Path | None = None,
) -> Report:
    """Measure and return the report (also written as JSON); see the module docstring."""
    load_before = loadavg()
    fd_limit = raise_fd_limit()
    cache = cache_dir or CACHE_DIR
    cache.mkdir(parents=True, exist_ok=True)
    cases: list[tuple[str, int, int, float, float]] = [
        (f"zero latency, {n:,} requests", n, concurrency, 0.0, 0.0) for n in zero_n
    ]
    cases += [
        (f"latency {latency_s:g} s, {n:,} requests, {c:,} in flight", n, c, latency_s, jitter_s)
        for n, c in latency
    ]
    all_rows: list[dict[str, Any]] = []
    env = _child_env(cache / "pycache")
    _warm_up(env)
    with tempfile.TemporaryDirectory(prefix="tracegen-bench-command-") as tmp:
        for label, n, c, lat, jit in cases:
            print(f"  {label} (load {loadavg()})", flush=True)
            all_rows += _measure_row(label, n, c, lat, jit, repeat, Path(tmp), cache, env)

    rows: list[dict[str, Any]] = []
    checks: list[Check] = []
    for label, n, c, lat, _ in cases:
        bare = _best(all_rows, label, "bare loop process", "process_wall_s")
        bare_gen = _best(all_rows, label, "bare loop process", "generate_s")
        cmd = _best(all_rows, label, "tracegen run", "process_wall_s")
        cmd_gen = _best(all_rows, label, "tracegen run", "generate_s")
        whole = bare["process_wall_s"] / cmd["process_wall_s"]
        gen = bare_gen["generate_s"] / cmd_gen["generate_s"]
        rest = cmd["process_wall_s"] - cmd["startup_plan_s"] - cmd["generate_s"] - cmd["clean_export_s"]
        rows.append(
            {
                "case": label,
                "bare_process_s": bare["process_wall_s"],
                "bare_loop_s": bare_gen["generate_s"],
                "command_s": cmd["process_wall_s"],
                "startup_plan_s": cmd["startup_plan_s"],
                "generate_s": cmd["generate_s"],
                "clean_export_s": cmd["clean_export_s"],
                "rest_s": round(rest, 3),
                "command_cpu_s": cmd["process_cpu_s"],
                "bare_cpu_s": bare["process_cpu_s"],
                "whole_vs_bare": round(whole, 3),
                "gen_vs_bare": round(gen, 3),
            }
        )
        unanswered = sum(
            n - r["server_requests"] for r in all_rows if r["case"] == label and r["server_requests"] < n
        )
        checks.append(
            Check(NAME, f"requests not received by the server ({label})", float(unanswered), 0, "lower")
        )
        if lat == 0:
            ratio = cmd["process_wall_s"] / bare["process_wall_s"]
            target = 2.0 if n == 5_000 else None
            checks.append(
                Check(
                    NAME, f"command time / bare loop process time ({label})", round(ratio, 3), target, "lower"
                )
            )
            checks.append(
                Check(NAME, f"generation step vs bare loop ({label})", round(gen, 3), None, "higher")
            )
        else:
            target_whole = 0.8 if c == 1_024 and n == 3_000 else None
            checks.append(
                Check(
                    NAME,
                    f"whole command vs bare loop process ({label})",
                    round(whole, 3),
                    target_whole,
                    "higher",
                )
            )
            target_gen = 0.95 if c in (1_024, 4_096) else None
            checks.append(
                Check(NAME, f"generation step vs bare loop ({label})", round(gen, 3), target_gen, "higher")
            )
    report = Report(NAME, rows, checks)
    save(
        report,
        {
            "params": {
                "zero_n": list(zero_n),
                "latency": [list(x) for x in latency],
                "concurrency_zero_latency": concurrency,
                "repeat": repeat,
                "latency_mean_s": latency_s,
                "latency_jitter_s": jitter_s,
                "timeout_s": TIMEOUT_S,
                "fd_limit": fd_limit,
                "cores": {
                    k: sorted(v) if v else None for k, v in zip(("server", "client"), _cores(), strict=True)
                },
            },
            "all_repetitions": all_rows,
        },
        out_dir,
        load_before,
        quick,
    )
    return report


# ---- the bare loop child -------------------------------------------------------------------------------
def bare_child(base_url: str, bodies_path: str, concurrency: int, out: str) -> None:
    """The bare loop process: read the bodies, post each once, write what the loop measured as JSON."""
    raise_fd_limit()
    with open(bodies_path, encoding="utf-8") as f:
        bodies = [json.loads(line) for line in f]
    result = asyncio.run(bare_loop(base_url, bodies, concurrency, TIMEOUT_S))
    Path(out).write_text(json.dumps({"ok": result.ok, "errors": result.errors, "wall_s": result.wall_s}))


def _pair(text: str) -> tuple[int, int]:
    n, _, c = text.partition(":")
    return int(n), int(c)


def main(argv: list[str]) -> Report | None:
    if argv[:1] == ["--bare-child"]:
        bare_child(argv[1], argv[2], int(argv[3]), argv[4])
        return None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed benchmark still stops its server
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    ap.add_argument(
        "--zero-n", type=int, nargs="*", default=None, help="zero-latency rows (default 5000 20000)"
    )
    ap.add_argument(
        "--latency",
        type=_pair,
        nargs="*",
        default=None,
        help="N:IN_FLIGHT rows at 1 s (default 3000:1024 12000:4096)",
    )
    ap.add_argument("--concurrency", type=int, default=256, help="in flight at zero latency")
    ap.add_argument("--repeat", type=int, default=None, help="repetitions (default 2; quick 1)")
    ap.add_argument("--latency-s", type=float, default=1.0, help="mean server latency, seconds")
    ap.add_argument("--jitter-s", type=float, default=0.3, help="uniform latency half-width, seconds")
    ap.add_argument("--out-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    zero_n = args.zero_n if args.zero_n is not None else ([2_000] if args.quick else [5_000, 20_000])
    lat = (
        args.latency
        if args.latency is not None
        else ([(2_000, 512)] if args.quick else [(3_000, 1_024), (12_000, 4_096)])
    )
    report = run(
        zero_n=zero_n,
        latency=lat,
        concurrency=args.concurrency,
        repeat=args.repeat or (1 if args.quick else 2),
        latency_s=args.latency_s,
        jitter_s=args.jitter_s,
        quick=args.quick,
        out_dir=args.out_dir,
    )
    print_report(report, "the whole command (`tracegen run`) vs a bare aiohttp loop process, same run")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
