"""Batch API mode end to end, offline: the real openai SDK against the in-package fake server."""

from __future__ import annotations

import asyncio
import collections
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

import tracegen.batch as batch
from helpers import HELPERS
from helpers.batch import (
    CRASH_EXIT_CODE,
    MODEL,
    assert_never_paid_twice,
    assert_traces_match_ledger,
    billed_keys,
    billed_usd,
    config,
    go,
    journal,
    lines,
    open_run,
    records,
    spent_in_ledger,
    worst_case_usd,
)
from tracegen.batch import acancel, astatus, cancel, status
from tracegen.batch.collect import parse_line
from tracegen.config import RunConfig
from tracegen.engine import RunDir, generate, request_key
from tracegen.errors import BatchError, RunDirError
from tracegen.planning.plan import request_body
from tracegen.records import Record
from tracegen.testing import FakeServer


# ---- helpers ---------------------------------------------------------------------------------------------
def keys_of(recs: list[Record], cfg: RunConfig) -> set[str]:
    return {request_key(request_body(r, cfg)) for r in recs}


def setup(
    server: FakeServer, tmp_path: Path, n: int, **changes: Any
) -> tuple[list[Record], RunConfig, RunDir]:
    run = tmp_path / "run"
    cfg = config(server.base_url, run, **changes)
    return records(n), cfg, open_run(run, cfg, n)


# ---- API -----------------------------------------------------------------------------------------------
def test_public_api_is_pinned() -> None:
    assert set(batch.__all__) == {
        "MAX_BYTES_PER_FILE", "MAX_REQUESTS_PER_FILE", "acancel", "astatus", "cancel", "outstanding_parts",
        "run_batches", "status",
    }  # fmt: skip
    assert batch.MAX_REQUESTS_PER_FILE == 50_000 and batch.MAX_BYTES_PER_FILE == 200 * 1024 * 1024


def test_line_classification() -> None:
    ok = parse_line(
        {
            "custom_id": "a",
            "response": {
                "status_code": 200,
                "body": {
                    "model": "m-1",
                    "choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 1},
                },
            },
            "error": None,
        }
    )
    assert (ok.kind, ok.content, ok.prompt_tokens, ok.completion_tokens, ok.model_returned) == (
        "answer",
        "hi",
        3,
        1,
        "m-1",
    )

    def err(status: int, code: str) -> Any:
        body = {"error": {"message": "x", "type": code, "code": code}}
        return parse_line(
            {"custom_id": "a", "response": {"status_code": status, "body": body}, "error": None}
        )

    assert err(500, "server_error").retryable and err(429, "rate_limit_exceeded").retryable
    assert not err(400, "invalid_request_error").retryable
    assert not err(429, "insufficient_quota").retryable
    assert err(500, "server_error").error["status"] == 500
    expired = parse_line(
        {"custom_id": "a", "response": None, "error": {"code": "batch_expired", "message": "m"}}
    )
    assert expired.kind == "expired" and expired.retryable
    cancelled = parse_line(
        {"custom_id": "a", "response": None, "error": {"code": "batch_cancelled", "message": "m"}}
    )
    assert cancelled.kind == "cancelled" and not cancelled.retryable


