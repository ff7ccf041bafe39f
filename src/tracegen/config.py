"""Typed run configuration, validated early, with one precedence rule.

    CLI flag  >  config file (YAML/JSON)  >  environment (TRACEGEN_*, OPENAI_BASE_URL)  >  default

Secrets (OPENAI_API_KEY, HF_TOKEN) are never part of the config: they are read from the environment at the
moment they are needed and never stored, logged or echoed. :meth:`RunConfig.public_dict` is what goes into
``stats.json``, the run manifest and the dataset card.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError

__all__ = ["ENV_PREFIX", "RunConfig", "load_config"]

ENV_PREFIX = "TRACEGEN_"

MixName = Literal["orca", "uniform"]
ExportFormat = Literal["openorca", "full", "alpaca", "sharegpt"]


def _default_formats() -> list[ExportFormat]:
    return ["openorca", "full"]


class RunConfig(BaseModel):
    """Everything that decides what a run asks, of whom, and within which limits. Units are in the names."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # ---- source and plan -------------------------------------------------------------------------------
    source: list[str] = Field(
        default_factory=list,
        description="Files, globs, directories, saved datasets or Hub ids; empty = the flan-v2 preset.",
    )
    n: int = Field(1_000_000, ge=1, description="Requests to plan (Orca's GPT-4 set: 1M).")
    seed: int = Field(0, description="Seed for sampling and system-message draws.")
    mix: MixName | dict[str, float] = Field(
        "orca", description="orca (Table 3 shares), uniform, or a share table {cot: .., niv: .., ...}."
    )
    niv_max_per_task: int = Field(300, ge=1, description="NIv2 cap per task (Orca: 300).")
    templates: str | None = Field(None, description="Template set file (YAML/JSON), Orca 2 style.")
    system_message_spelling: Literal["verbatim", "ascii"] = "verbatim"
    mc_detector: Literal["auto", "options", "template"] = Field(
        "auto", description="How Flan2021 multiple-choice rows are detected (see templates.py)."
    )
    skip_bad_records: bool = False
    plan_dedup_questions: bool = Field(
        False, description="Also drop repeated questions (case/space-folded) before sending, not only pairs."
    )
    on_too_long: Literal["reject", "fail"] = "reject"

    # ---- teacher -----------------------------------------------------------------------------------------
    model: str = "gpt-4o-mini"
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint; default OPENAI_BASE_URL.")
    temperature: float = Field(0.7, ge=0, le=2, description="Orca (GPT-4): 0.7.")
    top_p: float = Field(0.95, gt=0, le=1, description="Orca (GPT-4): 0.95.")
    max_tokens: int = Field(1024, ge=1, description="Completion cap per answer, tokens.")
    input_price: float | None = Field(None, ge=0, description="USD per 1M input tokens (overrides table).")
    output_price: float | None = Field(None, ge=0, description="USD per 1M output tokens (overrides table).")
    expected_output_tokens: int = Field(
        350, ge=1, description="Assumed mean answer length for the expected-cost estimate, tokens."
    )
    mode: Literal["online", "batch"] = "online"
    batch_poll_interval_s: float = Field(30.0, gt=0, description="Batch mode: seconds between status polls.")
    transport: Literal["aiohttp", "sdk"] = Field(
        "aiohttp", description="aiohttp: lean OpenAI-protocol client (fast); sdk: AsyncOpenAI."
    )

    # ---- limits --------------------------------------------------------------------------------------------
    budget_usd: float | None = Field(None, gt=0, description="Hard cap on dollars billed for this run dir.")
    max_requests: int | None = Field(None, ge=1)
    max_total_tokens: int | None = Field(None, ge=1, description="Cap on prompt+completion tokens billed.")
    requests_per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: float | None = Field(None, gt=0)
    concurrency: int = Field(256, ge=1, description="Requests in flight at most.")
    timeout_s: float = Field(600.0, gt=0, description="Per-request timeout, seconds.")
    max_attempts: int = Field(8, ge=1, description="Attempts per request before it goes to failed.jsonl.")
    retry_length: bool = Field(False, description="Retry finish_reason=length answers with 2x max_tokens.")

    shard: str | None = Field(
        None, description="K/N: this run takes the K-th of N deterministic shards (1-based)."
    )

    # ---- output ----------------------------------------------------------------------------------------------
    output_dir: Path = Path("tracegen-run")
    export_formats: list[ExportFormat] = Field(
        default_factory=_default_formats,
    )
    push_to_hub: str | None = Field(None, description="Hub dataset repo to push to when the run is done.")
    private: bool = Field(True, description="Create the Hub repo private.")
    filters: dict[str, Any] = Field(default_factory=dict, description="Quality filter settings (filters.py).")
    dedup: dict[str, Any] = Field(default_factory=dict, description="Dedup settings (dedup.py).")

    @field_validator("shard")
    @classmethod
    def _check_shard(cls, v: str | None) -> str | None:
        if v is None:
            return v
        k, sep, total = v.partition("/")
        if not (sep and k.isdigit() and total.isdigit() and 1 <= int(k) <= int(total)):
            raise ValueError(f"{v!r} is not K/N with 1 <= K <= N, e.g. --shard 1/4")
        return v

    def shard_index(self) -> tuple[int, int] | None:
        """(k, n) with k 0-based, or None when unsharded."""
        if self.shard is None:
            return None
        k, _, total = self.shard.partition("/")
        return int(k) - 1, int(total)

    @field_validator("mix")
    @classmethod
    def _check_mix(cls, v: MixName | dict[str, float]) -> MixName | dict[str, float]:
        if isinstance(v, dict):
            unknown = set(v) - {"cot", "niv", "flan", "t0"}
            if unknown:
                raise ValueError(f"unknown submix {sorted(unknown)}; use cot, niv, flan, t0")
            if any(s < 0 for s in v.values()) or sum(v.values()) <= 0:
                raise ValueError("shares must be >= 0 and add up to more than 0")
        return v

    def public_dict(self) -> dict[str, Any]:
        """The configuration as JSON-able data; never holds a secret (none is ever stored here)."""
        data = self.model_dump(mode="json")
        if self.base_url:
            data["base_url"] = _redact_url(self.base_url)
        return data


