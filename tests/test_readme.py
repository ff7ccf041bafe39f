"""Every fenced code block of the README runs, so the README cannot drift from the code.

The convention (also stated in an HTML comment at the top of README.md):

- ```` ```bash ```` and ```` ```python ```` blocks run, in order, in a temporary copy of the repository, offline
  (``HF_HUB_OFFLINE=1``), with no ``OPENAI_*``/``HF_*`` secrets, ``tracegen`` on ``PATH`` (a shim running this
  checkout's ``python -m tracegen.cli``); bash blocks with ``set -euo pipefail``. A block fails the test when it
  exits non-zero.
- ```` ```yaml ```` blocks (config examples) are parsed with ``yaml.safe_load``.
- A block whose info string carries ``skip-test`` (```` ```bash skip-test ````) needs an API key, the network
  or an install from a package registry: it is only parsed (``bash -n`` / ``compile``). A block that mentions
  a key (``sk-``, ``OPENAI_API_KEY=``, ``HF_TOKEN=``) or ``tracegen push`` must be marked so.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", re.M | re.S)
NEEDS_KEY = re.compile(r"sk-|OPENAI_API_KEY=|HF_TOKEN=|tracegen push")


@dataclass(frozen=True)
class Block:
    line: int
    lang: str
    skip: bool
    code: str


def readme_blocks(text: str) -> list[Block]:
    blocks = []
    for m in FENCE.finditer(text):
        words = m.group(1).split()
        lang = words[0] if words else ""
        blocks.append(Block(text.count("\n", 0, m.start()) + 1, lang, "skip-test" in words[1:], m.group(2)))
    return blocks


BLOCKS = readme_blocks((ROOT / "README.md").read_text(encoding="utf-8"))


def test_the_readme_has_blocks_that_run() -> None:
    langs = {b.lang for b in BLOCKS}
    assert {"bash", "python"} <= langs
    assert sum(1 for b in BLOCKS if not b.skip) >= 3
    assert all(b.lang in ("bash", "python", "yaml", "text", "") for b in BLOCKS), [b.lang for b in BLOCKS]


@pytest.mark.parametrize("block", BLOCKS, ids=[f"line{b.line}" for b in BLOCKS])
def test_every_block_parses_and_key_blocks_are_marked(block: Block, tmp_path: Path) -> None:
    if NEEDS_KEY.search(block.code):
        assert block.skip, (
            f"README.md:{block.line}: needs a key or the network: mark it ```{block.lang} skip-test"
        )
    if block.lang == "bash":
        script = tmp_path / "block.sh"
        script.write_text(block.code, encoding="utf-8")
        check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert check.returncode == 0, f"README.md:{block.line}: {check.stderr}"
    elif block.lang == "python":
        compile(block.code, f"README.md:{block.line}", "exec")
    elif block.lang == "yaml":  # a config example: it must at least be valid YAML
        yaml.safe_load(block.code)


def _copy_repo(dest: Path) -> Path:
    repo = dest / "repo"
    ignore = shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", "*.egg-info", ".mypy_cache", ".ruff_cache"
    )
    for name in ("README.md", "pyproject.toml", "src", "examples", "prompts"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, repo / name, ignore=ignore)
        elif src.exists():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, repo / name)
    bin_dir = dest / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "tracegen"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m tracegen.cli "$@"\n', encoding="utf-8")
    shim.chmod(0o755)
    return repo


@pytest.mark.slow
def test_readme_blocks_run_from_a_copy_of_the_repository(tmp_path: Path) -> None:
    repo = _copy_repo(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "TRACEGEN_"))}
    env.update(
        PATH=f"{tmp_path / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(repo / "src"),
        HF_HUB_OFFLINE="1",
        COLUMNS="80",
    )
    ran = 0
    for block in BLOCKS:
        if block.skip:
            continue
        if block.lang == "bash":
            cmd = ["bash", "-c", "set -euo pipefail\n" + block.code]
        elif block.lang == "python":
            cmd = [sys.executable, "-c", block.code]
        else:
            continue
        result = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
        where = f"README.md:{block.line} ({block.lang})"
        assert result.returncode == 0, (
            f"{where} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
        assert "Traceback" not in result.stderr, f"{where}:\n{result.stderr}"
        ran += 1
    assert ran >= 3