# ---- lifecycle -------------------------------------------------------------------------------------------
async def test_full_lifecycle_then_rerun_and_online_pay_nothing(srv: FakeServer, tmp_path: Path) -> None:
    recs, cfg, rd = setup(srv, tmp_path, 10)
    stages: list[str] = []
    polled: list[list[dict[str, Any]]] = []
    result = await go(recs, cfg, rd, on_stage=stages.append, on_batches=polled.append)

    assert result.stop_reason == "completed"
    assert (result.succeeded, result.failed, result.rejected) == (10, 0, 0)
    counters = srv.counters()
    assert counters["batches_created"] == 3 == counters["files_uploaded"]  # 4 + 4 + 2
    assert_never_paid_twice(srv)
    assert_traces_match_ledger(rd.path, srv)
    traces = lines(rd.path / "traces.jsonl")
    assert {t["request_key"] for t in traces} == keys_of(recs, cfg) == set(billed_keys(srv))
    for t in traces:
        assert t["response"] and t["model"] == MODEL and t["model_returned"] == f"tracegen-fake:{MODEL}"
        assert t["finish_reason"] == "stop" and t["id"].startswith("cot.")
        assert Record.from_dict(t).key == t["key"]
    # dollars: settled from the output files, exactly what the provider billed
    assert result.cost_usd == pytest.approx(billed_usd(srv), abs=1e-12)
    assert spent_in_ledger(rd.path) == pytest.approx(billed_usd(srv), abs=1e-12)
    stats = json.loads((rd.path / "stats.json").read_text())
    assert stats["mode"] == "batch" and stats["stop_reason"] == "completed" and stats["succeeded"] == 10
    assert stats["batch"]["batches_created"] == 3 and stats["batch"]["parts_in_flight"] == 0
    # progress while polling
    assert any(s.startswith("batches: part 1") for s in stages)
    assert polled and {r["status"] for r in polled[-1]} <= {
        "completed",
        "finalizing",
        "in_progress",
        "validating",
    }
    # status: one row per batch, from the journal once collected
    rows = await asyncio.to_thread(status, rd.path)
    assert [r["status"] for r in rows] == ["completed"] * 3
    assert [r["total"] for r in rows] == [4, 4, 2] and all(r["collected"] and r["batch_id"] for r in rows)
    assert {r["input_file_id"] for r in rows} == {
        e["file_id"] for e in journal(rd.path) if e["event"] == "uploaded"
    }

    # a rerun (batch) and an online run of the same plan send nothing: same done set, same cache keys
    again = await go(recs, cfg, rd)
    assert (again.stop_reason, again.skipped_done, again.succeeded) == ("completed", 10, 0)
    online = await generate(recs, cfg, rd)
    assert online.skipped_done == 10 and online.sent == 0
    assert srv.counters()["batches_created"] == 3 and srv.counters()["requests"] == 0
    assert len(lines(rd.path / "traces.jsonl")) == 10


async def test_records_answered_online_are_not_batched(srv: FakeServer, tmp_path: Path) -> None:
    recs, cfg, rd = setup(srv, tmp_path, 9)
    first = await generate(recs[:5], cfg, rd)
    assert first.succeeded == 5
    result = await go(recs, cfg, rd)
    assert (result.stop_reason, result.succeeded, result.skipped_done) == ("completed", 4, 5)
    assert_never_paid_twice(srv)
    kinds = collections.Counter(e["kind"] for e in srv.ledger())
    assert kinds == {"online": 5, "batch": 4}
    assert len(lines(rd.path / "traces.jsonl")) == 9
    # the budget spans both modes: the ledger holds both sessions
    assert spent_in_ledger(rd.path) == pytest.approx(billed_usd(srv), abs=1e-12)


async def test_split_within_request_and_byte_limits(srv: FakeServer, tmp_path: Path) -> None:
    recs, cfg, rd = setup(srv, tmp_path, 12, batch_keep_files=True)  # the uploads are inspected below
    line_bytes = max(len(json.dumps({"custom_id": r.id, "method": "POST", "url": "/v1/chat/completions",
                                     "body": request_body(r, cfg)}, ensure_ascii=False, separators=(",", ":"))) + 1
                     for r in recs)  # fmt: skip
    big = Record(id="cot.99", submix="cot", question="long " * 400)
    result = await go([*recs, big], cfg, rd, max_requests_per_file=5, max_bytes_per_file=2 * line_bytes + 10)
    assert result.stop_reason == "completed" and result.succeeded == 12
    parts = [e for e in journal(rd.path) if e["event"] == "part"]
    assert len(parts) == 6 and all(p["requests"] <= 2 and p["bytes"] <= 2 * line_bytes + 10 for p in parts)
    assert sum(p["requests"] for p in parts) == 12
    # what was uploaded is exactly the part (sizes recorded in the journal)
    client = openai.AsyncOpenAI(api_key="k", base_url=srv.base_url)
    files = {f.id: f.bytes async for f in client.files.list(purpose="batch")}
    assert sorted(files[e["file_id"]] for e in journal(rd.path) if e["event"] == "uploaded") == sorted(
        p["bytes"] for p in parts
    )
    # a request larger than a file may hold fails alone, with a message that says what to do
    failed = lines(rd.path / "failed.jsonl")
    assert [f["id"] for f in failed] == ["cot.99"] and failed[0]["error"]["code"] == "request_too_large"
    assert "--mode online" in failed[0]["error"]["message"]


