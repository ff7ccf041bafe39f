"""The folders are the pipeline's stages, and nothing lower imports anything higher.

Order: the base modules (config, errors, records, redact, ...) < planning < engine < batch < cleaning < publish
< report < the orchestration on top (pipeline, stages, api, cli). ``testing`` (fakes) may use the stages but
never the orchestration. Imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "tracegen"
STAGES = ["planning", "engine", "batch", "cleaning", "publish", "report"]
TOP = {"pipeline", "run_support", "stages", "api", "cli", "cli_support", "progress_view", "__init__"}


def layer(module: str) -> int:
    """Rank of ``tracegen.<module...>``: base 0, stages 1.., orchestration last; testing sits below the top."""
    head = module.split(".")[0]
    if head in STAGES:
        return 1 + STAGES.index(head)
    if head == "testing":
        return len(STAGES) + 1
    if head in TOP:
        return len(STAGES) + 2
    return 0


def imports_of(path: Path) -> list[tuple[int, str]]:
    rel = path.relative_to(SRC).with_suffix("")
    package = list(rel.parts[:-1])  # a module's package (for __init__: the package itself)
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = ".".join([*base, *([node.module] if node.module else [])])
            elif node.module and node.module.startswith("tracegen."):
                target = node.module[len("tracegen.") :]
            else:
                continue
            if not target:  # `from . import x` at the package root
                target = ".".join(alias.name for alias in node.names[:1])
            found.append((node.lineno, target))
        elif isinstance(node, ast.Import):
            found += [
                (node.lineno, a.name[len("tracegen.") :])
                for a in node.names
                if a.name.startswith("tracegen.")
            ]
    return found


MODULES = sorted(p for p in SRC.rglob("*.py"))

#: Known exceptions, each to be removed by the change that fixes it: config's validator still reaches into
#: the planning stage's per-model defaults (the price table decides a reasoning model's default cap).
KNOWN = {("config", "planning.params")}


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(SRC)) for p in MODULES])
def test_no_module_imports_a_later_stage(path: Path) -> None:
    rel = ".".join(path.relative_to(SRC).with_suffix("").parts)
    own = layer(rel)
    for lineno, target in imports_of(path):
        if target.split(".")[0] == rel.split(".")[0] or (rel, target) in KNOWN:
            continue  # within its own package (or itself)
        assert layer(target) <= own, (
            f"{path.relative_to(SRC)}:{lineno} imports tracegen.{target} (a later stage)"
        )


def test_the_stage_packages_exist_and_the_top_level_is_small() -> None:
    assert all((SRC / s / "__init__.py").is_file() for s in STAGES)
    loose = sorted(p.stem for p in SRC.glob("*.py") if p.stem not in TOP)
    assert len(loose) <= 16, loose  # base modules only: config, errors, records, redact, lock, ...
