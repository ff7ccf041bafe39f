"""FakeOptions: every knob of the fake OpenAI server, validated, with help text for the CLI.

Each field carries ``metadata={"help": ...}`` so the argparse front end (``python -m
tracegen.testing.fake_openai``) and the ``tracegen fake-server`` command build their flags from this one list.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ConfigError

__all__ = ["API_KEY_ENV", "FakeOptions"]

#: Environment variable the fake server's command line reads its API key from (keeps it off ``ps``).
API_KEY_ENV = "TRACEGEN_FAKE_API_KEY"


def _opt(default: Any, help_text: str, **kwargs: Any) -> Any:
    return field(default=default, metadata={"help": help_text}, **kwargs)


@dataclass(frozen=True)
class FakeOptions:
    """Behaviour of the fake server. Rates are probabilities in [0, 1]; times are seconds."""

    # --- latency --------------------------------------------------------------------------------------
    latency_mean_s: float = _opt(0.0, "mean answer latency in seconds")
    latency_jitter_s: float = _opt(
        0.0, "latency spread in seconds: half-width (uniform) or standard deviation (normal)"
    )
    latency_distribution: Literal["uniform", "normal"] = _opt(
        "uniform", "uniform: mean +/- jitter uniformly; normal: gauss(mean, jitter); both clipped at 0"
    )
    latency_under_load_s: float = _opt(
        0.0, "extra latency in seconds per other request already in flight when a request arrives"
    )
    max_in_flight: int | None = _opt(
        None, "answer 503 (overloaded) while this many valid requests are being served"
    )
    # --- rate limits ----------------------------------------------------------------------------------
    requests_per_minute: int | None = _opt(None, "RPM limit enforced with 429s (none = unlimited)")
    tokens_per_minute: int | None = _opt(
        None, "TPM limit (prompt tokens + max_tokens per request) enforced with 429s (none = unlimited)"
    )
    ratelimit_mode: Literal["rolling", "per_second"] = _opt(
        "rolling",
        "rolling: at most the limit within any 60 s window; per_second: bucket of limit/60 refilled "
        "continuously at limit/60 per second",
    )
    # --- faults ---------------------------------------------------------------------------------------
    error_rate_500: float = _opt(0.0, "share of admitted requests answered 500 (server_error)")
    error_rate_503: float = _opt(0.0, "share of admitted requests answered 503 (overloaded)")
    timeout_rate: float = _opt(0.0, "share of admitted requests billed, then held hang_s before answering")
    drop_rate: float = _opt(0.0, "share of admitted requests billed, then cut off mid-answer")
    hang_s: float = _opt(900.0, "how long a 'timeout' request is held before it is answered, seconds")
    # --- account --------------------------------------------------------------------------------------
    api_key: str | None = _opt(
        None, f"require 'Authorization: Bearer KEY' (the CLI reads it from ${API_KEY_ENV})", repr=False
    )
    insufficient_quota: bool = _opt(False, "answer every request 429 insufficient_quota (empty account)")
    known_models: tuple[str, ...] | None = _opt(
        None, "comma-separated model names; others get 404 model_not_found (none = accept any)"
    )
    # --- answers --------------------------------------------------------------------------------------
    mean_completion_tokens: int = _opt(120, "mean answer length in tokens")
    completion_tokens_spread: float = _opt(
        0.5, "answer length is uniform in mean*(1 +/- spread), at least 1 token, cut at max_tokens"
    )
    default_max_tokens: int = _opt(
        4096, "max_tokens assumed when a request sets none (length cap and rate-limit count)"
    )
    seed: int = _opt(0, "seed of the answers and of the fault / latency draws")
    mean_reasoning_tokens: int = _opt(
        300,
        "reasoning models: mean hidden reasoning tokens per answer at reasoning_effort medium (x0.1 minimal, "
        "x0.5 low, x2 high), billed as output and counted against the completion cap",
    )
    model_routes: tuple[str, ...] | None = _opt(
        None,
        "comma-separated ALIAS=SNAPSHOT: requests for ALIAS are answered by SNAPSHOT (its id in the model "
        "field, its list price in the ledger), as a provider routing an alias does",
    )
    prompt_cache: bool = _opt(
        False,
        "report prompt_tokens_details.cached_tokens: a first message of >= 1024 tokens seen before is cached "
        "(in 128-token steps) and billed at the model's cached-input price",
    )
    # --- Batch API ------------------------------------------------------------------------------------
    batch_delay_s: float = _opt(0.5, "processing time of one batch, seconds (validating to completed)")
    batch_fail_rate: float = _opt(0.0, "share of batch lines answered with a 500 error line")
    batch_expire: bool = _opt(False, "batches expire after batch_expire_fraction of their lines")
    batch_expire_fraction: float = _opt(0.5, "share of lines processed before a batch expires")
    # --- hostile endpoint (see testing/hostile.py) -----------------------------------------------------
    hostile: str | None = _opt(
        None,
        "answer valid chat requests like a broken or hostile endpoint: negative_usage, huge_usage, "
        "float_usage, string_usage, over_cap_usage, under_usage, html, no_choices, wrong_shape, huge_body, "
        "echo_key_code, echo_key_200, echo_key_text, retry_after_huge, retry_after_inf, ratelimit_negative, "
        "markup, markup_error (none = honest)",
    )
    hostile_count: int | None = _opt(None, "how many requests get the hostile answer (none = every one)")
    hostile_body_bytes: int = _opt(32 * 1024 * 1024, "size of the huge_body answer, bytes")
    # --- gateway --------------------------------------------------------------------------------------
    gateway: bool = _opt(
        False,
        "answer as a LiteLLM proxy in front of this server would: errors rewritten (insufficient_quota as "
        "code '429' type throttling_error, a wrong key as 400 no_db_connection), retry-after only as "
        "llm_provider-retry-after, no x-ratelimit-* headers",
    )

    def __post_init__(self) -> None:
        for name in _INT_FIELDS:  # 600.0 from a float-typed flag is 600; 0.5 requests is an error
            value = getattr(self, name)
            if isinstance(value, float):
                if not value.is_integer():
                    raise ConfigError(f"fake server: {name} must be a whole number, got {value!r}")
                object.__setattr__(self, name, int(value))
        for name in ("error_rate_500", "error_rate_503", "timeout_rate", "drop_rate", "batch_fail_rate"):
            _check_rate(name, getattr(self, name))
        _check_rate("batch_expire_fraction", self.batch_expire_fraction)
        fault_sum = self.error_rate_500 + self.error_rate_503 + self.timeout_rate + self.drop_rate
        if fault_sum > 1.0 + 1e-9:
            raise ConfigError(
                f"fake server: error_rate_500 + error_rate_503 + timeout_rate + drop_rate is {fault_sum:g}; "
                "their sum must be at most 1"
            )
        for name in ("latency_mean_s", "latency_jitter_s", "latency_under_load_s", "hang_s", "batch_delay_s"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"fake server: {name} must be a finite number >= 0, got {value!r}")
        for name in ("max_in_flight", "requests_per_minute", "tokens_per_minute"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"fake server: {name} must be >= 1 or unset, got {value!r}")
        if self.mean_reasoning_tokens < 0:
            raise ConfigError(
                f"fake server: mean_reasoning_tokens must be >= 0, got {self.mean_reasoning_tokens!r}"
            )
        if self.model_routes is not None:
            if not isinstance(self.model_routes, tuple):
                object.__setattr__(self, "model_routes", tuple(self.model_routes))
            for route in self.model_routes:
                alias, sep, target = route.partition("=")
                if not (sep and alias.strip() and target.strip()):
                    raise ConfigError(
                        f"fake server: model_routes entry {route!r} is not ALIAS=SNAPSHOT "
                        "(e.g. gpt-4o=gpt-4o-2024-05-13)"
                    )
        for name in ("mean_completion_tokens", "default_max_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"fake server: {name} must be >= 1, got {getattr(self, name)!r}")
        if not 0.0 <= self.completion_tokens_spread <= 1.0:
            raise ConfigError(
                "fake server: completion_tokens_spread must be in [0, 1], "
                f"got {self.completion_tokens_spread!r}"
            )
        if self.latency_distribution not in ("uniform", "normal"):
            raise ConfigError(
                f"fake server: latency_distribution must be 'uniform' or 'normal', "
                f"got {self.latency_distribution!r}"
            )
        if self.ratelimit_mode not in ("rolling", "per_second"):
            raise ConfigError(
                f"fake server: ratelimit_mode must be 'rolling' or 'per_second', got {self.ratelimit_mode!r}"
            )
        if self.hostile is not None:
            from .hostile import HOSTILE_MODES

            if self.hostile not in HOSTILE_MODES:
                raise ConfigError(
                    f"fake server: unknown hostile mode {self.hostile!r}; use one of {sorted(HOSTILE_MODES)}"
                )
        if self.hostile_count is not None and self.hostile_count < 0:
            raise ConfigError(f"fake server: hostile_count must be >= 0 or unset, got {self.hostile_count!r}")
        if self.known_models is not None and not isinstance(self.known_models, tuple):
            object.__setattr__(self, "known_models", tuple(self.known_models))

    def route(self, model: str) -> str:
        """The model that answers a request for ``model`` (``model_routes``), else ``model`` itself."""
        for entry in self.model_routes or ():
            alias, _, target = entry.partition("=")
            if alias.strip() == model:
                return target.strip()
        return model

    def replace(self, **changes: Any) -> FakeOptions:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self, *, include_secrets: bool = False) -> dict[str, Any]:
        """JSON-ready fields; ``api_key`` is left out unless ``include_secrets``."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "api_key" and not include_secrets:
                value = None if value is None else "***"
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FakeOptions:
        """Build from a mapping; unknown keys are refused with the list of valid ones."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"fake server: unknown option(s) {unknown}; valid options: {sorted(names)}")
        values = dict(data)
        for name in ("known_models", "model_routes"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        return cls(**values)


_INT_FIELDS = (
    "max_in_flight",
    "requests_per_minute",
    "tokens_per_minute",
    "mean_completion_tokens",
    "default_max_tokens",
    "seed",
    "mean_reasoning_tokens",
    "hostile_count",
    "hostile_body_bytes",
)


def _check_rate(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"fake server: {name} must be in [0, 1], got {value!r}")
