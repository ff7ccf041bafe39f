"""Hostile servers, hostile data, careless hands (issue 17): money and secrets hold.

Each test runs tracegen against one hostile mode of the in-package fake server (testing/hostile.py), or
hands it hostile data / a careless invocation, and checks what must hold: the ledger never goes down and
never passes the budget, no secret leaves, markup is never interpreted, waits are bounded, files outside
the run directory are never touched.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import typer
from pydantic import ValidationError
from rich.console import Console

from helpers.flan import frow
from tracegen import cli, progress_view
from tracegen.config import EndpointConfig, RunConfig, load_config
from tracegen.engine import generate
from tracegen.engine.budget import Budget, Ledger, prior_spend_usd
from tracegen.engine.client import parse_retry_after, resolve_endpoint
from tracegen.engine.runner import FIRST_WAVE
from tracegen.engine.usage import check_usage
from tracegen.errors import (
    BadRecordError,
    ConfigError,
    EndpointError,
    RunDirError,
    SourceError,
    TracegenError,
    WaitTooLongError,
)
from tracegen.lock import LOCK_NAME, lock_run_dir
from tracegen.planning.sources import Source
from tracegen.records import Record
from tracegen.redact import excerpt, redact, redact_url
from tracegen.testing import FakeOptions, FakeServer
from tracegen.testing.hostile import MARKUP

KEY = "sk-test-hostile-0123456789abcdefSECRET"
TRANSPORTS = ["http", "aiohttp", "sdk"]


def records(n: int, words: int = 0) -> list[Record]:
    pad = " ".join(f"word{j}" for j in range(words))
    return [
        Record(
            id=f"cot.{i}", submix="cot", question=f"Question {i}: explain step by step. {pad}", target=str(i)
        )
        for i in range(n)
    ]


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def run_dir_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file())


class Waits:
    """An injected sleep that records what the engine asked for and never sleeps long."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)
        await asyncio.sleep(0)


def cfg(srv: FakeServer, transport: str = "http", **kw: Any) -> RunConfig:
    base: dict[str, Any] = {"base_url": srv.base_url, "concurrency": 4, "transport": transport}
    return RunConfig(**{**base, **kw})


# ---- money: usage is checked before it touches the ledger ----------------------------------------------
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_negative_usage_once_is_charged_at_the_reservation_and_never_frees_budget(
    tmp_path: Path, transport: str
) -> None:
    with FakeServer(FakeOptions(hostile="negative_usage", hostile_count=1)) as srv:
        result = await generate(records(12), cfg(srv, transport, budget_usd=1.0, concurrency=1), tmp_path)
        billed = sum(e["cost_usd"] for e in srv.ledger())
    stats = result.stats
    assert result.stop_reason == "completed" and result.succeeded == 12
    assert stats["usage_anomalies"] == 1 and "negative" in stats["usage_anomaly_examples"][0]
    traces = lines(tmp_path / "traces.jsonl")
    assert all(t["cost_usd"] >= 0 and t["completion_tokens"] >= 0 for t in traces)
    assert (
        result.cost_usd >= billed
    )  # charged at least what the server billed (the anomaly at its worst case)
    closes = [e for e in Ledger(tmp_path / "ledger.jsonl").read() if e["event"] == "close"]
    assert closes and all(e["spent_usd"] >= 0 for e in closes)
    assert prior_spend_usd(Ledger(tmp_path / "ledger.jsonl").read()) >= billed


@pytest.mark.parametrize("mode", ["huge_usage", "float_usage", "string_usage", "over_cap_usage"])
async def test_repeated_impossible_usage_stops_the_run_naming_the_endpoint(tmp_path: Path, mode: str) -> None:
    with FakeServer(FakeOptions(hostile=mode)) as srv:
        url = srv.base_url
        with pytest.raises(EndpointError) as err:
            await generate(records(30), cfg(srv, budget_usd=1.0, concurrency=1), tmp_path)
    message = str(err.value)
    assert "impossible usage" in message and url in message
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["usage_anomalies"] >= 3 and stats["stop_reason"] == "endpoint"
    assert 0 <= stats["total_spent_usd"] <= 1.0
    for t in lines(tmp_path / "traces.jsonl"):  # every cost a finite, small number: exports keep working
        assert math.isfinite(t["cost_usd"]) and 0 <= t["cost_usd"] < 0.01
        assert isinstance(t["completion_tokens"], int) and t["completion_tokens"] <= 1024