async def test_budget_is_reserved_at_batch_prices_and_never_exceeded(srv: FakeServer, tmp_path: Path) -> None:
    recs, cfg, rd = setup(srv, tmp_path, 40)
    batch_worst = worst_case_usd(recs[0], batch_prices=True)
    online_worst = worst_case_usd(recs[0], batch_prices=False)
    assert online_worst == pytest.approx(2 * batch_worst)
    budget = 6.5 * batch_worst  # 6 requests' worst case at batch prices, 3 at online prices
    cfg = cfg.model_copy(update={"budget_usd": budget})
    result = await go(recs, cfg, rd, max_requests_per_file=50)

    assert result.stop_reason == "budget"
    parts = [e for e in journal(rd.path) if e["event"] == "part"]
    # the first batch holds what fits at batch prices (6, not the 3 online prices would allow) ...
    assert parts[0]["requests"] == 6 and parts[0]["reserve_usd"] <= budget
    # ... and answers cost less than their worst case, so later batches use the room settling freed
    assert len(parts) > 1 and 6 < result.succeeded < 40
    assert billed_usd(srv) <= budget
    assert result.total_spent_usd == pytest.approx(billed_usd(srv), abs=1e-12)
    assert spent_in_ledger(rd.path) <= budget
    assert_never_paid_twice(srv)
    assert_traces_match_ledger(rd.path, srv)
    # every batch was created only once the reservations before it left room for its worst case
    committed = 0.0
    for e in journal(rd.path):
        if e["event"] == "part":
            committed += e["reserve_usd"]
            assert committed <= budget + 1e-12
        elif e["event"] == "collected":
            part = next(p for p in parts if p["part"] == e["part"])
            committed += e["cost_usd"] - part["reserve_usd"]
    # rerunning with a larger budget answers the rest, paying nothing twice
    more = await go(recs, cfg.model_copy(update={"budget_usd": 1.0}), rd, max_requests_per_file=50)
    assert more.stop_reason == "completed"
    assert len(lines(rd.path / "traces.jsonl")) == 40
    assert_never_paid_twice(srv)


async def test_max_requests_caps_first_submissions(srv: FakeServer, tmp_path: Path) -> None:
    recs, cfg, rd = setup(srv, tmp_path, 10, max_requests=6)
    result = await go(recs, cfg, rd)
    assert result.stop_reason == "max_requests" and result.succeeded == 6 and result.sent == 6
    assert len(srv.ledger()) == 6


# ---- failures, expiry, cancel --------------------------------------------------------------------------
async def test_failed_lines_are_resubmitted_with_bounded_attempts(srv: FakeServer, tmp_path: Path) -> None:
    srv.update(batch_fail_rate=0.5, seed=3)
    recs, cfg, rd = setup(srv, tmp_path, 24, max_attempts=2)
    result = await go(recs, cfg, rd, max_requests_per_file=50)

    assert result.stop_reason == "completed"
    failed = lines(rd.path / "failed.jsonl")
    traces = lines(rd.path / "traces.jsonl")
    assert result.failed == len(failed) > 0 and result.succeeded == len(traces) > 0
    assert len(failed) + len(traces) == 24
    for f in failed:  # two submissions each, both answered 500 (retryable): the whole chain is kept
        assert f["attempts"] == 2 and [c["status"] for c in f["chain"]] == [500, 500]
        assert f["error"]["status"] == 500 and f["key"] and f["id"].startswith("cot.")
    stats = result.stats
    assert stats["batch"]["resubmitted"] > 0 and stats["attempts"] == 24 + stats["batch"]["resubmitted"]
    parts = [e for e in journal(rd.path) if e["event"] == "part"]
    assert len(parts) == 2 and parts[1]["requests"] == stats["batch"]["resubmitted"]
    assert_never_paid_twice(srv)  # failed lines are not billed; answered ones once
    assert set(billed_keys(srv)) == {t["request_key"] for t in traces}
    assert result.cost_usd == pytest.approx(billed_usd(srv), abs=1e-12)

    # a rerun retries what failed (like online mode), and only that
    srv.update(batch_fail_rate=0.0)
    again = await go(recs, cfg, rd, max_requests_per_file=50)
    assert again.succeeded == len(failed) and again.skipped_done == len(traces)
    assert len(lines(rd.path / "failed.jsonl")) == 0  # compacted: the keys are done now
    assert_never_paid_twice(srv)


