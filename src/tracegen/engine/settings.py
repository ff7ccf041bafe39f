"""What flows down into the engine and the Batch API runner: the teacher and the limits, not the whole
:class:`~tracegen.config.RunConfig`.

The public entry points (:func:`tracegen.engine.generate`, :func:`tracegen.batch.run_batches`, and the
few helpers the pipeline calls with its config) take a ``RunConfig`` and convert it once, with
:meth:`EngineSettings.of`; everything below them reads only these small frozen values:

- :class:`Teacher`: who is asked and how -- the model, the request parameters, its prices, the endpoint(s)
  and the transport;
- :class:`Limits`: how much and how fast -- the budget and caps, rate limits, concurrency, attempts, and
  the Batch API's settings;
- ``public``: :meth:`RunConfig.public_dict` (stats.json ``config`` and the run directory's manifest).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Literal

from ..config import EndpointConfig

if TYPE_CHECKING:
    from ..config import RunConfig

__all__ = ["EngineSettings", "Limits", "Teacher"]


@dataclass(frozen=True)
class Teacher:
    """Who is asked and how: what makes a request's body, key and price, and where it is sent."""

    model: str
    max_tokens: int
    temperature: float
    top_p: float
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None
    price_file: str | None
    input_price: float | None
    output_price: float | None
    base_url: str | None
    transport: Literal["http", "aiohttp", "sdk"]
    timeout_s: float
    max_response_bytes: int
    endpoints: tuple[EndpointConfig, ...]


@dataclass(frozen=True)
class Limits:
    """How much and how fast: the dollar budget and caps, rate limits, retries, Batch API settings."""

    budget_usd: float | None
    max_requests: int | None
    max_total_tokens: int | None
    concurrency: int
    requests_per_minute: float | None
    tokens_per_minute: float | None
    max_attempts: int
    retry_length: bool
    batch_poll_interval_s: float
    batch_finish_online: bool
    batch_max_in_flight: int | None
    batch_keep_files: bool


@dataclass(frozen=True)
class EngineSettings:
    """The teacher, the limits and the public configuration (for stats.json and the manifest)."""

    teacher: Teacher
    limits: Limits
    public: dict[str, Any]
    """:meth:`RunConfig.public_dict` (never holds a secret); read it through :meth:`public_dict`."""

    @classmethod
    def of(cls, config: RunConfig) -> EngineSettings:
        """The settings the engine and the batch runner read from ``config`` (the one conversion)."""
        values: dict[str, Any] = {f.name: getattr(config, f.name) for f in fields(Teacher)}
        values["endpoints"] = tuple(e.model_copy(deep=True) for e in config.endpoints)
        return cls(
            teacher=Teacher(**values),
            limits=Limits(**{f.name: getattr(config, f.name) for f in fields(Limits)}),
            public=config.public_dict(),
        )

    def public_dict(self) -> dict[str, Any]:
        """A copy of the public configuration (stats.json ``config``), as ``RunConfig.public_dict`` gives."""
        return copy.deepcopy(self.public)
