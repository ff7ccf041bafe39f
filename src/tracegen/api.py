"""One-call conveniences over the configurable objects (as httpx's ``request()`` over ``Client``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import pipeline
from .config import RunConfig, load_config
from .engine import Progress

__all__ = ["dry_run", "run"]


def _config(config: RunConfig | str | Path | None, fields: dict[str, Any]) -> RunConfig:
    if isinstance(config, RunConfig):
        return config.model_copy(update=fields) if fields else config
    return load_config(config, fields)


def run(
    config: RunConfig | str | Path | None = None,
    *,
    rehearse: bool = False,
    extend: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Run the whole job and return its summary: ``tracegen.run(source=[...], budget_usd=5, model="gpt-4o")``.

    ``config`` is a RunConfig, a config file path, or None; ``fields`` override it (RunConfig field names).
    ``rehearse=True`` answers with the built-in fake server (no key, no network, no cost).
    """
    return pipeline.run(_config(config, fields), extend=extend, rehearse=rehearse, on_progress=on_progress)


def dry_run(config: RunConfig | str | Path | None = None, **fields: Any) -> dict[str, Any]:
    """Plan and estimate the cost, sending nothing; writes plan.jsonl and requests.jsonl to the run dir."""
    return pipeline.estimate_run(_config(config, fields))