async def test_expired_batches_are_harvested_and_the_rest_resubmitted(
    srv: FakeServer, tmp_path: Path
) -> None:
    srv.update(batch_expire=True, batch_expire_fraction=0.5)
    recs, cfg, rd = setup(srv, tmp_path, 8, max_attempts=3)
    result = await go(recs, cfg, rd, max_requests_per_file=50)

    # 8 -> 4 answered, 4 expired -> 2 + 2 -> 1 + 1: attempt 3 is the last, so 1 request fails
    assert result.stop_reason == "completed"
    assert (result.succeeded, result.failed) == (7, 1)
    parts = [e for e in journal(rd.path) if e["event"] == "part"]
    assert [p["requests"] for p in parts] == [8, 4, 2]
    collected = [e for e in journal(rd.path) if e["event"] == "collected"]
    assert [c["status"] for c in collected] == ["expired"] * 3
    failed = lines(rd.path / "failed.jsonl")
    assert failed[0]["attempts"] == 3 and failed[0]["error"]["code"] == "batch_expired"
    assert result.stats["batch"]["expired_lines"] == 4 + 2 + 1
    assert_never_paid_twice(srv)
    assert_traces_match_ledger(rd.path, srv)
    assert spent_in_ledger(rd.path) == pytest.approx(billed_usd(srv), abs=1e-12)


async def test_finish_online_answers_what_batches_could_not(srv: FakeServer, tmp_path: Path) -> None:
    srv.update(batch_expire=True, batch_expire_fraction=0.5)
    recs, cfg, rd = setup(srv, tmp_path, 8, max_attempts=2)
    result = await go(recs, cfg, rd, max_requests_per_file=50, finish_online=True)

    assert result.stop_reason == "completed"
    assert (result.succeeded, result.failed) == (8, 0)
    kinds = collections.Counter(e["kind"] for e in srv.ledger())
    assert kinds == {"batch": 6, "online": 2}
    assert_never_paid_twice(srv)
    assert len(lines(rd.path / "traces.jsonl")) == 8 and not lines(rd.path / "failed.jsonl")
    stats = json.loads((rd.path / "stats.json").read_text())
    assert stats["mode"] == "batch" and stats["online"]["succeeded"] == 2 and stats["succeeded"] == 8
    assert result.total_spent_usd == pytest.approx(billed_usd(srv), abs=1e-9)


async def test_cancel_harvests_partial_results_and_a_rerun_finishes(srv: FakeServer, tmp_path: Path) -> None:
    srv.update(batch_delay_s=3.0)
    recs, cfg, rd = setup(srv, tmp_path, 30)
    progressed = asyncio.Event()

    def watch(rows: list[dict[str, Any]]) -> None:
        if any(r["status"] == "in_progress" and r["completed"] >= 3 for r in rows):
            progressed.set()

    task = asyncio.create_task(go(recs, cfg, rd, max_requests_per_file=50, on_batches=watch))
    await asyncio.wait_for(progressed.wait(), 20)
    rows = await asyncio.to_thread(cancel, rd.path)  # the CLI's sync entry point, from another thread
    assert [r["status"] for r in rows] in (["cancelling"], ["cancelled"])
    result = await asyncio.wait_for(task, 20)

    assert result.stop_reason == "interrupted"
    traces = lines(rd.path / "traces.jsonl")
    assert 3 <= len(traces) < 30 and result.succeeded == len(traces)
    assert set(billed_keys(srv)) == {t["request_key"] for t in traces}  # what was answered is kept
    assert not lines(rd.path / "failed.jsonl")  # cancelled lines are not failures: a rerun sends them
    assert result.stats["unfinished"] == 30 - len(traces)
    assert [r["status"] for r in await astatus(rd.path)] == ["cancelled"]

    srv.update(batch_delay_s=0.1)
    again = await go(recs, cfg, rd, max_requests_per_file=50)
    assert again.stop_reason == "completed" and again.succeeded == 30 - len(traces)
    assert len(lines(rd.path / "traces.jsonl")) == 30
    assert_never_paid_twice(srv)
    assert spent_in_ledger(rd.path) == pytest.approx(billed_usd(srv), abs=1e-12)


