"""Typed run configuration, validated early, with one precedence rule.

    CLI flag  >  config file (YAML/JSON)  >  environment (TRACEGEN_*, OPENAI_BASE_URL)  >  default

Secrets (OPENAI_API_KEY, HF_TOKEN) are never part of the config: they are read from the environment at the
moment they are needed and never stored, logged or echoed. :meth:`RunConfig.public_dict` is what goes into
``stats.json``, the run manifest and the dataset card.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_serializer,
    field_validator,
    model_validator,
)

from .clean_config import DedupConfig, FilterConfig
from .errors import RunDirError
from .redact import redact_url
from .rundir import read_manifest
from .shards import AUTO, shard_from_scheduler

__all__ = ["ENV_PREFIX", "EndpointConfig", "RunConfig", "StageConfig", "config_of_run", "load_config"]

ENV_PREFIX = "TRACEGEN_"

MixName = Literal["orca", "uniform"]
ExportFormat = Literal["openorca", "full", "alpaca", "sharegpt", "messages"]


def _default_formats() -> list[ExportFormat]:
    return ["openorca", "full"]


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def url_credentials_problem(url: str) -> str | None:
    """Why ``url`` cannot be a base URL when it carries ``user:password@`` (the message names no secret)."""
    if "@" not in urlsplit(url).netloc:
        return None
    return (
        f"{redact_url(url)} carries credentials (user:password@ before the host), which tracegen does not "
        "send: remove them from the URL; the key goes in OPENAI_API_KEY (sent as a Bearer token), or in "
        "the variable a pool endpoint's api_key_env names"
    )


def _check_base_url(v: str | None) -> str | None:
    problem = url_credentials_problem(v) if v is not None else None
    if problem is not None:
        raise ValueError(problem)
    return v


class StageConfig(BaseModel):
    """One teacher of a progressive plan (Orca §4: ChatGPT over FLAN-5M, then GPT-4 over a 1M subset).

    A stage answers the whole plan, or a seeded random subset of the same (system message, question) pairs
    (``count`` or ``fraction``), kept in plan order. Unset generation parameters and limits are the run's;
    prices are the stage model's (table or ``input_price``/``output_price`` here), never the run model's.
    """

    # inputs may hold secrets; built when first used on its own (a run validates it inside RunConfig only)
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True, defer_build=True)

    name: str = Field(description="Stage name: run_dir/stages/<name>/, export configs <format>-<name>.")
    model: str = Field(description="Teacher model of this stage.")
    count: int | None = Field(None, ge=1, description="Answer this many plan records (seeded subset).")
    fraction: float | None = Field(None, gt=0, le=1, description="Answer this share of the plan.")
    seed: int | None = Field(None, description="Subset seed; default the run's seed.")
    base_url: str | None = Field(None, description="Endpoint of this stage; default the run's.")
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    input_price: float | None = Field(None, ge=0, description="USD per 1M input tokens (this model).")
    output_price: float | None = Field(None, ge=0, description="USD per 1M output tokens (this model).")
    expected_output_tokens: int | None = Field(None, ge=1)
    requests_per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: float | None = Field(None, gt=0)
    concurrency: int | None = Field(None, ge=1)
    budget_usd: float | None = Field(
        None, gt=0, description="This stage's budget share; the run's budget_usd (if any) caps the total."
    )

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, v: str | None) -> str | None:
        return _check_base_url(v)

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"{v!r} is not a stage name: letters, digits, '.', '_', '-' (e.g. gpt4)")
        return v

    @model_validator(mode="after")
    def _one_subset(self) -> StageConfig:
        if self.count is not None and self.fraction is not None:
            raise ValueError(f"stage {self.name!r}: give count or fraction, not both")
        return self


class EndpointConfig(BaseModel):
    """One OpenAI-compatible (or Azure OpenAI) endpoint of a pool. The key is read from ``api_key_env``."""

    # inputs may hold secrets; built when first used on its own (a run validates it inside RunConfig only)
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True, defer_build=True)

    name: str | None = Field(None, description="Label in logs and stats; default host:port.")
    base_url: str = Field(description="e.g. https://api.openai.com/v1, or https://NAME.openai.azure.com")
    api_key_env: str | None = Field(
        "OPENAI_API_KEY", description="NAME of the environment variable holding the key (null: no key)."
    )
    model: str | None = Field(
        None,
        description="Model this endpoint (or Azure deployment) serves: stages pick endpoints by it and the "
        "price is this model's, never the deployment name's; null = any.",
    )
    azure_deployment: str | None = Field(
        None, description="Azure OpenAI deployment name: URL .../openai/deployments/<name>/chat/completions."
    )
    api_version: str = Field("2024-10-21", description="Azure OpenAI api-version (with azure_deployment).")
    requests_per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: float | None = Field(None, gt=0)
    concurrency: int | None = Field(None, ge=1, description="In flight at most here; default the run's.")

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        return _check_base_url(v) or v

    @field_validator("api_key_env")
    @classmethod
    def _check_env_name(cls, v: str | None) -> str | None:
        if v is not None and not _ENV_NAME.match(v):
            raise ValueError(
                "must be the NAME of an environment variable (e.g. AZURE_EAST_KEY), never the key itself"
            )
        return v

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str | None) -> str | None:
        if v is not None and not _NAME.match(v):
            raise ValueError(f"{v!r} is not an endpoint name: letters, digits, '.', '_', '-'")
        return v

    def label(self) -> str:
        """The endpoint's name, else host:port of its URL (never a key)."""
        if self.name:
            return self.name
        parts = urlsplit(self.base_url)
        return f"{parts.hostname or 'endpoint'}{f':{parts.port}' if parts.port else ''}"

    def serves(self, model: str) -> bool:
        """Whether requests for ``model`` may go here."""
        return self.model is None or self.model == model


