"""The first five minutes: what a newcomer tries on day one (issue 12).

Run-directory rules a person can predict, one clear line and exit code 1 for every user error, --version and
defaults in --help, summaries in words, a budget stop that says what is left, a live view that fits 80
columns, and the key checked before planning.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

import tracegen
from tracegen import progress_view
from tracegen.cli import DEFAULTS, app
from tracegen.config import RunConfig
from tracegen.engine import Progress, generate
from tracegen.records import Record
from tracegen.testing import FakeOptions, FakeServer

SAMPLE = str(Path(__file__).resolve().parents[1] / "examples" / "flan_sample")
runner = CliRunner()


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def _one_error_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, text
    assert "Traceback" not in text and "╭" not in text, text
    return errors[0]


# ---- run-directory rules ---------------------------------------------------------------------------------------
def test_a_dry_run_never_locks_the_directory_python_api(tmp_path: Path) -> None:
    out = tmp_path / "run"
    est = tracegen.dry_run(source=[SAMPLE], n=30, model="gpt-4o", budget_usd=5, output_dir=out)
    assert est["requests"] == 30
    summary = tracegen.run(source=[SAMPLE], n=30, model="gpt-4o", budget_usd=5, rehearse=True, output_dir=out)
    assert summary["run"]["succeeded"] == 30
    # money was spent (by the rehearsal): now a real run in the same directory is refused, with both ways out
    with pytest.raises(tracegen.RunDirError, match=r"new --output-dir.*continue"):
        tracegen.run(source=[SAMPLE], n=30, model="gpt-4o", budget_usd=5, output_dir=out, base_url="http://x")


def test_a_run_that_sent_nothing_never_locks(tmp_path: Path) -> None:
    out = str(tmp_path / "run")
    code, text = _run("run", "-s", str(tmp_path / "typo" / "*.jsonl"), "--n", "10", "-o", out, "--rehearse")
    assert code == 1
    code, text = _run("run", "-s", SAMPLE, "--n", "10", "-o", out)  # no key: fails, spends nothing
    assert code == 1 and "OPENAI_API_KEY" in text
    code, text = _run("run", "-s", SAMPLE, "--n", "10", "-o", out, "--rehearse")  # as the no-key error says
    assert code == 0, text


def test_no_key_fails_before_planning(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, text = _run("run", "-o", str(out))  # default source: the Hub, which would be streamed first
    assert code == 1 and "OPENAI_API_KEY" in _one_error_line(text)
    assert "planning" not in text and not (out / "plan.jsonl").exists()


# ---- one clear line, exit code 1 -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "--bogus"], "No such option: --bogus"),
        (["run", "--budgt", "3"], "--budget"),
        (["run", "--n", "abc"], "'--n'"),
        (["stats"], "RUN_DIR"),
        (["nope"], "No such command"),
    ],
)
def test_usage_errors_are_one_line_and_exit_1(args: list[str], needle: str) -> None:
    code, text = _run(*args)
    assert code == 1
    line = _one_error_line(text)
    assert needle in line and "--help" in line


def test_usage_error_from_the_real_command_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tracegen.cli", "run", "--bogus"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: No such option: --bogus (see `tracegen run --help`)"


def test_yaml_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "run.yaml"
    bad.write_text("n: 5\n  model: x\n")
    code, text = _run("run", "-c", str(bad), "--dry-run")
    assert code == 1
    assert f"{bad}:2:8: not valid YAML" in _one_error_line(text)


def test_brackets_in_user_text_are_shown_verbatim(tmp_path: Path) -> None:
    code, text = _run("run", "-s", "data[v2]/x.jsonl", "-o", str(tmp_path / "r"), "--dry-run")
    assert code == 1
    assert "data[v2]/x.jsonl" in _one_error_line(text)


def test_unwritable_export_is_one_line(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _run("run", "-s", SAMPLE, "--n", "10", "--rehearse", "-o", str(out))[0] == 0
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, text = _run("export", str(out), "--output", str(blocker / "sub"))
    assert code == 1
    assert "--output" in _one_error_line(text)


def test_changed_teacher_after_spend_gives_the_exact_commands(tmp_path: Path) -> None:
    out = str(tmp_path / "run")
    base = ["run", "-s", SAMPLE, "--n", "10", "--rehearse", "-o", out]
    assert _run(*base)[0] == 0
    code, text = _run(*base[:-2], "-o", out, "--max-tokens", "300")
    line = _one_error_line(text)
    assert code == 1 and "'max_tokens'" in line
    assert (
        f"start over with `tracegen run -s {SAMPLE} --n 10 --rehearse --max-tokens 300 --output-dir {out}-2`"
        in line
    )
    assert "continue with `tracegen run" in line and "--max-tokens 1024`" in line


# ---- --version, --help ---------------------------------------------------------------------------------------
def test_version() -> None:
    code, text = _run("--version")
    assert code == 0 and text.strip() == f"tracegen {tracegen.__version__}"


def test_help_shows_defaults_and_plain_flags() -> None:
    code, text = _run("run", "--help")
    assert code == 0
    assert "<bool>" not in text
    assert "[default: gpt-4o-mini]" in text and "[default: tracegen-run]" in text
    assert "--skip-bad-records / --no-skip-bad-records" in text


def test_help_defaults_are_runconfigs() -> None:
    cfg = RunConfig()
    for field, shown in DEFAULTS.items():
        value = getattr(cfg, field)
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            assert float(shown) == value if isinstance(value, (int, float)) else shown == value, field
    assert DEFAULTS["output_dir"] == str(cfg.output_dir)
    assert DEFAULTS["export_formats"] == ", ".join(cfg.export_formats)


def test_fake_server_help_names_itself() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tracegen.cli", "fake-server", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and proc.stdout.startswith("usage: tracegen fake-server")


# ---- summaries in words, budget stop ---------------------------------------------------------------------------
def test_budget_stop_says_what_is_left_and_the_budget_that_finishes(tmp_path: Path) -> None:
    out = str(tmp_path / "run")
    args = ["run", "-s", SAMPLE, "--n", "200", "--rehearse", "--budget", "0.01", "-o", out]
    code, text = _run(*args)
    assert code in (0, 3), text
    stats = json.loads(Path(out, "stats.json").read_text())
    assert stats["stop_reason"] == "budget"
    assert next(iter(stats)) == "total_spent_usd"  # the run-wide spend is the headline
    left = stats["to_finish"]
    assert (
        left["requests_left"]
        == left["requests_planned"] - stats["succeeded"] - stats["rejected"] - stats["failed"]
    )
    assert left["finish_budget_usd"] > stats["total_spent_usd"] + left["more_usd"] * 0.99
    line = next(x for x in text.splitlines() if x.startswith("stopped by the budget"))
    assert f"{left['requests_left']} of {left['requests_planned']} requests not sent" in line
    assert f"--budget {left['finish_budget_usd']:g}`" in line
    # the suggested command finishes the plan
    code, text = _run(*args[:-4], "--budget", f"{left['finish_budget_usd']:g}", "-o", out)
    stats = json.loads(Path(out, "stats.json").read_text())
    assert stats["stop_reason"] == "completed", text


def test_stats_in_words(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _run("run", "-s", SAMPLE, "--n", "20", "--rehearse", "-o", str(out))[0] == 0
    code, text = _run("stats", str(out))
    assert code == 0
    created = next(x for x in text.splitlines() if "created" in x)
    assert "20" in created  # the manifest's created_at, e.g. 2026-...
    assert "{" not in text and "[" not in text  # no dict or list reprs
    assert "empty: yes" in text  # a boolean setting reads yes/no, not 1/0


def test_estimate_explains_budget_requests_exact() -> None:
    assert progress_view.words("budget_requests_exact", True).startswith("yes: ")
    assert "mean prompt length" in progress_view.words("budget_requests_exact", False)


# ---- stats.json adds up --------------------------------------------------------------------------------------
async def test_counts_add_up_after_a_stop(tmp_path: Path) -> None:
    stop = asyncio.Event()
    recs = [Record(id=f"t0.{i}", submix="t0", question=f"Question {i}?") for i in range(60)]
    with FakeServer(FakeOptions(latency_mean_s=0.4, latency_jitter_s=0.3)) as srv:
        cfg = RunConfig(base_url=srv.base_url, concurrency=16, budget_usd=1.0)
        asyncio.get_running_loop().call_later(0.7, stop.set)
        result = await generate(recs, cfg, tmp_path, stop=stop, grace_s=0.2)
    s = result.stats
    assert s["stop_reason"] == "interrupted" and s["sent"] > 0
    assert s["sent"] == s["succeeded"] + s["rejected"] + s["failed"] + s["unfinished"]


# ---- the live view ---------------------------------------------------------------------------------------------
def _big_progress(**kw: object) -> Progress:
    values: dict[str, object] = dict(
        done=123_456,
        total=1_000_000,
        succeeded=120_000,
        failed=3_456,
        rejected=0,
        skipped_done=0,
        cost_usd=1234.56,
        committed_usd=1299.99,
        budget_usd=2000.0,
        projected_total_usd=1999.5,
        requests_per_s=6.1,
        tokens_per_min=70_123.0,
        limit_rpm=600.0,
        limit_tpm=400_000.0,
        n_429=12_345,
        n_retries=23_456,
        in_flight=1024,
        eta_s=12_345.0,
        elapsed_s=999.0,
        affordable=4_567,
        reserved_tokens_per_min=391_000.0,
    )
    values.update(kw)
    return Progress(**values)  # type: ignore[arg-type]


def test_live_view_fits_80_columns_with_percentages() -> None:
    console = Console(width=80, record=True, force_terminal=True, color_system=None)
    console.print(progress_view.progress_panel(_big_progress()))
    lines = console.export_text().splitlines()
    assert all(len(line.rstrip()) <= 80 for line in lines)
    text = "\n".join(lines)
    assert len(lines) == 8  # nothing wrapped: 2 bars + 6 lines
    assert " 12%" in text and " 62%" in text  # requests and budget bars carry percentages
    assert "reserved of 400.0k TPM" in text and "70.1k/min billed" in text
    assert "(budget stop)" in text


def test_plain_lines_carry_real_figures_and_do_not_repeat(capsys: pytest.CaptureFixture[str]) -> None:
    console = Console(width=200, file=sys.stderr)
    start = _big_progress(done=0, succeeded=0, failed=0, requests_per_s=0.0, elapsed_s=1.0, eta_s=None)
    with progress_view.live(console, plain=True) as show:
        for _ in range(5):
            show(start)
    lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(lines) == 1  # nothing moved: one line, not one every callback
    assert "0.0 req/s" not in lines[0] and "waiting for the first answers" in lines[0]
    line = progress_view.progress_line(_big_progress(requests_per_s=0.0))
    assert "req/s" in line and "0.0 req/s" not in line  # falls back to the average since the start


def test_cli_progress_is_plain_without_a_terminal(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tracegen.cli",
            "run",
            "-s",
            SAMPLE,
            "--n",
            "20",
            "--rehearse",
            "-o",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    progress = [x for x in proc.stderr.splitlines() if x.startswith("[")]
    assert progress and all("done " in x and "spent" in x for x in progress)


def test_endpoint_checked_before_planning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key-for-this-server")
    with FakeServer(FakeOptions(api_key="sk-the-right-key")) as srv:
        code, text = _run("run", "-s", SAMPLE, "--n", "10", "-o", str(out), "--base-url", srv.base_url)
        billed = srv.ledger()
    line = _one_error_line(text)
    assert code == 4 and "refused the API key" in line and "sk-wrong" not in text  # the teacher refused: 4
    assert not (out / "plan.jsonl").exists() and billed == []  # nothing planned, nothing billed
    code, text = _run("run", "-s", SAMPLE, "--n", "10", "-o", str(out), "--base-url", "http://127.0.0.1:9/v1")
    assert code == 4 and "cannot reach http://127.0.0.1:9/v1" in _one_error_line(text)
    assert not (out / "plan.jsonl").exists()