# ---- interruption and resume ---------------------------------------------------------------------------
class Crash(Exception):
    pass


async def test_crash_between_upload_and_create_then_resume(srv: FakeServer, tmp_path: Path) -> None:
    recs, cfg, rd = setup(srv, tmp_path, 10)

    def crash(step: str, part: int) -> None:
        if (step, part) == ("uploaded", 2):
            raise Crash

    with pytest.raises(Crash):
        await go(recs, cfg, rd, checkpoint=crash)
    events = [(e["event"], e.get("part")) for e in journal(rd.path)]
    assert ("uploaded", 2) in events and ("created", 2) not in events
    assert srv.counters()["files_uploaded"] == 2 and srv.counters()["batches_created"] == 1
    # part 1 (in flight) and part 2 (uploaded) stay counted at their worst case by their ledger sessions
    reserved = sum(e["reserve_usd"] for e in journal(rd.path) if e["event"] == "part")
    assert spent_in_ledger(rd.path) == pytest.approx(reserved)

    result = await go(recs, cfg, rd)
    assert result.stop_reason == "completed" and result.succeeded == 10
    counters = srv.counters()
    assert counters["files_uploaded"] == 3  # part 2's upload was reused, part 3 uploaded
    assert counters["batches_created"] == 3  # one batch per part: none orphaned, none doubled
    assert_never_paid_twice(srv)
    assert_traces_match_ledger(rd.path, srv)
    # the second session settled them with what was billed: the ledger is exact again
    assert spent_in_ledger(rd.path) == pytest.approx(billed_usd(srv), abs=1e-12)
    assert result.total_spent_usd == pytest.approx(billed_usd(srv), abs=1e-12)


async def test_batch_created_but_not_journaled_is_found_by_listing(srv: FakeServer, tmp_path: Path) -> None:
    recs, cfg, rd = setup(srv, tmp_path, 6)

    def crash(step: str, part: int) -> None:
        if (step, part) == ("created", 1):
            raise Crash

    with pytest.raises(Crash):
        await go(recs, cfg, rd, checkpoint=crash)
    # the answer of batches.create was lost: drop the "created" line, as if the crash came before it
    path = rd.path / "batches.jsonl"
    path.write_text("".join(x + "\n" for x in path.read_text().splitlines() if '"event":"created"' not in x))
    assert srv.counters()["batches_created"] == 1

    stages: list[str] = []
    result = await go(recs, cfg, rd, on_stage=stages.append)
    assert result.stop_reason == "completed" and result.succeeded == 6
    assert srv.counters()["batches_created"] == 2  # part 1's batch was found by its metadata, part 2 new
    assert any("found its batch" in s for s in stages)
    recovered = [e for e in journal(rd.path) if e["event"] == "created" and e.get("recovered")]
    assert [e["part"] for e in recovered] == [1]
    assert_never_paid_twice(srv)


async def test_batch_metadata_names_run_and_part(srv: FakeServer, tmp_path: Path) -> None:
    recs, cfg, rd = setup(srv, tmp_path, 5)
    await go(recs, cfg, rd)
    run_id = journal(rd.path)[0]["run_id"]
    client = openai.AsyncOpenAI(api_key="k", base_url=srv.base_url)
    metas = [b.metadata or {} async for b in client.batches.list()]
    assert sorted(m["tracegen_part"] for m in metas) == ["1", "2"]
    assert {m["tracegen_run"] for m in metas} == {run_id}