class RunConfig(BaseModel):
    """Everything that decides what a run asks, of whom, and within which limits. Units are in the names."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, hide_input_in_errors=True)

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
        False,
        description="Drop repeated questions before sending, not only repeated (system message, question) "
        "pairs; clean's exact_question dedup follows it unless dedup: sets it.",
    )
    on_too_long: Literal["reject", "fail"] = "reject"
    decontaminate: list[str] = Field(
        default_factory=list,
        description="Evaluation sets (file or Hub id, optionally :col1,col2) whose items no planned question "
        "may overlap; overlapping source rows are dropped before anything is sent.",
    )
    decontaminate_ngram: int = Field(
        13, ge=1, description="Word n-gram size for decontamination; shorter items must match exactly."
    )
    decontaminate_min_matches: int = Field(
        1, ge=1, description="Shared n-grams with one evaluation item that make a question contaminated."
    )
    fill_shortfall: bool = Field(
        False,
        description="Give a short submix's missing rows to the other submixes, in proportion to the mix.",
    )

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
    batch_finish_online: bool = Field(
        False, description="Batch mode: answer online what ran out of batch attempts (expired, 429/5xx)."
    )
    batch_max_in_flight: int | None = Field(
        None, ge=1, description="Batch mode: batches in flight at most (none = no cap)."
    )
    batch_keep_files: bool = Field(
        False, description="Batch mode: keep input/output/error files on the provider after collection."
    )
    transport: Literal["http", "aiohttp", "sdk"] = Field(
        "http",
        description="http: tracegen's own HTTP/1.1 client (fastest; aiohttp when a proxy is set); "
        "aiohttp: lean aiohttp client; sdk: AsyncOpenAI.",
    )
    price_file: str | None = Field(
        None, description="YAML price file adding to / replacing tracegen's model table (`tracegen models`)."
    )
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = Field(
        None, description="Reasoning models: sent as reasoning_effort (default: the model's own)."
    )
    expected_reasoning_tokens: int | None = Field(
        None,
        ge=0,
        description="Reasoning models: hidden reasoning tokens assumed per answer in the dry run (default 1024).",
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
    max_response_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024,
        description="Largest response body read from the teacher, bytes (default 16 MiB); a larger one "
        "is a protocol error.",
    )
    max_failure_rate: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Exit code 4 when more than this share of the records finished this run failed.",
    )

    shard: str | None = Field(
        None,
        description="K/N: this run takes the K-th of N deterministic shards (1-based); auto: from the "
        "scheduler's array index (SLURM_ARRAY_TASK_ID, JOB_COMPLETION_INDEX).",
    )
    shard_count: int | None = Field(
        None, ge=1, description="N for --shard auto when the scheduler does not give it (Kubernetes)."
    )

    # ---- progressive teachers and endpoint pools (see stages.py, engine/pool.py) ---------------------------
    stages: list[StageConfig] = Field(
        default_factory=list,
        description="Progressive teachers in order; each answers the plan or a seeded subset of it.",
    )
    endpoints: list[EndpointConfig] = Field(
        default_factory=list,
        description="Several endpoints served as one pool (each with its own limits); empty = base_url.",
    )

    # ---- output ----------------------------------------------------------------------------------------------
    output_dir: Path = Path("tracegen-run")
    export_formats: list[ExportFormat] = Field(
        default_factory=_default_formats,
    )
    push_to_hub: str | None = Field(None, description="Hub dataset repo to push to when the run is done.")
    private: bool = Field(True, description="Create the Hub repo private.")
    filters: FilterConfig = Field(
        default_factory=FilterConfig, description="Quality filter settings (clean_config.FilterConfig)."
    )
    dedup: DedupConfig = Field(
        default_factory=DedupConfig, description="Dedup settings (clean_config.DedupConfig)."
    )

    @field_validator("filters", "dedup", mode="wrap")
    @classmethod
    def _check_cleaning(cls, v: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
        """Validated when the config loads, so a typo fails before anything is paid for, not after generation."""
        model: type[BaseModel] = FilterConfig if info.field_name == "filters" else DedupConfig
        try:
            return handler(v)
        except ValidationError as e:
            err = e.errors()[0]
            key = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                raise ValueError(
                    f"unknown key {key!r}; known keys: {', '.join(model.model_fields)}"
                ) from None
            raise ValueError(f"{key}: {err['msg']}") from None

    @field_serializer("filters", "dedup")
    def _given_keys(self, v: BaseModel, info: SerializationInfo) -> dict[str, Any]:
        """Only the keys the config set (as before they were typed): a manifest read back keeps "not set",
        which matters for ``dedup.exact_question`` (it follows ``plan_dedup_questions`` unless set)."""
        return v.model_dump(mode=info.mode, exclude_unset=True)

    def dedup_config(self) -> DedupConfig:
        """The clean step's dedup: ``exact_question`` follows ``plan_dedup_questions`` unless ``dedup:`` sets it.

        The plan already dropped what its dedup key repeats, so the default clean step drops no answer that
        was paid for as a duplicate of another planned request (pair plans keep one question under several
        system messages; dropping all but one of them after paying would waste the rest).
        """
        if "exact_question" in self.dedup.model_fields_set:
            return self.dedup
        return self.dedup.model_copy(update={"exact_question": self.plan_dedup_questions})

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, v: str | None) -> str | None:
        return _check_base_url(v)

    @field_validator("shard")
    @classmethod
    def _check_shard(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if v == AUTO:
            return v
        k, sep, total = v.partition("/")
        if not (sep and k.isdigit() and total.isdigit() and 1 <= int(k) <= int(total)):
            raise ValueError(f"{v!r} is not K/N with 1 <= K <= N, e.g. --shard 1/4")
        return v

    @model_validator(mode="after")
    def _resolve_shard(self) -> RunConfig:
        if self.shard == AUTO:  # the Python API; load_config resolves it from its own env first
            self.shard = shard_from_scheduler(os.environ, self.shard_count)
        return self

    @model_validator(mode="after")
    def _check_stages_and_endpoints(self) -> RunConfig:
        names = [s.name for s in self.stages]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"stage names must be unique; repeated: {', '.join(dup)}")
        if self.endpoints:
            labels = [e.label() for e in self.endpoints]
            dup = sorted({n for n in labels if labels.count(n) > 1})
            if dup:
                raise ValueError(
                    f"endpoint names must be unique (give each a name:); repeated: {', '.join(dup)}"
                )
            if self.base_url is not None or any(s.base_url for s in self.stages):
                raise ValueError("give either base_url or endpoints, not both")
            limited = [s.name for s in self.stages if s.requests_per_minute or s.tokens_per_minute]
            if self.requests_per_minute or self.tokens_per_minute or limited:
                raise ValueError(
                    "with endpoints, rate limits are per endpoint: move requests_per_minute / "
                    "tokens_per_minute onto the endpoints"
                )
            if self.mode == "batch":
                raise ValueError("endpoints are for online mode; the Batch API runs on one account")
            if self.transport == "sdk" and any(e.azure_deployment for e in self.endpoints):
                raise ValueError("Azure endpoints need transport: http or aiohttp")
            for model in [self.model] if not self.stages else [s.model for s in self.stages]:
                if not any(e.serves(model) for e in self.endpoints):
                    raise ValueError(f"no endpoint serves model {model!r}: add one with model: {model}")
        return self

    @model_validator(mode="after")
    def _model_defaults(self) -> RunConfig:
        """Reasoning models: their completion cap default, and no temperature/top_p (see params.py)."""
        from .planning.params import apply_model_defaults

        apply_model_defaults(self)
        return self

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
            data["base_url"] = redact_url(self.base_url)
        for i, e in enumerate(self.endpoints):
            data["endpoints"][i]["base_url"] = redact_url(e.base_url)
        for i, st in enumerate(self.stages):
            if st.base_url:
                data["stages"][i]["base_url"] = redact_url(st.base_url)
        return data


def config_of_run(run_dir: Path) -> RunConfig:
    """The RunConfig a run directory was made with (its manifest's ``config``); the defaults, pointed at
    ``run_dir``, when the manifest is missing or unreadable."""
    try:
        manifest = read_manifest(run_dir) or {}
        return RunConfig.model_validate(manifest.get("config") or {})
    except (OSError, ValueError, RunDirError):
        return RunConfig(output_dir=run_dir)


# load_config reads files, flags and the environment into a RunConfig: its own module, re-exported here
from .config_files import load_config  # noqa: E402
