"""Chat completion requests: validation as the real API does it, and synthetic answers with exact usage.

Shared by the online endpoint and the Batch API. Usage is what OpenAI bills: ``prompt_tokens`` is
``count_chat_tokens(messages, encoding_for_model(model))`` and ``completion_tokens`` the true token count of
the answer text in the same encoding.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, replace
from typing import Any

from ..planning.tokens import count_chat_tokens, encoding_for_model, model_info
from .content import completion_length, draw_for, tape_for
from .ledger import request_key
from .options import FakeOptions
from .wire import ApiError, new_id

__all__ = ["FAKE_MODEL_PREFIX", "Answerer", "ChatRequest", "Computed", "fake_model_name", "parse_chat_body"]

FAKE_MODEL_PREFIX = "tracegen-fake:"
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
_CACHE_MAX = 16384


@functools.lru_cache(maxsize=256)
def _model_meta(model: str) -> tuple[str, int | None]:
    info = model_info(model)
    return encoding_for_model(model), None if info is None else info.context_window


@functools.lru_cache(maxsize=256)
def _is_reasoning(model: str) -> bool:
    info = model_info(model)
    return info is not None and info.reasoning


#: Reasoning effort -> share of ``mean_reasoning_tokens`` spent.
_EFFORT = {"minimal": 0.1, "low": 0.5, "medium": 1.0, "high": 2.0}
#: The real API's prompt cache: prefixes of 1024 tokens and more, in steps of 128.
CACHE_MIN_TOKENS = 1024
CACHE_STEP_TOKENS = 128


def fake_model_name(model: str) -> str:
    """The ``model`` field of a fake answer: ``tracegen-fake:<requested model>``."""
    return model if model.startswith(FAKE_MODEL_PREFIX) else FAKE_MODEL_PREFIX + model


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A validated chat completion request."""

    body: dict[str, Any]
    model: str
    messages: list[dict[str, str]]
    max_tokens: int  # the request's cap, or FakeOptions.default_max_tokens when it sets none
    n: int
    key: str  # request_key(body)
    answered_by: str = ""
    """The model that answers (``model_routes``), named in the answer and billed; default ``model``."""
    reasoning_effort: str | None = None
    """Reasoning models: the effort asked for (None = medium); None for chat models."""
    reasoning: bool = False