async def test_stop_leaves_batches_running_and_a_rerun_resumes_polling(
    srv: FakeServer, tmp_path: Path
) -> None:
    srv.update(batch_delay_s=0.5)
    recs, cfg, rd = setup(srv, tmp_path, 10)
    stop = asyncio.Event()

    def stop_after_last(step: str, part: int) -> None:
        if (step, part) == ("created", 3):
            stop.set()

    first = await go(recs, cfg, rd, stop=stop, checkpoint=stop_after_last)
    assert first.stop_reason == "interrupted" and first.succeeded == 0
    assert batch.outstanding_parts(rd.path) == 3 and batch.outstanding_parts(tmp_path) == 0
    assert first.stats["batch"]["parts_in_flight"] == 3 and first.stats["reserved_usd_in_flight"] > 0
    rows = await astatus(rd.path)
    assert len(rows) == 3 and all(not r["collected"] for r in rows)
    assert {r["status"] for r in rows} <= {"validating", "in_progress", "finalizing", "completed"}

    result = await go(recs, cfg, rd)
    assert result.stop_reason == "completed" and result.succeeded == 10
    assert batch.outstanding_parts(rd.path) == 0
    assert srv.counters()["batches_created"] == 3  # polled again, never recreated
    assert_never_paid_twice(srv)
    assert spent_in_ledger(rd.path) == pytest.approx(billed_usd(srv), abs=1e-12)
    assert [r["status"] for r in await astatus(rd.path)] == ["completed"] * 3


@pytest.mark.slow
@pytest.mark.parametrize(("step", "part"), [("intent", 1), ("uploaded", 2), ("created", 3), ("journaled", 1)])
async def test_hard_crash_then_resume(srv: FakeServer, tmp_path: Path, step: str, part: int) -> None:
    run = tmp_path / "run"
    driver = [sys.executable, str(HELPERS / "batch.py"), str(run), srv.base_url, "10", step, str(part)]
    proc = await asyncio.to_thread(subprocess.run, driver, capture_output=True, text=True, timeout=120)
    assert proc.returncode == CRASH_EXIT_CODE, proc.stderr
    before = srv.counters()
    if step in ("intent", "leased", "uploaded", "created"):
        assert not any(e["event"] == "close" for e in lines(run / "ledger.jsonl"))  # nothing settled yet

    cfg = config(srv.base_url, run)
    result = await go(records(10), cfg, open_run(run, cfg, 10))
    assert result.stop_reason == "completed"
    assert len(lines(run / "traces.jsonl")) == 10
    after = srv.counters()
    parts = [e for e in journal(run) if e["event"] == "part"]
    assert after["batches_created"] == len(parts) == 3  # no orphan, no duplicate batch
    assert after["files_uploaded"] == 3  # an upload that happened before the crash was reused
    assert before["batches_created"] <= 3
    assert_never_paid_twice(srv)
    assert_traces_match_ledger(run, srv)
    # each part's ledger session held its worst case through the crash; the resume settled it exactly
    assert spent_in_ledger(run) == pytest.approx(billed_usd(srv), abs=1e-12)
    assert result.total_spent_usd == pytest.approx(billed_usd(srv), abs=1e-12)


class LossyTransport(httpx2.AsyncHTTPTransport):
    """Delivers each upload and batch creation, then loses the first answer of each (a timeout)."""

    def __init__(self) -> None:
        super().__init__()
        self.lost: list[str] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await super().handle_async_request(request)
        path = request.url.path
        if request.method == "POST" and path in ("/v1/files", "/v1/batches") and path not in self.lost:
            await response.aread()
            self.lost.append(path)
            raise httpx2.ReadTimeout("the answer was lost", request=request)
        return response


async def test_lost_answers_to_upload_and_create_are_resolved_by_listing(
    srv: FakeServer, tmp_path: Path
) -> None:
    recs, cfg, rd = setup(srv, tmp_path, 6)
    transport = LossyTransport()
    client = openai.AsyncOpenAI(
        api_key="k", base_url=srv.base_url, max_retries=0, http_client=httpx2.AsyncClient(transport=transport)
    )
    result = await go(recs, cfg, rd, client=client)
    await client.close()
    assert transport.lost == ["/v1/files", "/v1/batches"]
    assert result.stop_reason == "completed" and result.succeeded == 6
    counters = srv.counters()
    assert counters["files_uploaded"] == 2 and counters["batches_created"] == 2  # the first ones were found
    assert_never_paid_twice(srv)


