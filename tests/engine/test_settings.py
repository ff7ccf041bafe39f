"""What flows down into the engine and the batch runner: EngineSettings (teacher, limits, public config),
converted once from the RunConfig at the public entry points (tracegen.engine.settings)."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from tracegen.config import RunConfig
from tracegen.engine.core import Request
from tracegen.engine.settings import EngineSettings, Limits, Teacher
from tracegen.planning.params import chat_body
from tracegen.planning.prices import Pricing
from tracegen.records import Record

SRC = Path(__file__).resolve().parents[2] / "src" / "tracegen"

#: The functions below which no RunConfig flows: each takes one (the public API, or what pipeline.py and
#: stages.py call with their config) and converts it with EngineSettings.of, or reads only what it needs.
BOUNDARIES = {
    "engine/settings.py": {"EngineSettings.of"},
    "engine/runner.py": {"generate"},
    "engine/client.py": {"make_client"},
    "engine/leftover.py": {"plan_to_finish"},
    "engine/preflight.py": {"_endpoints", "check_keys", "check_endpoint"},
    "batch/entry.py": {"run_batches", "_rows", "astatus", "acancel"},
}


def run_config_uses(path: Path) -> list[tuple[int, str]]:
    """Where ``path`` names RunConfig (imports, annotations, calls), with the enclosing function."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = where
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = f"{where}.{child.name}" if where else child.name
            named = getattr(child, "id", None) or getattr(child, "attr", None)  # a Name or an Attribute
            if isinstance(child, (ast.Name, ast.Attribute)) and named == "RunConfig":
                found.append((child.lineno, where))
            elif isinstance(child, ast.Constant) and isinstance(child.value, str):
                if "RunConfig" in child.value and not isinstance(node, ast.Expr):  # a string annotation
                    found.append((child.lineno, where))
            elif isinstance(child, ast.ImportFrom) and any(a.name == "RunConfig" for a in child.names):
                found.append((child.lineno, "<import>"))
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8")), "")
    return found


def below_the_boundary(root: Path) -> list[str]:
    """Every use of RunConfig in ``root``'s engine and batch packages outside the boundary functions."""
    bad = []
    for package in ("engine", "batch"):
        for path in sorted((root / package).glob("*.py")):
            rel = f"{package}/{path.name}"
            allowed = BOUNDARIES.get(rel, set())
            for lineno, where in run_config_uses(path):
                if where == "<import>" and allowed:
                    continue  # a module with a boundary imports what its boundary takes
                if where not in allowed:
                    bad.append(f"{rel}:{lineno} ({where or 'module level'})")
    return bad


def test_the_engine_and_batch_layers_take_no_run_config_below_the_boundary() -> None:
    assert below_the_boundary(SRC) == []
    for rel, names in BOUNDARIES.items():  # every named boundary exists (the list cannot go stale)
        uses = {where for _, where in run_config_uses(SRC / rel)}
        assert names <= uses, (rel, names - uses)


def test_the_boundary_check_finds_a_run_config_below_it(tmp_path: Path) -> None:
    (tmp_path / "engine").mkdir()
    (tmp_path / "batch").mkdir()
    (tmp_path / "engine" / "core.py").write_text(
        "from ..config import RunConfig\n\nclass Pricer:\n    def __init__(self, teacher: RunConfig) -> None:\n"
        "        pass\n"
    )
    (tmp_path / "batch" / "parts.py").write_text('def read_part(config: "RunConfig") -> None:\n    pass\n')
    assert below_the_boundary(tmp_path) == [
        "engine/core.py:1 (<import>)",
        "engine/core.py:4 (Pricer.__init__)",
        "batch/parts.py:1 (read_part)",
    ]


def unusual_config(tmp_path: Path, *, pool: bool = False) -> RunConfig:
    """A RunConfig whose teacher and limits fields differ from the default (``pool``: endpoints, else
    base_url: a config has one or the other)."""
    prices = tmp_path / "prices.yaml"
    prices.write_text(
        "models:\n  other-model: {encoding: cl100k_base, context_window: 8192, input: 0.2, output: 0.4}\n"
    )
    fields: dict[str, object] = {
        "model": "my-local-model",
        "max_tokens": 777,
        "temperature": 0.3,
        "top_p": 0.5,
        "reasoning_effort": "low",
        "price_file": str(prices),
        "input_price": 1.5,
        "output_price": 2.5,
        "transport": "sdk",
        "timeout_s": 12.5,
        "max_response_bytes": 123_456,
        "budget_usd": 4.25,
        "max_requests": 99,
        "max_total_tokens": 55_555,
        "concurrency": 7,
        "max_attempts": 3,
        "retry_length": True,
        "batch_poll_interval_s": 2.5,
        "batch_finish_online": True,
        "batch_max_in_flight": 4,
        "batch_keep_files": True,
    }
    if pool:  # with endpoints, rate limits are per endpoint
        fields["endpoints"] = [{"base_url": "http://127.0.0.1:8/v1", "api_key_env": None, "concurrency": 3}]
    else:
        fields.update(base_url="http://127.0.0.1:9/v1", requests_per_minute=120.0, tokens_per_minute=90_000.0)
    return RunConfig.model_validate(fields)


def test_engine_settings_carry_every_teacher_and_limits_field(tmp_path: Path) -> None:
    default = RunConfig()
    names = [f.name for f in dataclasses.fields(Teacher)] + [f.name for f in dataclasses.fields(Limits)]
    assert len(set(names)) == len(names) and set(names) <= set(RunConfig.model_fields)
    unusual: set[str] = set()
    for config in (unusual_config(tmp_path), unusual_config(tmp_path, pool=True)):
        settings = EngineSettings.of(config)
        for part in (settings.teacher, settings.limits):
            for f in dataclasses.fields(part):
                value = getattr(part, f.name)
                want = getattr(config, f.name)
                assert (list(value) if f.name == "endpoints" else value) == want, f.name
                if want != getattr(default, f.name):
                    unusual.add(f.name)
        assert settings.public == config.public_dict()
    assert unusual == set(names), f"give the test a non-default value of {set(names) - unusual}"
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.teacher.model = "other"  # type: ignore[misc]


def test_public_dict_is_a_copy_as_run_config_gives_one(tmp_path: Path) -> None:
    config = unusual_config(tmp_path, pool=True)
    settings = EngineSettings.of(config)
    first = settings.public_dict()
    first["endpoints"][0]["base_url"] = "changed"
    first["model"] = "changed"
    assert settings.public_dict() == config.public_dict()


@pytest.mark.parametrize(
    "fields",
    [
        {"model": "gpt-4o-mini", "max_tokens": 300, "temperature": 0.2, "top_p": 0.9},
        {"model": "o3", "max_tokens": 2000, "reasoning_effort": "high"},
        {"model": "gpt-5-mini"},
    ],
)
def test_the_teacher_builds_the_body_and_key_the_plan_builds_from_the_config(
    fields: dict[str, object],
) -> None:
    config = RunConfig.model_validate(fields)
    teacher = EngineSettings.of(config).teacher
    messages = [{"role": "user", "content": "q"}]
    assert chat_body(messages, teacher) == chat_body(messages, config)
    rec = Record(id="a.1", submix="cot", question="q", system_prompt="", target="", prompt_tokens=5)
    online = Request(rec, teacher, Pricing(1.0, 1.0), "o200k_base")
    assert online.body == chat_body(rec.messages(), config)