def _bad(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def _positive_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _bad(f"Invalid '{name}': expected an integer >= 1, got {value!r}.", name, "invalid_value")
    return value


def _number(body: dict[str, Any], name: str, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= high:
        raise _bad(
            f"Invalid '{name}': expected a number in [0, {high:g}], got {value!r}.", name, "invalid_value"
        )


def parse_chat_body(body: Any, opts: FakeOptions) -> ChatRequest:
    """Validate a ``/v1/chat/completions`` body; raises ``ApiError`` (400 / 404) like the real API."""
    if not isinstance(body, dict):
        raise _bad("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("You must provide a model parameter.", "model", "missing_required_parameter")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad(
            "Missing or empty 'messages': provide a non-empty list of messages.",
            "messages",
            "missing_required_parameter",
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            raise _bad(f"Invalid 'messages[{i}]': expected an object with a valid 'role'.", f"messages[{i}]")
        for name, value in message.items():
            if not isinstance(value, str):
                raise _bad(
                    f"Invalid 'messages[{i}].{name}': the tracegen fake server accepts string values only.",
                    f"messages[{i}].{name}",
                )
    if body.get("stream"):
        raise _bad("The tracegen fake server does not support stream=true.", "stream")
    _number(body, "temperature", 2.0)
    _number(body, "top_p", 1.0)
    reasoning = _is_reasoning(model)
    effort = _check_reasoning(body, model, reasoning)
    max_tokens = _positive_int(body, "max_completion_tokens") or _positive_int(body, "max_tokens")
    n = _positive_int(body, "n") or 1
    if n > 128:
        raise _bad(f"Invalid 'n': {n} is greater than the maximum of 128.", "n", "invalid_value")
    if opts.known_models is not None and model not in opts.known_models:
        raise ApiError(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            code="model_not_found",
            param="model",
        )
    return ChatRequest(
        body=body,
        model=model,
        messages=messages,
        max_tokens=max_tokens or opts.default_max_tokens,
        n=n,
        key=request_key(body),
        answered_by=opts.route(model),
        reasoning_effort=effort,
        reasoning=reasoning,
    )


def _check_reasoning(body: dict[str, Any], model: str, reasoning: bool) -> str | None:
    """What the real API refuses for reasoning models (o-series, gpt-5), with its error texts."""
    effort = body.get("reasoning_effort")
    if not reasoning:
        if effort is not None:
            raise _bad(
                "Unsupported parameter: 'reasoning_effort' is not supported with this model.",
                "reasoning_effort",
                "unsupported_parameter",
            )
        return None
    if body.get("max_tokens") is not None:
        raise _bad(
            "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
            "max_tokens",
            "unsupported_parameter",
        )
    temperature = body.get("temperature")
    if temperature is not None and temperature != 1:
        raise _bad(
            f"Unsupported value: 'temperature' does not support {temperature} with this model. "
            "Only the default (1) value is supported.",
            "temperature",
            "unsupported_value",
        )
    top_p = body.get("top_p")
    if top_p is not None and top_p != 1:
        raise _bad(
            "Unsupported parameter: 'top_p' is not supported with this model.",
            "top_p",
            "unsupported_parameter",
        )
    if effort is not None and effort not in _EFFORT:
        raise _bad(
            f"Invalid value: '{effort}'. Supported values are: 'minimal', 'low', 'medium', and 'high'.",
            "reasoning_effort",
            "invalid_value",
        )
    return str(effort) if effort is not None else None


@dataclass(frozen=True, slots=True)
class Computed:
    """The answer to one request: what is billed and what is sent."""

    prompt_tokens: int
    completion_tokens: int
    choices: list[dict[str, Any]]
    reasoning_tokens: int = 0
    """Hidden reasoning tokens, part of ``completion_tokens`` (and of the cap)."""
    cached_tokens: int = 0


class Answerer:
    """Computes answers; identical requests get identical content (cached by request key)."""

    def __init__(self, opts: FakeOptions) -> None:
        self.opts = opts
        self._cache: dict[tuple[str, int], Computed] = {}
        self._prefixes: set[str] = set()  # first messages seen (prompt_cache)

    def compute(self, req: ChatRequest) -> Computed:
        """Usage and choices for ``req``; raises 400 context_length_exceeded past a known model's window."""
        cached = self._cache.get((req.key, req.n))
        if cached is not None:
            return self._with_cache(req, cached)
        encoding, context_window = _model_meta(req.model)
        prompt_tokens = count_chat_tokens(req.messages, encoding)
        if context_window is not None and prompt_tokens + req.max_tokens > context_window:
            raise _bad(
                f"This model's maximum context length is {context_window} tokens. However, you "
                f"requested {prompt_tokens + req.max_tokens} tokens ({prompt_tokens} in the messages, "
                f"{req.max_tokens} in the completion). "
                "Please reduce the length of the messages or completion.",
                "messages",
                "context_length_exceeded",
            )
        tape = tape_for(encoding)
        opts = self.opts
        choices: list[dict[str, Any]] = []
        completion_tokens = 0
        reasoning_tokens = 0
        for index in range(req.n):
            u, draw = draw_for(opts.seed, req.key, index)
            wanted = completion_length(opts.mean_completion_tokens, opts.completion_tokens_spread, u)
            room = req.max_tokens
            if req.reasoning:  # hidden reasoning comes first and counts against the same cap
                spent = self._reasoning_tokens(req, u)
                thought = min(spent, room)
                reasoning_tokens += thought
                completion_tokens += thought
                room -= thought
            if room < 1:  # the cap went to reasoning: an empty answer cut by the cap
                content, finish = "", "length"
            else:
                answer = tape.answer(min(wanted, room), complete=wanted <= room, draw=draw)
                completion_tokens += answer.completion_tokens
                content, finish = answer.content, answer.finish_reason
            choices.append(
                {
                    "index": index,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish,
                }
            )
        computed = Computed(prompt_tokens, completion_tokens, choices, reasoning_tokens)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.pop(next(iter(self._cache)))
        self._cache[(req.key, req.n)] = computed
        return self._with_cache(req, computed)

    def _reasoning_tokens(self, req: ChatRequest, u: float) -> int:
        mean = self.opts.mean_reasoning_tokens * _EFFORT.get(req.reasoning_effort or "medium", 1.0)
        if mean <= 0:
            return 0
        return completion_length(max(1, round(mean)), self.opts.completion_tokens_spread, 1.0 - u)

    def _with_cache(self, req: ChatRequest, computed: Computed) -> Computed:
        """``computed`` with the prompt-cache hit of this request (``prompt_cache``), else as is."""
        if not self.opts.prompt_cache:
            return computed
        first = json.dumps(req.messages[0], sort_keys=True)
        seen = first in self._prefixes
        self._prefixes.add(first)
        if not seen:
            return replace(computed, cached_tokens=0)
        encoding, _ = _model_meta(req.model)
        prefix = count_chat_tokens(req.messages[:1], encoding) - 3  # the reply priming is not a prefix
        if prefix < CACHE_MIN_TOKENS:
            return replace(computed, cached_tokens=0)
        return replace(
            computed,
            cached_tokens=min(prefix, computed.prompt_tokens) // CACHE_STEP_TOKENS * CACHE_STEP_TOKENS,
        )

    @staticmethod
    def completion(req: ChatRequest, computed: Computed) -> dict[str, Any]:
        """The ``chat.completion`` object that carries ``computed``."""
        return {
            "id": new_id("chatcmpl-"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": fake_model_name(req.answered_by or req.model),
            "choices": computed.choices,
            "usage": {
                "prompt_tokens": computed.prompt_tokens,
                "completion_tokens": computed.completion_tokens,
                "total_tokens": computed.prompt_tokens + computed.completion_tokens,
                "prompt_tokens_details": {"cached_tokens": computed.cached_tokens},
                "completion_tokens_details": {"reasoning_tokens": computed.reasoning_tokens},
            },
            "system_fingerprint": "fp_tracegen_fake",
        }