def _redact_url(url: str) -> str:
    """Drop user:password@ and query strings (some gateways put keys there)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file ({e.strerror})") from e
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of field: value")
    return data


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    fields = RunConfig.model_fields
    for name in fields:
        key = ENV_PREFIX + name.upper()
        if key in env:
            raw = env[key]
            data[name] = raw.split(",") if name == "source" else raw
    if "base_url" not in data and env.get("OPENAI_BASE_URL"):
        data["base_url"] = env["OPENAI_BASE_URL"]
    return data


def load_config(
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    flag_names: Mapping[str, str] | None = None,
) -> RunConfig:
    """Build a RunConfig: ``overrides`` (CLI flags, None = not given) > file > environment > defaults.

    ``flag_names`` maps a field to the CLI flag that set it (``budget_usd`` -> ``--budget``) so an error
    names what the user typed.
    """
    env = os.environ if env is None else env
    merged: dict[str, Any] = _from_env(env)
    origin = {k: f"environment variable {ENV_PREFIX}{k.upper()}" for k in merged}
    if "base_url" in merged and f"{ENV_PREFIX}BASE_URL" not in env:
        origin["base_url"] = "environment variable OPENAI_BASE_URL"
    if config_file is not None:
        file_data = _read_file(Path(config_file))
        merged.update(file_data)
        origin.update({k: f"config file {config_file}" for k in file_data})
    for k, v in (overrides or {}).items():
        if v is not None:
            merged[k] = v
            flag = (flag_names or {}).get(k, "--" + k.replace("_", "-"))
            origin[k] = f"flag {flag}"
    try:
        return RunConfig.model_validate(merged)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "config"
        top = str(err["loc"][0]) if err["loc"] else ""
        where = origin.get(top, "config")
        if err["type"] == "extra_forbidden":
            raise ConfigError(
                f"{where}: unknown key {field!r}; known keys: {', '.join(RunConfig.model_fields)}"
            ) from None
        what = where if where.startswith("flag") and field == top else f"{where}: {field}"
        raise ConfigError(f"{what}: {err['msg']}") from None
