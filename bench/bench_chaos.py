"""Chaos: ``kill -9`` at random moments of online runs, batch runs, staged runs, export, merge and push,
against the fake server with faults on; after each final rerun, check the invariants.

    python bench/bench_chaos.py [--kills 56] [--n 60] [--seed 1] [--scenarios online,batch,...] [--quick]

Each scenario runs the real CLI (``python -m tracegen.cli``) in a subprocess and SIGKILLs it after a random
delay (uniform between 0.2 s and the last unkilled duration of that command) or, for 6 runs in 10, after a
random amount of progress (1-12 more answers billed online; 1-5 more batches.jsonl steps in batch mode), as
many times as its share of ``--kills``; then reruns the same command to the end. A kill counts only if the process was still
running. Scenarios (the fake server: 5 % 500s, 2 % timeouts after sending, 2 % dropped connections,
batch lines failing 5 %):

* ``online`` / ``online-budget``: ``tracegen run`` online, budget 2x the plan's worst case / 0.5x its
  expected cost;
* ``batch``: ``--mode batch``, budget 0.8x the plan's worst case at batch prices (part 1 holds most of
  it; the rest is submitted once it is collected: issue 15's resume bug);
* ``staged``: two stages (gpt-3.5-turbo, then gpt-4 on half the plan);
* ``export`` / ``merge`` / ``push``: on finished run directories (push: to the fake Hub).

Invariants after each final rerun (the figures; the last two must be 0):

* billed <= budget, by the fake server's own ledger ("money over budget");
* answers paid twice (delivered by the server more than once) <= the answers in flight at the kills
  (billed but not yet in traces.jsonl right after each kill);
* every planned id answered exactly once or in failed.jsonl (completed runs), and no answer the server
  delivered is missing from traces.jsonl ("answers lost");
* the dataset equals what a run without kills produces from the same answers (a fresh clean + export of a
  copy of the generation files; for export / merge / push: the same command run once without kills);
* stats.json adds up: traces_total = lines of traces.jsonl, the ledger counts at least what the server
  billed and at most the budget.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common
from _common import Check, Report, loadavg, print_report, save

from tracegen.engine.budget import prior_spend_usd
from tracegen.testing import FakeOptions, FakeServer

NAME = "chaos"
SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "flan_sample"
SCENARIOS = ("online", "online-budget", "batch", "staged", "export", "merge", "push")
MODEL = "gpt-4o-mini"
MAX_TOKENS = 64
HUB_TOKEN = "hf_chaosTOKEN1234567890"
SETTLE_S = 0.8  # after a kill: what was in flight reaches the server's ledger (hang_s 0.4 + latency)
FAULTS = {
    "error_rate_500": 0.05,
    "timeout_rate": 0.02,
    "drop_rate": 0.02,
    "hang_s": 0.4,
    "latency_mean_s": 0.03,
    "latency_jitter_s": 0.02,
    "batch_fail_rate": 0.05,
    "batch_delay_s": 0.6,
    "mean_completion_tokens": 40,
}
# generation files a fresh clean + export reads (the rest is what clean/export write)
_DERIVED = ("dataset", "clean.jsonl", "clean_stats.json", "dedup_state.npz")


@dataclass
class Outcome:
    """One scenario: kills delivered, and what the invariants found."""

    scenario: str
    kills: int = 0
    runs: int = 0
    final_exit: int | None = None
    stop_reason: str = ""
    budget_usd: float | None = None
    billed_usd: float = 0.0
    over_budget_usd: float = 0.0
    in_flight_at_kills: int = 0
    paid_twice: int = 0
    lost: int = 0
    unanswered: int = 0
    dataset_equal: bool = True
    stats_ok: bool = True
    problems: list[str] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "kills": self.kills,
            "runs": self.runs,
            "exit": self.final_exit,
            "stop": self.stop_reason,
            "budget_usd": self.budget_usd,
            "billed_usd": round(self.billed_usd, 6),
            "over_budget_usd": round(self.over_budget_usd, 9),
            "in_flight_at_kills": self.in_flight_at_kills,
            "paid_twice": self.paid_twice,
            "answers_lost": self.lost,
            "unanswered": self.unanswered,
            "dataset_equal": self.dataset_equal,
            "stats_ok": self.stats_ok,
            "problems": "; ".join(self.problems)[:300],
        }


# ---- reading run directories ----------------------------------------------------------------------------
def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            with contextlib.suppress(ValueError):  # a torn last line right after a kill
                out.append(json.loads(line))
    return out


def _gen_dirs(run: Path) -> list[Path]:
    """The directories that hold traces.jsonl: the run itself, or each stage of a staged run."""
    stages = run / "stages"
    return sorted(p for p in stages.iterdir() if p.is_dir()) if stages.is_dir() else [run]


def _answered_keys(run: Path) -> list[str]:
    keys = [t["request_key"] for d in _gen_dirs(run) for t in _jsonl(d / "traces.jsonl")]
    keys += [
        r["request_key"]
        for d in _gen_dirs(run)
        for r in _jsonl(d / "rejected.jsonl")
        if r.get("stage") == "generate" and "request_key" in r
    ]
    return keys


def _count_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except OSError:
        return 0


def _delivered(ledger: list[dict[str, Any]]) -> Counter[str]:
    return Counter(e["request_key"] for e in ledger if e.get("delivered"))


def _dataset_files(root: Path) -> dict[str, bytes]:
    """What a dataset is made of, byte for byte: every JSONL of the export, and clean.jsonl per directory."""
    out: dict[str, bytes] = {}
    for path in sorted(root.rglob("*.jsonl")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith("dataset/") or path.name in ("clean.jsonl", "traces.jsonl"):
            out[rel] = path.read_bytes()
    return out


# ---- the kill loop ---------------------------------------------------------------------------------------
@dataclass
class Killer:
    """Runs a command, SIGKILLing it after a random delay, and keeps the figures of each kill."""

    rng: random.Random
    env: dict[str, str]
    log: Path
    estimate_s: dict[str, float] = field(default_factory=dict)

    def run(
        self, name: str, cmd: list[str], *, kill: bool, on_kill: Any = None, trigger: Any = None
    ) -> tuple[int | None, bool]:
        """(exit code or None when killed, killed?).

        The kill comes after a random delay, or (``trigger``, for 6 kills in 10) when ``trigger(rng)()``
        first says so (a random amount of progress: answers billed, journal lines): kills then land in the
        middle of the work, not only in start-up and export.
        """
        guess = self.estimate_s.get(name, 6.0)
        delay = self.rng.uniform(0.2, max(0.5, guess)) if kill else None
        when = trigger(self.rng) if kill and trigger is not None and self.rng.random() < 0.6 else None
        if when is not None:
            delay = 3 * max(guess, 2.0)  # a fallback: the progress may never come (nothing left to do)
        with open(self.log, "ab") as log:
            how = "on progress" if when is not None else f"after {delay}"
            log.write(f"\n$ {' '.join(cmd)}  (kill {how})\n".encode())
            log.flush()
            t0 = time.monotonic()
            proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
            try:
                while proc.poll() is None:
                    if (delay is not None and time.monotonic() - t0 >= delay) or (
                        when is not None and when()
                    ):
                        os.kill(proc.pid, signal.SIGKILL)
                        proc.wait()
                        if on_kill is not None:
                            on_kill()
                        return None, True
                    time.sleep(0.02)
            except BaseException:
                proc.kill()
                raise
            self.estimate_s[name] = time.monotonic() - t0
            return proc.returncode, False


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "tracegen.cli", *args]


def _run_cmd(run: Path, base_url: str, n: int, budget: float, *extra: str) -> list[str]:
    return _cli(
        "run", "--source", str(SAMPLE), "--n", str(n), "--output-dir", str(run), "--base-url", base_url,
        "--model", MODEL, "--max-tokens", str(MAX_TOKENS), "--budget", repr(budget), "--concurrency", "4",
        "--json", *extra,
    )  # fmt: skip


def _chaos(
    killer: Killer,
    name: str,
    cmd: list[str],
    kills: int,
    on_kill: Any = None,
    before: Any = None,
    trigger: Any = None,
) -> Outcome:
    """Kill ``cmd`` ``kills`` times (reruns that finish first do not count), then run it to the end.

    ``before()`` runs before each attempt (merge: a finished output is removed, as a new merge would need).
    """
    out = Outcome(name)
    attempts = 0
    while out.kills < kills and attempts < 4 * kills + 4:
        attempts += 1
        out.runs += 1
        if before is not None:
            before()
        _, killed = killer.run(name, cmd, kill=True, on_kill=on_kill, trigger=trigger)
        out.kills += killed
    out.runs += 1
    if before is not None:
        before()
    out.final_exit, _ = killer.run(name, cmd, kill=False)
    return out


# ---- the invariants ------------------------------------------------------------------------------------
def _check_generation(out: Outcome, run: Path, srv: FakeServer, budget: float, kills: KillLog) -> None:
    in_flight = kills.in_flight
    ledger = srv.ledger()
    out.budget_usd = budget
    out.billed_usd = sum(e["cost_usd"] for e in ledger)
    out.over_budget_usd = max(0.0, out.billed_usd - budget)
    out.in_flight_at_kills = in_flight
    delivered = _delivered(ledger)
    out.paid_twice = sum(c - 1 for c in delivered.values() if c > 1)
    answered = Counter(_answered_keys(run))
    dup = sum(c - 1 for c in answered.values() if c > 1)
    if dup:
        out.problems.append(f"{dup} answers written twice")
    out.lost = len(kills.recorded - set(answered))  # recorded once, gone later
    unrecorded = sum(1 for k in delivered if k not in answered)
    if unrecorded > in_flight:
        out.problems.append(f"{unrecorded} delivered answers never recorded > in flight at the kills")
    if out.paid_twice > in_flight:
        out.problems.append(f"paid twice {out.paid_twice} > in flight at the kills {in_flight}")
    if out.final_exit not in (0, 3):
        out.problems.append(f"final rerun exit {out.final_exit}")
    stop_reasons = []
    for d in _gen_dirs(run):
        stats = json.loads((d / "stats.json").read_text()) if (d / "stats.json").exists() else {}
        stop_reasons.append(str(stats.get("stop_reason")))
        traces = _jsonl(d / "traces.jsonl")
        failed = {f.get("id") for f in _jsonl(d / "failed.jsonl")}
        planned = [json.loads(x) for x in (d / "plan.jsonl").read_text().splitlines() if x.strip()]
        done_ids = Counter(t["id"] for t in traces)
        if stats.get("stop_reason") == "completed":
            rejected_ids = {r.get("id") for r in _jsonl(d / "rejected.jsonl") if r.get("stage") == "generate"}
            missing = [
                p["id"]
                for p in planned
                if done_ids.get(p["id"], 0) != 1 and p["id"] not in rejected_ids and p["id"] not in failed
            ]
            out.unanswered += len(missing)
        spent = prior_spend_usd(_jsonl(d / "ledger.jsonl"))
        ok = (
            stats.get("traces_total") == len(traces)
            and float(stats.get("total_spent_usd", 0)) <= budget + 1e-9
        )
        ok = ok and spent <= budget + 1e-9
        if not ok:
            out.stats_ok = False
            out.problems.append(f"{d.name}/stats.json does not add up")
    total_spent = sum(prior_spend_usd(_jsonl(d / "ledger.jsonl")) for d in _gen_dirs(run))
    if total_spent < out.billed_usd - 1e-9:
        out.stats_ok = False
        out.problems.append(f"the ledger counts ${total_spent:.6f} < billed ${out.billed_usd:.6f}")
    out.stop_reason = ",".join(stop_reasons)
    # the dataset equals a fresh clean + export of the same answers
    with tempfile.TemporaryDirectory(prefix="tracegen-chaos-ref-") as tmp:
        copy = Path(tmp) / "run"
        shutil.copytree(run, copy, ignore=shutil.ignore_patterns(*_DERIVED))
        _finish(copy)
        if _dataset_files(copy) != _dataset_files(run):
            out.dataset_equal = False
            out.problems.append("dataset differs from a fresh export of the same answers")


def _finish(run: Path) -> None:
    from tracegen import pipeline

    pipeline.finish(run)


@dataclass
class KillLog:
    """Right after each kill (once the server settled): answers delivered but not recorded (in flight), and
    the answers recorded so far (each must still be there at the end)."""

    srv: FakeServer
    run: Path
    in_flight: int = 0
    counted: Counter[str] = field(default_factory=Counter)
    recorded: set[str] = field(default_factory=set)

    def __call__(self) -> None:
        time.sleep(SETTLE_S)
        answered = set(_answered_keys(self.run))
        self.recorded |= answered
        for key, n in _delivered(self.srv.ledger()).items():
            if key not in answered and n > self.counted[key]:
                self.in_flight += n - self.counted[key]
                self.counted[key] = n


# ---- scenarios ----------------------------------------------------------------------------------------
def _plan_cost(base: Path, n: int) -> dict[str, float]:
    """The plan's cost (``tracegen.dry_run``): online/batch worst case and expected, USD."""
    import tracegen

    est = tracegen.dry_run(
        source=[str(SAMPLE)],
        n=n,
        model=MODEL,
        max_tokens=MAX_TOKENS,
        expected_output_tokens=FAULTS["mean_completion_tokens"],
        output_dir=base / "estimate",
    )
    return {k: float(v) for k, v in est["cost_usd"].items()}


