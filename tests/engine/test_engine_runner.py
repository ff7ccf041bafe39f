"""generate() end to end against the fake server (and a queue-fed fake client for content_filter)."""

from __future__ import annotations

import asyncio
import collections
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import tracegen.engine as engine
from helpers import HELPERS, REPO
from helpers.batch import records
from tracegen.config import RunConfig
from tracegen.engine import ChatResult, Progress, RunDir, generate
from tracegen.engine.runner import FIRST_WAVE
from tracegen.errors import AuthError, EndpointError, QuotaError
from tracegen.records import Record
from tracegen.testing import FakeOptions, FakeServer


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)


def test_public_api_is_pinned() -> None:
    assert set(engine.__all__) == {
        "STOP_REASONS", "AiohttpChatClient", "Budget", "ChatClient", "ChatResult", "DoneSet", "Endpoint",
        "HttpChatClient", "Ledger", "Limiter", "LimiterState", "Permit", "Progress", "Reservation",
        "ResultWriter", "RunDir",
        "RunResult", "SdkChatClient", "TeacherCallError", "TeacherConnectionError", "TeacherHTTPError",
        "TeacherTimeout", "call_with_retries", "fatal_error", "generate", "is_retryable", "make_client",
        "request_key", "resolve_endpoint", "retry_policy",
    }  # fmt: skip


@pytest.mark.parametrize("transport", ["http", "aiohttp", "sdk"])
async def test_run_writes_traces_stats_and_matches_the_ledger(tmp_path: Path, transport: str) -> None:
    snapshots: list[Progress] = []
    with FakeServer(FakeOptions(latency_mean_s=0.002)) as srv:
        cfg = RunConfig(base_url=srv.base_url, budget_usd=1.0, concurrency=16, transport=transport)
        result = await generate(records(40), cfg, tmp_path, on_progress=snapshots.append)
        ledger = srv.ledger()
    assert result.stop_reason == "completed"
    assert (result.succeeded, result.failed, result.sent) == (40, 0, 40)
    traces = lines(tmp_path / "traces.jsonl")
    assert len(traces) == 40
    by_key = {e["request_key"]: e for e in ledger}
    assert len(by_key) == 40 == len(ledger)
    for t in traces:
        billed = by_key[t["request_key"]]
        assert t["prompt_tokens"] == billed["prompt_tokens"]
        assert t["completion_tokens"] == billed["completion_tokens"]
        assert abs(t["cost_usd"] - billed["cost_usd"]) < 1e-12
        assert t["model"] == "gpt-4o-mini" and t["model_returned"] == "tracegen-fake:gpt-4o-mini"
        assert t["response"] and t["finish_reason"] == "stop"
        rec = Record.from_dict(t)
        assert rec.target == rec.id.split(".")[1]
    stats = json.loads((tmp_path / "stats.json").read_text())
    for field in (
        "planned", "sent", "succeeded", "failed", "rejected", "skipped_done", "prompt_tokens",
        "completion_tokens", "cost_usd", "reserved_usd_unknown", "budget_usd", "stop_reason", "started_at",
        "finished_at", "tracegen_version", "config", "n_429", "n_retries", "n_timeouts",
    ):  # fmt: skip
        assert field in stats, field
    assert abs(stats["cost_usd"] - sum(e["cost_usd"] for e in ledger)) < 1e-9
    assert stats["config"]["transport"] == transport
    assert snapshots and snapshots[-1].done == 40 and snapshots[-1].total == 40
    assert snapshots[-1].budget_usd == 1.0


async def test_rerun_skips_done_and_pays_nothing_twice(tmp_path: Path) -> None:
    with FakeServer() as srv:
        cfg = RunConfig(base_url=srv.base_url, budget_usd=1.0)
        await generate(records(30), cfg, tmp_path)
        again = await generate(records(35), cfg, tmp_path)
        ledger = srv.ledger()
    assert (again.skipped_done, again.sent, again.succeeded) == (30, 5, 5)
    assert len(ledger) == len({e["request_key"] for e in ledger}) == 35