async def test_a_gateway_under_reporting_prompt_tokens_is_recorded_and_charged_our_count(
    tmp_path: Path,
) -> None:
    with FakeServer(FakeOptions(hostile="under_usage")) as srv:
        result = await generate(records(6, words=100), cfg(srv, budget_usd=1.0), tmp_path)
    stats = result.stats
    assert result.succeeded == 6 and stats["usage_anomalies"] == 0
    assert (
        stats["usage_mismatches"] == 6
        and "server counted 10 prompt tokens" in stats["usage_mismatch_examples"][0]
    )
    for t in lines(tmp_path / "traces.jsonl"):
        assert t["prompt_tokens"] > 10  # the larger of the two: tracegen's own count


def test_usage_rules() -> None:
    ok = check_usage(100, 50, own_prompt_tokens=100, own_completion_tokens=0, cap_tokens=64)
    assert (ok.prompt_tokens, ok.completion_tokens, ok.anomaly, ok.mismatch) == (100, 50, None, None)
    assert (
        check_usage(100, 64 + 16, own_prompt_tokens=100, own_completion_tokens=0, cap_tokens=64).anomaly
        is None
    )
    assert check_usage(100, 64 + 17, own_prompt_tokens=100, own_completion_tokens=0, cap_tokens=64).anomaly
    assert check_usage(10**9, 5, own_prompt_tokens=100, own_completion_tokens=0, cap_tokens=64).anomaly
    over = check_usage(200, 5, own_prompt_tokens=100, own_completion_tokens=0, cap_tokens=64)
    assert over.mismatch and over.prompt_tokens == 200 and over.anomaly is None


def test_the_ledger_never_goes_down(tmp_path: Path) -> None:
    entries = [
        {"event": "open", "session": "a"},
        {"event": "lease", "session": "a", "usd": 0.5, "leased_usd": 0.5},
        {"event": "close", "session": "a", "spent_usd": -599.76},
        {"event": "lease", "session": "b", "usd": 0.1, "leased_usd": float("nan")},
        {"event": "close", "session": "c", "spent_usd": float("inf")},
    ]
    assert prior_spend_usd(entries) == 0.5  # the bad close is ignored: everything leased counts
    budget = Budget(budget_usd=1.0)
    res = budget.try_reserve(0.01, 10)
    assert res is not None
    budget.settle(res, -5.0, 10)
    assert budget.spent_usd == pytest.approx(0.01)


# ---- not the OpenAI API --------------------------------------------------------------------------------
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mode", ["html", "no_choices", "wrong_shape", "echo_key_200"])
async def test_an_endpoint_that_is_not_the_openai_api_stops_the_run_and_costs_nothing(
    tmp_path: Path, transport: str, mode: str
) -> None:
    waits = Waits()
    with FakeServer(FakeOptions(hostile=mode, api_key=KEY)) as srv:
        url = srv.base_url
        with pytest.raises(EndpointError) as err:
            await generate(
                records(20),
                cfg(srv, transport, budget_usd=0.05),
                tmp_path,
                sleep=waits,
                env={"OPENAI_API_KEY": KEY},
            )
        assert srv.counters()["requests"] <= 2 * FIRST_WAVE  # at most the first waves, not the whole plan
    message = str(err.value)
    assert f"the endpoint at {url} does not speak the OpenAI API" in message
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["total_spent_usd"] == 0 and stats["n_protocol_errors"] >= 3  # nothing billed, all released
    assert KEY not in message and KEY.encode() not in run_dir_bytes(tmp_path)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mode", ["huge_body", "huge_error_body"])
async def test_a_body_over_the_size_limit_is_refused_while_reading(
    tmp_path: Path, transport: str, mode: str
) -> None:
    opts = FakeOptions(hostile=mode, hostile_count=1, hostile_body_bytes=4 * 1024 * 1024)
    with FakeServer(opts) as srv:
        conf = cfg(srv, transport, budget_usd=1.0, concurrency=1, max_response_bytes=1024 * 1024)
        result = await generate(records(3), conf, tmp_path, sleep=Waits())
    assert result.succeeded == 3 and result.stats["n_protocol_errors"] == 1
    assert result.stats["reserved_usd_unknown"] > 0  # a real (maybe billed) answer: charged at reservation