def _generation(
    name: str,
    killer: Killer,
    srv: FakeServer,
    base: Path,
    cmd: list[str],
    run: Path,
    budget: float,
    kills: int,
) -> Outcome:
    """A run killed ``kills`` times then finished, on a reset server (its ledger is this run's bill)."""
    srv.reset()
    log = KillLog(srv, run)
    journal = run / "batches.jsonl"

    def progress(rng: random.Random) -> Any:
        if "batch" in cmd:  # a random number of journal steps ahead: intent, upload, create, collect
            start, k = _count_lines(journal), rng.randint(1, 5)
            return lambda: _count_lines(journal) >= start + k
        start, k = srv.counters()["billed"], rng.randint(1, 12)
        return lambda: srv.counters()["billed"] >= start + k

    out = _chaos(killer, name, cmd, kills, log, trigger=progress)
    time.sleep(SETTLE_S)
    _check_generation(out, run, srv, budget, log)
    return out


def _same_output(
    killer: Killer, name: str, cmd_of: Any, kills: int, compare: Any, before: Any = None
) -> Outcome:
    """A command without kills (the reference), then the same with kills; their outputs must be equal."""
    ref_code, _ = killer.run(name, cmd_of("ref"), kill=False)
    out = _chaos(killer, name, cmd_of("chaos"), kills, before=before)
    if ref_code != 0:
        out.problems.append(f"reference exit {ref_code}")
    if out.final_exit != 0:
        out.problems.append(f"final rerun exit {out.final_exit}")
    reference = compare("ref")
    out.dataset_equal = bool(reference) and reference == compare("chaos")
    if not out.dataset_equal:
        out.problems.append("output differs from the same command without kills")
    return out