async def test_401_stops_the_run_after_the_first_wave(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-SECRET-1234")
    with FakeServer(FakeOptions(api_key="sk-right")) as srv:
        cfg = RunConfig(base_url=srv.base_url, concurrency=256)
        with pytest.raises(AuthError) as info:
            await generate(records(500), cfg, tmp_path)
        counters = srv.counters()
    assert 1 <= counters["requests"] <= FIRST_WAVE  # a bad key costs at most the first wave
    assert "sk-wrong" not in str(info.value) and "OPENAI_API_KEY" in str(info.value)
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["stop_reason"] == "auth"
    assert "sk-wrong" not in (tmp_path / "stats.json").read_text()


async def test_a_quiet_first_wave_opens_full_concurrency_before_the_first_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # answers take 3 s; nothing came back wrong within WAVE_QUIET_S: the rest go out without waiting 3 s
    monkeypatch.setenv("OPENAI_API_KEY", "sk-right")
    with FakeServer(FakeOptions(api_key="sk-right", latency_mean_s=3.0)) as srv:
        cfg = RunConfig(base_url=srv.base_url, concurrency=64)
        run = asyncio.create_task(generate(records(64), cfg, tmp_path))
        await asyncio.sleep(2.0)  # well past WAVE_QUIET_S, well before the first answer (3 s)
        received_before_any_answer = srv.counters()["requests"]
        result = await run
    assert result.succeeded == 64
    assert received_before_any_answer == 64  # held to the wave (8) until an answer, it would be FIRST_WAVE


async def test_a_refused_key_with_slow_answers_still_costs_only_the_wave(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    with FakeServer(FakeOptions(api_key="sk-right", latency_mean_s=3.0)) as srv:
        with pytest.raises(AuthError):
            await generate(records(200), RunConfig(base_url=srv.base_url, concurrency=64), tmp_path)
        assert 1 <= srv.counters()["requests"] <= FIRST_WAVE  # the 401s came back at once: the gate held


def test_the_preflight_measures_the_round_trip_and_the_wave_waits_a_few_of_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tracegen.engine import preflight, runner

    monkeypatch.setenv("OPENAI_API_KEY", "sk-right")
    with FakeServer(FakeOptions(api_key="sk-right")) as srv:
        assert preflight.round_trip_s(srv.base_url) is None
        preflight.check_endpoint(RunConfig(base_url=srv.base_url))
        rtt = preflight.round_trip_s(srv.base_url + "/")
    assert rtt is not None and 0 < rtt < preflight.TIMEOUT_S
    assert runner.wave_quiet_s(None) == runner.WAVE_QUIET_S  # not measured: the fixed half second
    assert runner.wave_quiet_s(0.001) == runner.WAVE_QUIET_MIN_S  # a local server: the floor
    assert runner.wave_quiet_s(0.05) == pytest.approx(runner.QUIET_ROUND_TRIPS * 0.05)
    assert runner.wave_quiet_s(2.0) == runner.WAVE_QUIET_S  # a slow link: never more than the default


async def test_a_measured_round_trip_opens_the_wave_sooner_and_a_bad_key_still_costs_only_the_wave(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tracegen.engine import preflight, runner

    monkeypatch.setattr(runner, "WAVE_QUIET_S", 30.0)  # unmeasured, the wave would wait for the 3-s answer
    with FakeServer(FakeOptions(api_key="sk-right", latency_mean_s=3.0)) as srv:
        monkeypatch.setitem(preflight._ROUND_TRIPS, srv.base_url, 0.05)  # quiet: 4 x 0.05 s
        monkeypatch.setenv("OPENAI_API_KEY", "sk-right")
        run = asyncio.create_task(
            generate(records(64), RunConfig(base_url=srv.base_url, concurrency=64), tmp_path / "ok")
        )
        await asyncio.sleep(1.5)  # well past 0.2 s, well before the first answer (3 s)
        received_before_any_answer = srv.counters()["requests"]
        assert (await run).succeeded == 64
        assert received_before_any_answer == 64
        monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
        before = srv.counters()["requests"]
        with pytest.raises(AuthError):
            await generate(records(200), RunConfig(base_url=srv.base_url, concurrency=64), tmp_path / "bad")
        assert 1 <= srv.counters()["requests"] - before <= FIRST_WAVE  # the 401s came back within the quiet


async def test_insufficient_quota_stops_the_run(tmp_path: Path) -> None:
    with FakeServer(FakeOptions(insufficient_quota=True)) as srv:
        cfg = RunConfig(base_url=srv.base_url, concurrency=64)
        with pytest.raises(QuotaError):
            await generate(records(100), cfg, tmp_path, sleep=no_sleep)
        assert 1 <= srv.counters()["requests"] <= FIRST_WAVE
    assert json.loads((tmp_path / "stats.json").read_text())["stop_reason"] == "quota"


async def test_quota_running_out_mid_run_stops_without_a_storm(tmp_path: Path) -> None:
    with FakeServer(FakeOptions(latency_mean_s=0.01)) as srv:
        cfg = RunConfig(base_url=srv.base_url, concurrency=8)

        def flip(p: Progress) -> None:
            if p.succeeded >= 10 and not srv.options.insufficient_quota:
                srv.update(insufficient_quota=True)

        with pytest.raises(QuotaError):
            await generate(records(3000), cfg, tmp_path, on_progress=flip, sleep=no_sleep)
        counters = srv.counters()
    assert counters["requests"] < 1000  # stopped within the requests in flight, not after the whole plan
    assert len(lines(tmp_path / "traces.jsonl")) >= 10


async def test_unreachable_endpoint_is_one_endpoint_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = RunConfig(base_url=f"http://127.0.0.1:{port}/v1")
    with pytest.raises(EndpointError) as info:
        await generate(records(50), cfg, tmp_path, sleep=no_sleep)
    assert "--base-url" in str(info.value)


async def test_400_goes_to_failed_others_continue_and_rerun_retries_only_failed(tmp_path: Path) -> None:
    plan = records(12, "niv")
    plan[5].question = "word " * 9000  # past gpt-4's 8,192-token window: 400 context_length_exceeded
    with FakeServer() as srv:
        cfg = RunConfig(base_url=srv.base_url, model="gpt-4", max_tokens=100)
        result = await generate(plan, cfg, tmp_path, sleep=no_sleep)
        assert (result.succeeded, result.failed) == (11, 1)
        failed = lines(tmp_path / "failed.jsonl")
        assert len(failed) == 1
        assert failed[0]["id"] == "niv.5" and failed[0]["attempts"] == 1
        assert failed[0]["error"]["status"] == 400
        assert failed[0]["error"]["code"] == "context_length_exceeded"
        assert "maximum context length" in failed[0]["error"]["message"]
        n_before = srv.counters()["requests"]
        again = await generate(plan, cfg, tmp_path, sleep=no_sleep)
        assert srv.counters()["requests"] - n_before == 1  # only the failed one is sent again
    assert (again.skipped_done, again.failed) == (11, 1)
    assert len(lines(tmp_path / "failed.jsonl")) == 1  # compacted: last entry per key


async def test_5xx_timeouts_and_drops_are_retried(tmp_path: Path) -> None:
    opts = FakeOptions(error_rate_500=0.2, error_rate_503=0.1, drop_rate=0.1, timeout_rate=0.05, hang_s=0.5)
    with FakeServer(opts) as srv:
        cfg = RunConfig(base_url=srv.base_url, timeout_s=0.25, max_attempts=12, budget_usd=1.0)
        result = await generate(records(60), cfg, tmp_path, sleep=no_sleep)
        ledger = srv.ledger()
    assert result.succeeded == 60
    assert result.stats["n_retries"] > 0 and result.stats["n_5xx"] > 0
    assert len(lines(tmp_path / "traces.jsonl")) == 60
    # dropped / timed-out answers were billed by the server: our books charge them at their reservation
    assert result.total_spent_usd >= sum(e["cost_usd"] for e in ledger) - 1e-12


async def test_length_is_kept_and_flagged_and_optionally_retried(tmp_path: Path) -> None:
    opts = FakeOptions(mean_completion_tokens=300, completion_tokens_spread=0.0)
    with FakeServer(opts) as srv:
        cfg = RunConfig(base_url=srv.base_url, max_tokens=50)
        res = await generate(records(3), cfg, tmp_path / "a")
        traces = lines(tmp_path / "a" / "traces.jsonl")
        assert res.stats["length"] == 3
        assert all(t["finish_reason"] == "length" and t["completion_tokens"] == 50 for t in traces)
        srv.reset()
        cfg2 = RunConfig(base_url=srv.base_url, max_tokens=50, retry_length=True)
        await generate(records(3), cfg2, tmp_path / "b")
        traces2 = lines(tmp_path / "b" / "traces.jsonl")
        ledger = srv.ledger()
    assert len(ledger) == 6  # each record asked twice: 50, then 100 tokens
    assert all(t["completion_tokens"] == 100 for t in traces2)
    assert abs(sum(t["cost_usd"] for t in traces2) - sum(e["cost_usd"] for e in ledger)) < 1e-12


class FilteringClient:
    """A queue-free fake teacher: content_filter for odd ids, otherwise a fixed answer."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    async def complete(
        self, body: dict[str, Any], request_id: str, *, payload: bytes | None = None
    ) -> ChatResult:
        self.bodies.append(body)
        filtered = int(request_id.split(".")[1]) % 2 == 1
        return ChatResult(
            content="" if filtered else "An answer.",
            finish_reason="content_filter" if filtered else "stop",
            prompt_tokens=20,
            completion_tokens=0 if filtered else 3,
            model_returned="gpt-4o-mini-2024-07-18",
            headers={},
        )

    async def aclose(self) -> None:
        pass


async def test_content_filter_goes_to_rejected_and_is_not_paid_twice(tmp_path: Path) -> None:
    client = FilteringClient()
    cfg = RunConfig()
    result = await generate(records(6), cfg, tmp_path, client=client)
    assert (result.succeeded, result.rejected) == (3, 3)
    rejected = lines(tmp_path / "rejected.jsonl")
    assert {r["id"] for r in rejected} == {"cot.1", "cot.3", "cot.5"}
    assert all(r["stage"] == "generate" and r["reason"] == "content_filter" for r in rejected)
    assert rejected[0]["record"]["finish_reason"] == "content_filter"
    again = await generate(records(6), cfg, tmp_path, client=client)
    assert again.skipped_done == 6 and len(client.bodies) == 6


async def test_stop_event_finishes_in_flight_and_leaves_consistent_files(tmp_path: Path) -> None:
    stop = asyncio.Event()
    with FakeServer(FakeOptions(latency_mean_s=0.05)) as srv:
        cfg = RunConfig(base_url=srv.base_url, concurrency=16, budget_usd=1.0)

        def on_progress(p: Progress) -> None:
            if p.succeeded >= 20:
                stop.set()

        result = await generate(records(2000), cfg, tmp_path, on_progress=on_progress, stop=stop)
        assert result.stop_reason == "interrupted"
        assert result.succeeded < 2000
        assert json.loads((tmp_path / "stats.json").read_text())["stop_reason"] == "interrupted"
        done_keys = [t["request_key"] for t in lines(tmp_path / "traces.jsonl")]
        assert len(done_keys) == result.succeeded
        final = await generate(records(200), cfg, tmp_path)
        ledger = srv.ledger()
    assert final.stop_reason == "completed"
    keys = [t["request_key"] for t in lines(tmp_path / "traces.jsonl")]
    assert len(keys) == len(set(keys))
    paid_twice = sum(c - 1 for c in collections.Counter(e["request_key"] for e in ledger).values())
    assert paid_twice == 0  # in-flight requests were allowed to finish, so nothing is lost


def _driver() -> Any:
    spec = importlib.util.spec_from_file_location("engine_driver", HELPERS / "engine_driver.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
async def test_kill_9_then_resume_loses_nothing_and_pays_at_most_the_in_flight_twice(tmp_path: Path) -> None:
    driver = _driver()
    n = 1500
    run = tmp_path / "run"
    with FakeServer(FakeOptions(latency_mean_s=0.03, latency_jitter_s=0.02)) as srv:
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        proc = subprocess.Popen(
            [sys.executable, str(HELPERS / "engine_driver.py"), str(run), srv.base_url, str(n)], env=env
        )
        traces = run / "traces.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if traces.exists() and traces.stat().st_size > 40_000:
                break
            await asyncio.sleep(0.02)
        assert proc.poll() is None, "the driver finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        before = len(traces.read_bytes().splitlines())
        assert 0 < before < n
        result = await generate(driver.records(n), driver.config(srv.base_url), RunDir.open(run))
        ledger = srv.ledger()
    assert result.stop_reason == "completed"
    keys = [t["request_key"] for t in lines(traces)]
    assert len(keys) == len(set(keys)) == n  # nothing lost, nothing duplicated
    assert result.skipped_done >= before - 1  # a torn last line at the kill is dropped and re-asked
    paid = collections.Counter(e["request_key"] for e in ledger)
    assert set(paid) == set(keys)
    paid_twice = sum(c - 1 for c in paid.values())
    # at most the requests in flight at the kill: on the wire (<= CONCURRENCY) or answered but not yet durable
    assert paid_twice <= 2 * driver.CONCURRENCY
    billed = sum(e["cost_usd"] for e in ledger)
    assert billed <= driver.BUDGET_USD
    assert result.total_spent_usd >= billed - 1e-12  # the crashed session is charged conservatively
    entries = [json.loads(x) for x in (run / "ledger.jsonl").read_text().splitlines()]
    sessions = {e["session"] for e in entries}
    assert len(sessions) == 2
    assert sum(1 for e in entries if e["event"] == "close") == 1  # the killed session never closed


async def test_caps_stop_dispatch_with_their_reason(tmp_path: Path) -> None:
    with FakeServer() as srv:
        cfg = RunConfig(base_url=srv.base_url, max_requests=7, concurrency=4)
        capped = await generate(records(50), cfg, tmp_path / "a")
        assert (capped.stop_reason, capped.sent, capped.succeeded) == ("max_requests", 7, 7)
        cfg2 = RunConfig(base_url=srv.base_url, max_total_tokens=3000, max_tokens=200, concurrency=4)
        tok = await generate(records(50), cfg2, tmp_path / "b")
    assert tok.stop_reason == "max_total_tokens"
    assert 0 < tok.succeeded < 50
    assert tok.stats["prompt_tokens"] + tok.stats["completion_tokens"] <= 3000


async def test_async_iterable_plan_is_streamed(tmp_path: Path) -> None:
    async def plan() -> Any:
        for rec in records(25):
            await asyncio.sleep(0)
            yield rec

    with FakeServer() as srv:
        result = await generate(plan(), RunConfig(base_url=srv.base_url), tmp_path, total=25)
    assert result.succeeded == 25 and result.planned == 25


async def test_grace_period_cancels_hanging_requests_and_charges_them(tmp_path: Path) -> None:
    stop = asyncio.Event()
    with FakeServer(FakeOptions(timeout_rate=1.0, hang_s=5.0)) as srv:
        cfg = RunConfig(base_url=srv.base_url, concurrency=8, timeout_s=30, budget_usd=1.0)
        asyncio.get_running_loop().call_later(0.5, stop.set)
        result = await generate(records(40), cfg, tmp_path, stop=stop, grace_s=0.3)
        billed = sum(e["cost_usd"] for e in srv.ledger())
    assert result.stop_reason == "interrupted"
    assert result.succeeded == 0 and result.stats["unfinished"] > 0  # cancelled, not waited for
    assert result.stats["reserved_usd_unknown"] > 0  # maybe billed: charged at their reservation
    assert result.total_spent_usd >= billed
    assert json.loads((tmp_path / "stats.json").read_text())["stop_reason"] == "interrupted"
