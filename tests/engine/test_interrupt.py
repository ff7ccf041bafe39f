"""Ctrl-C on a real `tracegen run` process: graceful stop, consistent files, the rerun pays nothing twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tracegen.testing import FakeOptions, FakeServer

SAMPLE = str(Path(__file__).resolve().parents[2] / "examples" / "flan_sample")


@pytest.mark.slow
def test_sigint_stops_gracefully_and_rerun_completes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with FakeServer(FakeOptions(latency_mean_s=0.3, latency_jitter_s=0.1)) as srv:
        env = {
            **os.environ,
            "OPENAI_API_KEY": "sk-interrupt-test",
            "OPENAI_BASE_URL": srv.base_url,
            "PYTHONUNBUFFERED": "1",
        }
        cmd = [sys.executable, "-m", "tracegen.cli", "run", "-s", SAMPLE, "--n", "150", "--concurrency", "10"]
        cmd += ["-o", str(out), "--json"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        traces = out / "traces.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if traces.exists() and len(traces.read_bytes().splitlines()) >= 20:
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err.decode()  # interrupted (README: exit codes)
        stats = json.loads((out / "stats.json").read_text())
        assert stats["stop_reason"] == "interrupted"
        outcomes = stats["succeeded"] + stats["rejected"] + stats["failed"] + stats["unfinished"]
        assert stats["sent"] == outcomes  # the counts add up after a Ctrl-C
        done = len(traces.read_text().splitlines())
        assert 20 <= done < 150
        for line in traces.read_text().splitlines():
            json.loads(line)  # every line whole

        rerun = subprocess.run(cmd, env=env, capture_output=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr.decode()
        stats = json.loads((out / "stats.json").read_text())
        assert stats["stop_reason"] == "completed"
        keys = [json.loads(x)["key"] for x in traces.read_text().splitlines()]
        assert len(keys) == len(set(keys))
        billed = Counter(e["request_key"] for e in srv.ledger())
        # only requests in flight at the Ctrl-C may be billed twice; they were let finish, so none
        assert sum(c - 1 for c in billed.values()) == 0