def _drop_finished_merge(output: Path) -> None:
    """A merge that finished before its kill: remove it, so the next attempt merges again (an interrupted
    one keeps its in-progress marker and is redone by the rerun itself)."""
    from tracegen.cleaning.merge import IN_PROGRESS

    if output.exists() and not (output / IN_PROGRESS).exists():
        shutil.rmtree(output)


@contextmanager
def _hub() -> Iterator[Any]:
    from tracegen.testing.fake_hub import FakeHub

    with FakeHub(token=HUB_TOKEN, user="tester") as hub:
        yield hub


def run(
    *,
    kills: int = 56,
    n: int = 60,
    seed: int = 1,
    scenarios: tuple[str, ...] = SCENARIOS,
    quick: bool = False,
    out_dir: Path | None = None,
) -> Report:
    """Run the scenarios with ``kills`` kills spread over them; return the report (also written as JSON)."""
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        raise ValueError(f"unknown scenarios {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    load_before = loadavg()
    rng = random.Random(seed)
    share = {s: kills // len(scenarios) + (i < kills % len(scenarios)) for i, s in enumerate(scenarios)}
    outcomes: list[Outcome] = []
    t0 = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="tracegen-bench-chaos-") as tmp,
        _common.fake_server(FakeOptions(**FAULTS)) as srv,  # type: ignore[arg-type]
    ):
        base = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "TRACEGEN_", "HF_"))}
        env.update(
            OPENAI_API_KEY="sk-chaos",
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_XET="1",  # the fake Hub speaks git-LFS, not Xet
            HF_HOME=str(base / "hf"),
        )
        env["PYTHONPATH"] = os.pathsep.join(
            [str(Path(__file__).resolve().parents[1] / "src"), env.get("PYTHONPATH", "")]
        )
        killer = Killer(rng, env, base / "chaos.log")
        cost = _plan_cost(base, n)
        runs: dict[str, Path] = {}

        def generation(name: str, budget: float, *extra: str) -> None:
            run = base / name
            cmd = _run_cmd(run, srv.base_url, n, budget, *extra)
            outcome = _generation(name, killer, srv, base, cmd, run, budget, share.get(name, 0))
            if name in scenarios:  # else only an input of export / merge / push
                outcomes.append(outcome)
            runs[name] = run

        if {"online", "export", "merge", "push"} & set(scenarios):
            generation("online", round(2 * cost["online_worst_usd"], 6))
        if "online-budget" in scenarios:
            generation("online-budget", round(0.5 * cost["online_expected_usd"], 6))
        if {"batch", "merge"} & set(scenarios):
            # part 1 takes ~80 % of the plan; the rest goes once it is collected (issue 15's resume bug)
            budget = round(0.8 * cost["batch_worst_usd"], 6)
            generation("batch", budget, "--mode", "batch", "--poll-interval", "0.1")
        if "staged" in scenarios:
            cfg = base / "staged.yaml"
            cfg.write_text(
                "stages:\n  - {name: gpt35, model: gpt-3.5-turbo}\n"
                "  - {name: gpt4, model: gpt-4, fraction: 0.5}\n",
                encoding="utf-8",
            )
            generation("staged", 1.0, "--config", str(cfg))
        if "export" in scenarios:
            for tag in ("ref", "chaos"):
                shutil.copytree(
                    runs["online"], base / f"export-{tag}", ignore=shutil.ignore_patterns(*_DERIVED)
                )
            outcomes.append(
                _same_output(
                    killer,
                    "export",
                    lambda tag: _cli("export", str(base / f"export-{tag}")),
                    share["export"],
                    lambda tag: _dataset_files(base / f"export-{tag}"),
                )
            )
        if "merge" in scenarios:
            inputs = [str(runs["online"]), str(runs["batch"])]
            outcomes.append(
                _same_output(
                    killer,
                    "merge",
                    lambda tag: _cli("merge", *inputs, "-o", str(base / f"merge-{tag}")),
                    share["merge"],
                    lambda tag: _dataset_files(base / f"merge-{tag}"),
                    before=lambda: _drop_finished_merge(base / "merge-chaos"),
                )
            )
        if "push" in scenarios:
            with _hub() as hub:
                killer.env.update(HF_ENDPOINT=hub.endpoint, HF_TOKEN=HUB_TOKEN)

                def files(tag: str) -> dict[str, bytes]:
                    got: dict[str, bytes] = hub.files(f"tester/chaos-{tag}")
                    return {p: b.replace(f"chaos-{tag}".encode(), b"REPO") for p, b in got.items()}

                outcomes.append(
                    _same_output(
                        killer,
                        "push",
                        lambda tag: _cli("push", str(runs["online"]), f"tester/chaos-{tag}"),
                        share["push"],
                        files,
                    )
                )
        log_copy = (out_dir or _common.RESULTS_DIR) / f"{NAME}{'-quick' if quick else ''}.log"
        log_copy.parent.mkdir(parents=True, exist_ok=True)
        if killer.log.exists():
            shutil.copyfile(killer.log, log_copy)
    elapsed = time.monotonic() - t0
    rows = [o.row() for o in outcomes]
    survived = sum(o.kills for o in outcomes if not o.problems)
    total_kills = sum(o.kills for o in outcomes)
    over = max((o.over_budget_usd for o in outcomes), default=0.0)
    lost = sum(o.lost + o.unanswered for o in outcomes)
    checks = [
        Check(NAME, "kills survived (final rerun met every invariant)", float(survived), float(total_kills), "higher"),
        Check(NAME, "kills delivered", float(total_kills), float(kills), "higher"),
        Check(NAME, "money over budget, by the fake server's bill", over, 0.0, "lower", "USD"),
        Check(NAME, "answers lost (delivered but not recorded, or planned and unanswered)", float(lost), 0, "lower"),
        Check(
            NAME,
            "answers paid twice beyond those in flight at the kills",
            float(sum(max(0, o.paid_twice - o.in_flight_at_kills) for o in outcomes)),
            0,
            "lower",
        ),
        Check(NAME, "datasets equal to a run without kills", float(sum(o.dataset_equal for o in outcomes)), float(len(outcomes)), "higher"),
        Check(NAME, "stats.json adds up", float(sum(o.stats_ok for o in outcomes)), float(len(outcomes)), "higher"),
    ]  # fmt: skip
    report = Report(NAME, rows, checks, extra={"elapsed_s": round(elapsed, 1)})
    params = {"kills": kills, "n": n, "seed": seed, "scenarios": list(scenarios), "faults": FAULTS}
    save(report, {"params": params, "elapsed_s": round(elapsed, 1)}, out_dir, load_before, quick)
    return report


def main(argv: list[str]) -> Report:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=None, help="kill -9 points over the session (default 56)")
    ap.add_argument("--n", type=int, default=60, help="planned requests per run")
    ap.add_argument("--seed", type=int, default=1, help="seed of the kill moments")
    ap.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help="comma-separated subset of " + ", ".join(SCENARIOS)
    )
    ap.add_argument("--quick", action="store_true", help="a handful of kills (7)")
    ap.add_argument("--out-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    kills = args.kills or (7 if args.quick else 56)
    scenarios = tuple(s for s in args.scenarios.split(",") if s)
    report = run(
        kills=kills, n=args.n, seed=args.seed, scenarios=scenarios, quick=args.quick, out_dir=args.out_dir
    )
    print_report(report, f"chaos: {kills} kill -9 over {', '.join(scenarios)} (n={args.n}, faults on)")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