# ---- secrets -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mode", ["echo_key_code", "echo_key_text"])
async def test_a_key_echoed_by_the_server_never_reaches_files_or_messages(
    tmp_path: Path, transport: str, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    with FakeServer(FakeOptions(hostile=mode, hostile_count=6, api_key=KEY)) as srv:
        conf = cfg(srv, transport, budget_usd=1.0, concurrency=1, max_attempts=2)
        try:
            await generate(records(8), conf, tmp_path, sleep=Waits(), env={"OPENAI_API_KEY": KEY})
            message = ""
        except TracegenError as e:
            message = str(e)
    failed = lines(tmp_path / "failed.jsonl")
    assert failed  # the hostile answers were recorded ...
    blob = run_dir_bytes(tmp_path).decode() + message + caplog.text
    assert KEY not in blob and KEY[:12] not in blob  # ... with neither the key nor a cut prefix of it
    if transport != "sdk" or mode == "echo_key_code":  # the SDK keeps no text of a non-JSON error body
        assert "<redacted>" in json.dumps(failed)


def test_url_credentials_are_refused_in_one_line_that_names_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "http://user:hunter2pass@127.0.0.1:9/v1"
    with pytest.raises(ValidationError) as info:  # the library: the config refuses it, input hidden
        RunConfig(base_url=url, budget_usd=1.0)
    assert "127.0.0.1:9/v1 carries credentials" in str(info.value) and "hunter2pass" not in str(info.value)
    with pytest.raises(ValidationError) as info:
        EndpointConfig(base_url=url)
    assert "hunter2pass" not in str(info.value)
    with pytest.raises(ConfigError) as cfg_info:  # the CLI's loader: the flag named
        load_config(None, {"base_url": url}, flag_names={"base_url": "--base-url"})
    assert "carries credentials" in str(cfg_info.value) and "hunter2pass" not in str(cfg_info.value)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    monkeypatch.setenv("OPENAI_BASE_URL", url)  # the environment, read where the engine resolves it
    with pytest.raises(ConfigError) as env_info:
        resolve_endpoint(RunConfig())
    assert str(env_info.value).startswith("OPENAI_BASE_URL: http://127.0.0.1:9/v1 carries credentials")
    assert "hunter2pass" not in str(env_info.value)


def test_redaction_happens_before_the_cut() -> None:
    text = "x" * 190 + KEY + " tail"
    assert KEY[:10] not in excerpt(text, 200)  # cut in the middle of the key: still no prefix
    assert KEY not in redact(f"auth Bearer {KEY}") and redact(f"auth Bearer {KEY}").endswith("<redacted>")
    assert redact("see http://bob:pw123@proxy:8080/v1 now") == "see http://<redacted>@proxy:8080/v1 now"
    assert redact_url("https://u:p@host:8443/v1?key=abc") == "https://host:8443/v1"
    assert excerpt("a\x1b[2Jb") == "a\\x1b[2Jb"


# ---- waits are bounded ---------------------------------------------------------------------------------
async def test_a_huge_retry_after_stops_the_run_with_the_servers_figure(tmp_path: Path) -> None:
    waits = Waits()
    with FakeServer(FakeOptions(hostile="retry_after_huge")) as srv, pytest.raises(WaitTooLongError) as err:
        await asyncio.wait_for(generate(records(5), cfg(srv, budget_usd=1.0), tmp_path, sleep=waits), 60)
    assert "999999" in str(err.value)
    assert all(w <= 900 for w in waits.asked)


@pytest.mark.parametrize("mode", ["retry_after_inf", "ratelimit_negative"])
async def test_absurd_rate_limit_headers_are_ignored(tmp_path: Path, mode: str) -> None:
    waits = Waits()
    with FakeServer(FakeOptions(hostile=mode, hostile_count=2)) as srv:
        conf = cfg(srv, budget_usd=1.0, requests_per_minute=60000, tokens_per_minute=10**8)
        result = await asyncio.wait_for(generate(records(6), conf, tmp_path, sleep=waits), 60)
    assert result.succeeded == 6
    assert all(w < 120 for w in waits.asked)


def test_parse_retry_after_ignores_negative_and_non_finite_values() -> None:
    assert parse_retry_after({"retry-after": "inf"}) is None
    assert parse_retry_after({"retry-after": "nan"}) is None
    assert parse_retry_after({"retry-after": "-3"}) is None
    assert parse_retry_after({"retry-after-ms": "-5", "retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after": "999999"}) == 999999.0  # returned: the engine stops on it


# ---- markup and terminal escapes -----------------------------------------------------------------------
def render(renderable: Any) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None, force_terminal=False)
    console.print(renderable)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(out, str)
    return out