class FlakyPolls(httpx2.AsyncHTTPTransport):
    """Answers the first ``n`` polls of a batch with 503."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "GET" and request.url.path.startswith("/v1/batches/") and self.n > 0:
            self.n -= 1
            return httpx2.Response(503, json={"error": {"message": "overloaded", "type": "server_error"}})
        return await super().handle_async_request(request)


async def test_polling_survives_a_flaky_endpoint_with_injected_sleep(srv: FakeServer, tmp_path: Path) -> None:
    recs, cfg, rd = setup(srv, tmp_path, 3)
    naps: list[float] = []

    async def nap(seconds: float) -> None:
        naps.append(seconds)
        await asyncio.sleep(0.001)

    client = openai.AsyncOpenAI(
        api_key="k",
        base_url=srv.base_url,
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=FlakyPolls(8)),
    )
    result = await go(recs, cfg, rd, client=client, sleep=nap, poll_interval_s=7.0)
    await client.close()
    assert result.stop_reason == "completed" and result.succeeded == 3
    assert 7.0 in naps  # the poll interval, through the injected sleep
    assert sum(1 for s in naps if s != 7.0) >= 7  # backoffs between the 503s (6 per failed round, then 2)
    assert srv.counters()["batches_created"] == 1


async def test_polling_gives_up_after_repeated_failures(srv: FakeServer, tmp_path: Path) -> None:
    recs, cfg, rd = setup(srv, tmp_path, 3)

    async def nap(_: float) -> None:
        await asyncio.sleep(0)

    client = openai.AsyncOpenAI(
        api_key="k",
        base_url=srv.base_url,
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=FlakyPolls(10**6)),
    )
    with pytest.raises(BatchError, match="rerun the same command"):
        await go(recs, cfg, rd, client=client, sleep=nap)
    await client.close()
    stats = json.loads((rd.path / "stats.json").read_text())
    assert stats["stop_reason"] == "endpoint" and stats["batch"]["parts_in_flight"] == 1
    assert batch.outstanding_parts(rd.path) == 1  # a rerun polls it again


# ---- status, cancel, lock --------------------------------------------------------------------------------
async def test_status_and_cancel_of_a_run(srv: FakeServer, tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="not a --mode batch run directory"):
        await astatus(tmp_path)
    srv.update(batch_delay_s=5.0)
    recs, cfg, rd = setup(srv, tmp_path, 6)
    stop = asyncio.Event()

    def stop_at_end(step: str, part: int) -> None:
        if (step, part) == ("created", 2):
            stop.set()

    await go(recs, cfg, rd, stop=stop, checkpoint=stop_at_end)
    rows = await astatus(rd.path)
    assert [r["part"] for r in rows] == [1, 2]
    assert all(r["status"] in ("validating", "in_progress") and r["batch_id"] for r in rows)
    assert all(r["total"] == r["requests"] for r in rows if r["status"] == "in_progress")
    assert [r["requests"] for r in rows] == [4, 2]
    rows = await acancel(rd.path)
    assert {r["status"] for r in rows} <= {"cancelling", "cancelled"}
    assert await acancel(rd.path)  # cancelling again is harmless
    srv.update(batch_delay_s=0.1)
    result = await go(recs, cfg, rd)  # collects the cancelled batches, resubmits nothing this session
    assert result.stop_reason == "interrupted"
    assert {r["status"] for r in await astatus(rd.path)} == {"cancelled"}
    assert_never_paid_twice(srv)


async def test_one_batch_session_per_run_directory(srv: FakeServer, tmp_path: Path) -> None:
    recs, cfg, rd = setup(srv, tmp_path, 2)
    import fcntl
    import os

    from tracegen.lock import LOCK_NAME

    fd = os.open(rd.path / LOCK_NAME, os.O_RDWR | os.O_CREAT)  # as another process holds it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(RunDirError, match="another tracegen process"):
            await go(recs, cfg, rd)
    finally:
        os.close(fd)
    assert srv.counters()["files_uploaded"] == 0
