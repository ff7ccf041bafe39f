"""What is sent to the teacher for a model: the chat-completions body, chat models vs reasoning models.

Chat models get ``{model, messages, temperature, top_p, max_tokens}``. Reasoning models (the table's
``reasoning`` flag: o-series, gpt-5 family) reject ``max_tokens`` and any ``temperature``/``top_p`` other than
1, so they get ``{model, messages, max_completion_tokens[, reasoning_effort]}``. Their completion cap counts
the hidden reasoning tokens too, so the default cap for them is :data:`REASONING_MAX_TOKENS`, not the chat
default: an answer is not starved by its own reasoning. One body builder serves the online engine and the
Batch API runner.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Protocol

from .prices import lookup

if TYPE_CHECKING:
    from ..config import RunConfig

__all__ = [
    "CHAT_MAX_TOKENS",
    "DEFAULT_EXPECTED_REASONING_TOKENS",
    "REASONING_MAX_TOKENS",
    "ChatParams",
    "ModelRef",
    "apply_model_defaults",
    "body_cap",
    "chat_body",
    "expected_reasoning_tokens",
    "is_reasoning",
    "with_cap",
]

#: Completion cap of chat models when the user sets none (RunConfig.max_tokens' default).
CHAT_MAX_TOKENS = 1024
#: Completion cap of reasoning models when the user sets none: room for ~3k reasoning + a 1k answer.
REASONING_MAX_TOKENS = 4096
#: Dry run: hidden reasoning tokens assumed per answer of a reasoning model (``expected_reasoning_tokens``).
DEFAULT_EXPECTED_REASONING_TOKENS = 1024


class ModelRef(Protocol):
    """The model and the price file that says whether it reasons (a RunConfig, or the engine's Teacher)."""

    @property
    def model(self) -> str: ...
    @property
    def price_file(self) -> str | None: ...


class ChatParams(ModelRef, Protocol):
    """What a request body is made of (a RunConfig, or the engine's :class:`~tracegen.engine.settings.Teacher`)."""

    @property
    def max_tokens(self) -> int: ...
    @property
    def temperature(self) -> float: ...
    @property
    def top_p(self) -> float: ...
    @property
    def reasoning_effort(self) -> str | None: ...


@functools.lru_cache(maxsize=256)
def _reasoning(model: str, price_file: str | None) -> bool:
    found = lookup(model, price_file)
    return found is not None and found[1].reasoning


def is_reasoning(config: ModelRef) -> bool:
    """Whether the price table (or the user's price file) marks ``config.model`` as a reasoning model."""
    return _reasoning(config.model, config.price_file)


def chat_body(messages: list[dict[str, str]], config: ChatParams) -> dict[str, Any]:
    """The request body for ``messages`` under ``config`` (see the module docstring)."""
    if is_reasoning(config):
        body: dict[str, Any] = {
            "model": config.model,
            "messages": messages,
            "max_completion_tokens": config.max_tokens,
        }
    else:
        body = {
            "model": config.model,
            "messages": messages,
            "temperature": config.temperature,
            "top_p": config.top_p,
            "max_tokens": config.max_tokens,
        }
    if config.reasoning_effort is not None:
        body["reasoning_effort"] = config.reasoning_effort
    return body


def body_cap(body: dict[str, Any]) -> int:
    """The completion cap of ``body`` (``max_tokens`` or ``max_completion_tokens``)."""
    cap = body.get("max_tokens")
    if cap is None:
        cap = body.get("max_completion_tokens")
    return int(cap or 0)


def with_cap(body: dict[str, Any], cap: int) -> dict[str, Any]:
    """A copy of ``body`` with completion cap ``cap``, in the parameter the body already uses."""
    out = dict(body)
    out["max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"] = cap
    return out


def expected_reasoning_tokens(config: RunConfig) -> int:
    """Hidden reasoning tokens assumed per answer (dry run): 0 for chat models."""
    if not is_reasoning(config):
        return 0
    if config.expected_reasoning_tokens is not None:
        return config.expected_reasoning_tokens
    return DEFAULT_EXPECTED_REASONING_TOKENS


def apply_model_defaults(config: RunConfig, user_set: set[str] | None = None) -> None:
    """Model-dependent defaults and refusals, before anything is sent.

    A reasoning model gets :data:`REASONING_MAX_TOKENS` unless the user set ``max_tokens``; a user-set
    ``temperature``/``top_p`` other than 1 is refused (the API would answer 400 to every request);
    ``reasoning_effort`` on a model the table lists as a chat model is refused. Raises ValueError.
    ``user_set``: the fields the user set (default ``config.model_fields_set``).
    """
    given = config.model_fields_set if user_set is None else user_set
    reasoning = is_reasoning(config)
    if "max_tokens" not in given:
        # written past validate_assignment on purpose: a default is not "set by the user"
        config.__dict__["max_tokens"] = REASONING_MAX_TOKENS if reasoning else CHAT_MAX_TOKENS
    if reasoning:
        for name in ("temperature", "top_p"):
            value = getattr(config, name)
            if name in given and value != 1:
                raise ValueError(
                    f"{name} {value:g}: {config.model} is a reasoning model; it accepts only the default "
                    f"{name} (1): drop --{name.replace('_', '-')} (or set it to 1)"
                )
    elif config.reasoning_effort is not None and lookup(config.model, config.price_file) is not None:
        raise ValueError(
            f"reasoning_effort {config.reasoning_effort}: {config.model} is not a reasoning model; "
            "drop --reasoning-effort or pick a reasoning model (see `tracegen models`)"
        )