def test_error_lines_never_parse_markup_or_pass_escapes(monkeypatch: pytest.MonkeyPatch) -> None:
    buf = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=buf, width=400, color_system=None))

    def boom() -> None:
        raise EndpointError(f"HTTP 404 (model_not_found): The model {MARKUP} does not exist.")

    with pytest.raises(typer.Exit) as ex:
        cli._guard(boom)
    printed = buf.getvalue()
    assert ex.value.exit_code != 0
    assert "[link=https://evil.example/]click[/link]" in printed  # shown literally, not rendered
    assert "\x1b" not in printed and "\\x1b" in printed


def test_summary_tables_show_data_with_markup_literally() -> None:
    summary = {"stop_reason": "completed", "by_task": {"CoT[/x]": 3, "[bold]t0": 1}, "model": MARKUP}
    printed = render(progress_view.summary_table(summary))
    assert "CoT[/x]" in printed and "[bold]t0" in printed and "\x1b" not in printed


async def test_markup_in_a_servers_model_field_is_stored_and_summarised_safely(tmp_path: Path) -> None:
    # priced by the user, so the answering model is not checked against the price table
    with FakeServer(FakeOptions(hostile="markup")) as srv:
        result = await generate(
            records(2), cfg(srv, budget_usd=1.0, input_price=0.15, output_price=0.6), tmp_path
        )
    assert result.succeeded == 2
    # priced from the table: an unknown answering model stops the run, its name escaped in the message
    with FakeServer(FakeOptions(hostile="markup")) as srv, pytest.raises(EndpointError) as err:
        await generate(records(2), cfg(srv, budget_usd=1.0), tmp_path / "table")
    assert "\x1b" not in str(err.value) and "no known price" in str(err.value)
    printed = render(progress_view.summary_table({"run": {"model_returned": MARKUP}}))
    assert "[link=" in printed and "\x1b" not in printed


# ---- the run directory: one process at a time, no symlinks ----------------------------------------------
HOLD = """
import sys, time
sys.path.insert(0, {src!r})
from tracegen.lock import lock_run_dir
with lock_run_dir({path!r}, "tracegen run"):
    print("locked", flush=True)
    time.sleep(60)
"""


def _holder(path: Path) -> subprocess.Popen[str]:
    src = str(Path(__file__).resolve().parents[2] / "src")
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD.format(src=src, path=str(path))], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_process_is_refused_naming_the_pid_and_a_killed_holder_is_taken_over(tmp_path: Path) -> None:
    proc = _holder(tmp_path)
    try:
        with pytest.raises(RunDirError) as err, lock_run_dir(tmp_path, "tracegen export"):
            pass
        assert f"PID {proc.pid}" in str(err.value) and "tracegen run" in str(err.value)
        with pytest.raises(RunDirError, match=f"PID {proc.pid}"):
            asyncio.run(generate(records(1), RunConfig(base_url="http://127.0.0.1:9/v1"), tmp_path))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (tmp_path / LOCK_NAME).exists()  # stale: the file outlives its killed holder
    with lock_run_dir(tmp_path, "tracegen export"):
        with lock_run_dir(tmp_path, "nested"):  # re-entrant within one process
            pass
        assert (tmp_path / LOCK_NAME).read_text().startswith(f"{os.getpid()} ")


