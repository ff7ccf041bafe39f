"""Shared Hub helpers: the fake token, local rows of an export, loading a pushed dataset back."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import huggingface_hub
import pyarrow.parquet as pq
import pytest

from tracegen.testing.fake_hub import FakeHub

TOKEN = "hf_fakeTOKENforTESTS0123456789"


@contextlib.contextmanager
def fake_hub(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, orgs: tuple[str, ...] = ()
) -> Iterator[FakeHub]:
    """A running fake Hub, HF_ENDPOINT pointing at it, online, no token saved anywhere."""
    with FakeHub(token=TOKEN, user="tester", orgs=orgs) as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.endpoint)
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "hf-token"))
        yield fake


def local_rows(export_dir: Path, config: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for f in sorted((export_dir / config / "data").glob("*.parquet")):
        rows += pq.read_table(f).to_pylist()
    return rows


def load_from_hub(endpoint: str, repo_id: str, configs: list[str], tmp: Path, token: str | None) -> Any:
    """datasets.load_dataset(repo_id, config) in a child process whose HF_ENDPOINT is the fake Hub."""
    code = (
        "import datasets, json, sys\n"
        "out = {c: datasets.load_dataset(sys.argv[1], c, split='train').to_list() for c in sys.argv[2:]}\n"
        "print(json.dumps(out))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env |= {
        "HF_ENDPOINT": endpoint,
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HOME": str(tmp / "home"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    }
    if token:
        env["HF_TOKEN"] = token
    proc = subprocess.run(
        [sys.executable, "-c", code, repo_id, *configs], env=env, capture_output=True, text=True, timeout=300
    )
    if proc.returncode != 0:
        return proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])
