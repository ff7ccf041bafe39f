"""Reading Batch API output and error files: one :class:`Outcome` per ``custom_id``.

Output/error lines look like ``{"custom_id", "response": {"status_code", "body"} | null, "error": {"code",
"message"} | null}``. A 200 response carries a chat completion; another status is an HTTP error classified
by the engine's retry rules (429/5xx retryable, 400 not); ``batch_expired`` lines are retryable;
``batch_cancelled`` lines were never executed and are left for a later run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..engine import TeacherHTTPError, is_retryable
from ..engine.client import error_fields, usage_detail
from ..engine.usage import read_count

__all__ = ["Outcome", "batch_failure", "missing_outcome", "parse_file"]

#: Batch-level failure codes that clear up by themselves (resubmit later).
RETRYABLE_BATCH_CODES = frozenset({"token_limit_exceeded", "rate_limit_exceeded", "server_error"})


@dataclass(slots=True)
class Outcome:
    """What became of one request of a batch."""

    kind: str
    """"answer" | "error" | "expired" | "cancelled"."""
    content: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    model_returned: str = ""
    reasoning_tokens: int | None = None
    cached_tokens: int | None = None
    error: dict[str, Any] = field(default_factory=dict)
    """For failed.jsonl: {"type", "status", "code", "message"}."""
    retryable: bool = False
    usage_problem: str | None = None
    """What was malformed in the answer's usage (see :mod:`tracegen.engine.usage`), else None."""


def _answer(body: Any) -> Outcome:
    choices = body.get("choices") if isinstance(body, dict) else None
    if not choices or not isinstance(choices[0], dict):
        return Outcome(
            "error",
            error={
                "type": "BatchLineError",
                "status": 200,
                "code": "no_choices",
                "message": "answer has no choices",
            },
            retryable=True,
        )
    choice = choices[0]
    message = choice.get("message") or {}
    usage = body.get("usage") or {}
    if not isinstance(usage, dict):
        usage = {"prompt_tokens": "malformed", "completion_tokens": "malformed"}
    pt, ct = read_count(usage.get("prompt_tokens")), read_count(usage.get("completion_tokens"))
    problems = [
        f"{name} {v}" for name, v in (("prompt_tokens", pt), ("completion_tokens", ct)) if isinstance(v, str)
    ]
    content = message.get("content") if isinstance(message, dict) else None
    return Outcome(
        "answer",
        content=content if isinstance(content, str) else None,
        finish_reason=choice.get("finish_reason"),
        prompt_tokens=pt if isinstance(pt, int) else None,
        completion_tokens=ct if isinstance(ct, int) else None,
        model_returned=str(body.get("model") or ""),
        reasoning_tokens=usage_detail(usage, "completion_tokens_details", "reasoning_tokens"),
        cached_tokens=usage_detail(usage, "prompt_tokens_details", "cached_tokens"),
        usage_problem="; ".join(problems) or None,
    )


def parse_line(obj: dict[str, Any]) -> Outcome:
    """The outcome one output/error line stands for."""
    response = obj.get("response")
    error = obj.get("error")
    if isinstance(response, dict) and response.get("status_code") is not None:
        status = int(response["status_code"])
        body = response.get("body")
        if status == 200:
            return _answer(body)
        code, message = error_fields(body)
        err = TeacherHTTPError(status, code, message or f"HTTP {status}")
        return Outcome("error", error=err.describe(), retryable=is_retryable(err))
    code = str(error.get("code")) if isinstance(error, dict) and error.get("code") else None
    message = str(error.get("message")) if isinstance(error, dict) and error.get("message") else ""
    if code == "batch_cancelled":
        return Outcome(
            "cancelled", error={"type": "BatchCancelled", "status": None, "code": code, "message": message}
        )
    if code == "batch_expired":
        return Outcome(
            "expired",
            error={"type": "BatchExpired", "status": None, "code": code, "message": message},
            retryable=True,
        )
    return Outcome(
        "error",
        error={"type": "BatchLineError", "status": None, "code": code, "message": message or "no response"},
        retryable=True,
    )


def parse_file(data: bytes) -> Iterator[tuple[str, Outcome]]:
    """(custom_id, outcome) for every well-formed line of an output or error file."""
    for raw in data.splitlines():
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("custom_id"), str):
            yield obj["custom_id"], parse_line(obj)


def batch_failure(errors: tuple[dict[str, Any], ...], status: str) -> Outcome:
    """The outcome of every request of a batch that failed as a whole (validation, token limit)."""
    first = errors[0] if errors else {}
    code = first.get("code")
    message = str(first.get("message") or f"the batch ended '{status}' without results")
    line = first.get("line")
    if line is not None:
        message += f" (input line {line})"
    return Outcome(
        "error",
        error={"type": "BatchFailed", "status": None, "code": code, "message": message},
        retryable=code in RETRYABLE_BATCH_CODES,
    )


def missing_outcome(status: str, whole: Outcome | None) -> Outcome:
    """The outcome of a request with no line in the output or error file."""
    if whole is not None:
        return whole
    if status == "cancelled":
        return Outcome("cancelled")
    error = {"type": "BatchLineError", "status": None, "code": "missing", "message": ""}
    if status == "expired":
        error.update(
            type="BatchExpired", code="batch_expired", message="not executed before the batch expired"
        )
        return Outcome("expired", error=error, retryable=True)
    error["message"] = f"the batch ended '{status}' with no result line for this request"
    return Outcome("error", error=error, retryable=True)
