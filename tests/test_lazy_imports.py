"""A run imports only what its path uses: no openai SDK without --transport sdk / the Batch API, no ``datasets``
(nor pandas) without a Hub source, a saved dataset or a push. Measured in a fresh interpreter with
``python -X importtime``, whose report names every module imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO

SAMPLE = REPO / "examples" / "flan_sample"
HEAVY = ("openai", "datasets", "pandas", "huggingface_hub", "httpx2")


def imported(code: str, cwd: Path) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    """Top-level packages a fresh ``python -X importtime -c code`` imported, and the finished process."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    names = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    return names, proc


def cli(args: list[str]) -> str:
    return f"import sys; from tracegen.cli import main; sys.argv = ['tracegen', *{args!r}]; main()"


def run_args(out: Path, *extra: str) -> list[str]:
    return ["run", "-s", str(SAMPLE), "-o", str(out), "--n", "40", "--model", "gpt-4o-mini",
            "--budget", "1", "--rehearse", *extra]  # fmt: skip


def test_import_tracegen_is_light(tmp_path: Path) -> None:
    names, proc = imported("import tracegen", tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "tracegen" in names
    assert not names & {*HEAVY, "aiohttp", "numpy", "pyarrow", "tiktoken", "typer", "rich"}


def test_default_run_imports_neither_the_sdk_nor_datasets(tmp_path: Path) -> None:
    out = tmp_path / "run"
    names, proc = imported(cli(run_args(out, "--format", "openorca", "--format", "sharegpt")), tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "dataset" / "openorca" / "train.jsonl").is_file()  # the whole job ran, export included
    assert {"aiohttp", "pyarrow", "tiktoken"} <= names
    assert not names & set(HEAVY), sorted(names & set(HEAVY))


def test_sdk_transport_imports_the_sdk(tmp_path: Path) -> None:
    names, proc = imported(cli(run_args(tmp_path / "run", "--transport", "sdk")), tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "openai" in names
    assert "datasets" not in names


@pytest.mark.parametrize("attr", ["SdkChatClient", "AiohttpChatClient", "HttpChatClient"])
def test_engine_exports_the_sdk_client_on_demand(attr: str) -> None:
    import tracegen.engine

    assert getattr(tracegen.engine, attr).__name__ == attr
    assert attr in tracegen.engine.__all__
    with pytest.raises(AttributeError):
        tracegen.engine.NoSuchThing  # noqa: B018


def test_pyarrow_waits_for_the_run_to_wait(tmp_path: Path) -> None:
    # the export's pyarrow is imported (and set up) while a run waits for answers, not before it sends
    names, proc = imported("import tracegen.cli, tracegen.pipeline", tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "pyarrow" not in names


def test_a_default_run_against_a_server_skips_what_it_does_not_use(tmp_path: Path) -> None:
    # the default transport is tracegen's own HTTP client: aiohttp loads only for --transport aiohttp, a
    # proxy, an Azure endpoint or the built-in fake server (--rehearse); a piped run draws no live view
    from tracegen.testing import FakeOptions, FakeServer

    with FakeServer(FakeOptions(), subprocess=True) as srv:
        out = tmp_path / "run"
        args = ["run", "-s", str(SAMPLE), "-o", str(out), "--n", "20", "--model", "gpt-4o-mini",
                "--budget", "1", "--base-url", srv.base_url, "--format", "openorca"]  # fmt: skip
        _, proc = imported(cli(args), tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    modules = {
        line.rsplit("|", 1)[1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert (out / "dataset" / "openorca" / "train.jsonl").is_file() and (out / "report.html").is_file()
    assert {"rich.console", "jsonlines"} <= modules  # the run directory's JSONL is read with jsonlines
    # sqlite3: only a plan of more than 50,000 candidates spills to its SQLite file
    unused = {"aiohttp", "rich.live", "rich.progress_bar", "sqlite3", *HEAVY}
    assert not modules & unused, sorted(modules & unused)
