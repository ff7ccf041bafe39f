"""Batch mode's remaining online behaviours: retry_length, a cap on batches in flight, and our files
deleted on the provider after collection (the fake server's DELETE /v1/files/{id} as the real API)."""

from __future__ import annotations

import asyncio
import collections
import json
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from helpers import HELPERS, REPO
from helpers.batch import (
    CRASH_EXIT_CODE,
    assert_never_paid_twice,
    billed_usd,
    config,
    go,
    journal,
    lines,
    open_run,
    records,
    spent_in_ledger,
)
from tracegen.engine import request_key
from tracegen.planning.plan import request_body
from tracegen.testing import FakeServer


# ---- the fake server's Files API ---------------------------------------------------------------------------
async def test_fake_server_deletes_files_as_the_api_does(srv: FakeServer) -> None:
    client = openai.AsyncOpenAI(api_key="k", base_url=srv.base_url)
    f = await client.files.create(file=("a.jsonl", b"{}\n"), purpose="batch")
    assert srv.counters()["files_stored"] == 1
    deleted = await client.files.delete(f.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (f.id, "file", True)
    with pytest.raises(openai.NotFoundError):
        await client.files.retrieve(f.id)
    with pytest.raises(openai.NotFoundError):  # deleting twice: 404, as the real API
        await client.files.delete(f.id)
    counters = srv.counters()
    assert counters["files_deleted"] == 1 and counters["files_stored"] == 0
    await client.close()


# ---- files deleted after collection ------------------------------------------------------------------------
async def test_our_files_are_deleted_once_collected(srv: FakeServer, tmp_path: Path) -> None:
    srv.update(batch_fail_rate=0.3, seed=5)  # error files too
    run = tmp_path / "run"
    cfg = config(srv.base_url, run)
    result = await go(records(10), cfg, open_run(run, cfg, 10))
    assert result.stop_reason == "completed"
    counters = srv.counters()
    assert counters["files_stored"] == 0  # inputs, outputs and error files: nothing left on the provider
    cleaned = [e for e in journal(run) if e["event"] == "cleaned"]
    collected = [e for e in journal(run) if e["event"] == "collected"]
    assert len(cleaned) == len(collected) and counters["files_deleted"] == sum(
        len(e["file_ids"]) for e in cleaned
    )
    assert result.stats["batch"]["files_deleted"] == counters["files_deleted"]
    assert any(e["error_file_id"] for e in collected)
    assert list((run / "batches").glob("*.output.jsonl"))  # the local copies stay


async def test_keep_batch_files_keeps_them(srv: FakeServer, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = config(srv.base_url, run, batch_keep_files=True)
    result = await go(records(10), cfg, open_run(run, cfg, 10))
    assert result.stop_reason == "completed"
    assert srv.counters()["files_deleted"] == 0 and srv.counters()["files_stored"] == 6  # 3 in, 3 out
    assert not [e for e in journal(run) if e["event"] == "cleaned"]


async def test_a_crash_before_deleting_is_cleaned_up_by_the_rerun(srv: FakeServer, tmp_path: Path) -> None:
    run = tmp_path / "run"
    driver = [sys.executable, str(HELPERS / "batch.py"), str(run), srv.base_url, "10", "journaled", "1"]
    proc = await asyncio.to_thread(subprocess.run, driver, capture_output=True, text=True, timeout=120)
    assert proc.returncode == CRASH_EXIT_CODE, proc.stderr
    assert not [e for e in journal(run) if e["event"] == "cleaned"]
    cfg = config(srv.base_url, run)
    result = await go(records(10), cfg, open_run(run, cfg, 10))
    assert result.stop_reason == "completed"
    # part 1's files went with the rerun; batches other parts had in flight at the kill were collected too
    assert srv.counters()["files_stored"] == 0
    assert 1 in {e["part"] for e in journal(run) if e["event"] == "cleaned"}


# ---- batches in flight -------------------------------------------------------------------------------------
@pytest.mark.parametrize("cap", [1, 2])
async def test_max_batches_in_flight(srv: FakeServer, tmp_path: Path, cap: int) -> None:
    run = tmp_path / "run"
    cfg = config(srv.base_url, run, batch_max_in_flight=cap)
    result = await go(records(20), cfg, open_run(run, cfg, 20))
    assert result.stop_reason == "completed" and result.succeeded == 20
    counters = srv.counters()
    assert counters["batches_created"] == 5
    assert counters["batches_in_flight_max"] == cap


# ---- retry_length ------------------------------------------------------------------------------------------


async def test_retry_length_resubmits_cut_answers_with_a_larger_cap(srv: FakeServer, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = config(srv.base_url, run, max_tokens=32, retry_length=True)
    recs = records(16)
    result = await go(recs, cfg, open_run(run, cfg, 16))
    assert result.stop_reason == "completed" and result.succeeded == 16
    traces = lines(run / "traces.jsonl")
    assert len(traces) == 16 and not [t for t in traces if t["finish_reason"] == "length"]
    billed = srv.ledger()
    by_key = collections.defaultdict(list)
    for e in billed:
        by_key[e["request_key"]].append(e)
    originals = {request_key(request_body(r, cfg)): r for r in recs}
    retried = 0
    for t in traces:
        first = by_key[t["request_key"]]
        assert len(first) == 1  # the planned request billed once
        if first[0]["completion_tokens"] == 32:  # cut: one retry at 64 carries the first answer's cost
            retried += 1
            body = request_body(originals[t["request_key"]], cfg)
            body["max_tokens"] = 64
            (second,) = by_key[request_key(body)]
            assert t["cost_usd"] == pytest.approx(first[0]["cost_usd"] + second["cost_usd"], abs=1e-12)
            assert t["completion_tokens"] == second["completion_tokens"] <= 64
        else:
            assert t["cost_usd"] == pytest.approx(first[0]["cost_usd"], abs=1e-12)
    assert retried > 0 and result.stats["length"] == retried
    assert sum(t["cost_usd"] for t in traces) == pytest.approx(billed_usd(srv), abs=1e-12)
    assert spent_in_ledger(run) == pytest.approx(billed_usd(srv), abs=1e-12)


async def test_without_retry_length_cut_answers_are_kept(srv: FakeServer, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = config(srv.base_url, run, max_tokens=32)
    result = await go(records(16), cfg, open_run(run, cfg, 16))
    assert result.stop_reason == "completed"
    assert [t for t in lines(run / "traces.jsonl") if t["finish_reason"] == "length"]
    assert len(srv.ledger()) == 16


async def test_length_retries_survive_a_kill(srv: FakeServer, tmp_path: Path) -> None:
    """Killed right after part 1 was collected (its length retries only in memory and on disk)."""
    run = tmp_path / "run"
    changes = {"max_tokens": 32, "retry_length": True}
    driver = [sys.executable, str(HELPERS / "batch.py"), str(run), srv.base_url, "16", "journaled", "1"]
    proc = await asyncio.to_thread(
        subprocess.run, [*driver, "1", "4", json.dumps(changes)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == CRASH_EXIT_CODE, proc.stderr
    assert (run / "batches" / "part-00001.length.jsonl").exists()  # answers of part 1 were cut
    cfg = config(srv.base_url, run, **changes)
    result = await go(records(16), cfg, open_run(run, cfg, 16))
    assert result.stop_reason == "completed"
    traces = lines(run / "traces.jsonl")
    assert len(traces) == 16 and not [t for t in traces if t["finish_reason"] == "length"]
    assert_never_paid_twice(srv)  # neither the planned request nor its length retry was paid twice
    assert sum(t["cost_usd"] for t in traces) == pytest.approx(billed_usd(srv), abs=1e-12)


# ---- the CLI flags -----------------------------------------------------------------------------------------
def test_cli_batch_flags(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tracegen.cli import app

    sample = str(REPO / "examples" / "flan_sample")
    args = ["run", "-s", sample, "--n", "8", "--rehearse", "--mode", "batch", "--poll-interval", "0.05"]
    result = CliRunner().invoke(
        app, [*args, "--max-batches-in-flight", "1", "--keep-batch-files", "-o", str(tmp_path / "r")]
    )
    assert result.exit_code == 0, result.output
    stats = json.loads((tmp_path / "r" / "stats.json").read_text())
    assert stats["batch"]["max_in_flight"] == 1 and stats["batch"]["files_deleted"] == 0
    assert stats["config"]["batch_keep_files"] is True
    bad = CliRunner().invoke(app, [*args, "--max-batches-in-flight", "0", "-o", str(tmp_path / "b")])
    assert bad.exit_code == 1 and "--max-batches-in-flight" in bad.output