def test_cli_export_on_a_run_directory_in_use_exits_non_zero_naming_the_pid(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    (tmp_path / "traces.jsonl").write_text("")
    proc = _holder(tmp_path)
    try:
        result = CliRunner().invoke(cli.app, ["export", str(tmp_path)])
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert result.exit_code != 0
    assert f"PID {proc.pid}" in result.output


@pytest.mark.parametrize("name", ["traces.jsonl", "ledger.jsonl"])
async def test_a_symlinked_run_directory_file_is_refused_not_followed(tmp_path: Path, name: str) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / name).symlink_to(outside)
    with FakeServer(FakeOptions()) as srv, pytest.raises(RunDirError, match="symbolic link"):
        await generate(records(2), cfg(srv, budget_usd=1.0), run)
    assert outside.read_text() == "precious\n"


# ---- size and shape limits on input ----------------------------------------------------------------------
def test_config_must_be_a_small_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "cfg.yaml"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match="regular file"):
        load_config(fifo)
    assert time.monotonic() - t0 < 30  # refused, not waiting for a writer
    with pytest.raises(ConfigError, match="regular file"):
        load_config("/dev/zero")
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (2 * 1024 * 1024))
    with pytest.raises(ConfigError, match="limit"):
        load_config(big)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(deep)


def test_deeply_nested_json_is_one_bad_record_even_with_skip(tmp_path: Path) -> None:
    path = tmp_path / "flan.jsonl"
    good = frow("What is 2+2?", "cot", target="4")
    path.write_text(json.dumps(good) + "\n" + "[" * 100_000 + "]" * 100_000 + "\n" + json.dumps(good) + "\n")
    with pytest.raises(BadRecordError, match="nested too deeply") as err:
        list(Source([str(path)]).iter_rows())
    assert "flan.jsonl:2" in str(err.value)
    rejected: list[Any] = []
    rows = list(Source([str(path)], skip_bad_records=True).iter_rows(rejected.append))
    assert len(rows) == 2 and len(rejected) == 1


def test_an_overlong_line_is_one_bad_record_never_held_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tracegen.planning.sources as sources

    monkeypatch.setattr(sources, "MAX_LINE_BYTES", 4096)
    path = tmp_path / "flan.jsonl"
    good = frow("What is 2+2?", "cot", target="4")
    path.write_text(json.dumps({**good, "inputs": "y" * 100_000}) + "\n" + json.dumps(good) + "\n")
    rejected: list[Any] = []
    rows = list(Source([str(path)], skip_bad_records=True).iter_rows(rejected.append))
    assert len(rows) == 1 and len(rejected) == 1
    with pytest.raises(BadRecordError, match="over the 4,096 limit"):
        list(Source([str(path)]).iter_rows())


def test_invalid_utf8_in_a_json_array_and_a_bad_gzip_are_one_line(tmp_path: Path) -> None:
    arr = tmp_path / "flan.json"
    arr.write_bytes(b'[{"inputs": "caf\xe9", "targets": "x", "task_name": "cot_x"}]')
    with pytest.raises(SourceError, match="not UTF-8"):
        list(Source([str(arr)]).iter_rows())
    gz = tmp_path / "flan.jsonl.gz"
    gz.write_bytes(gzip.compress(b'{"inputs": "a"}\n' * 100)[:-30] + b"garbage-garbage-garbage-garbage")
    with pytest.raises(SourceError, match="gzip"):
        list(Source([str(gz)]).iter_rows())
    notgz = tmp_path / "other.jsonl.gz"
    notgz.write_bytes(b"this is not gzip at all\n")
    with pytest.raises(SourceError, match="gzip"):
        list(Source([str(notgz)]).iter_rows())


def test_batch_answers_with_malformed_usage_are_flagged() -> None:
    from tracegen.batch.collect import parse_line

    line = {
        "custom_id": "r1",
        "response": {
            "status_code": 200,
            "body": {
                "choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 12, "completion_tokens": -1_000_000_000},
            },
        },
    }
    outcome = parse_line(line)
    assert outcome.kind == "answer" and outcome.completion_tokens is None
    assert outcome.usage_problem is not None and "negative" in outcome.usage_problem


def test_the_card_reports_usage_anomalies_and_mismatches() -> None:
    from tracegen.publish import card

    text = "\n".join(card._spend_section({"run": {"stats": {"usage_anomalies": 1, "usage_mismatches": 4}}}))
    assert "impossible usage for 1 answer" in text and "for 4 answer(s) (charged the larger" in text


def test_redaction_leaves_ordinary_words_alone() -> None:
    text = "task-classification-of-things, bearer instruments, hf_hub docs"
    assert redact(text) == text
