"""The engine's JSONL lines: ``{"request_key":"<64 hex>","cost_usd":<float>,...}`` heads, the traces,
rejected and failed lines built from an answer, and the done set a resume reads back.

The fixed-format head lets a resume read the done set of a multi-GB traces.jsonl without parsing every
record (see :mod:`tracegen.engine.store`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol

from ..errors import RunDirError
from ..records import Record
from ..redact import scrub
from ._json import dumps_line, loads

__all__ = [
    "FAILED",
    "REJECTED",
    "TRACES",
    "Answer",
    "DoneSet",
    "answer_line",
    "engine_line",
    "failed_line",
    "key_digest",
]

_PREFIX = b'{"request_key":"'
_COST_AT = len(_PREFIX) + 64
_COST_PREFIX = b'","cost_usd":'

#: Which file a ResultWriter line goes to.
TRACES, FAILED, REJECTED = 0, 1, 2

_RECORD_FIELDS = tuple(f.name for f in fields(Record))
#: A Record's fields as an answer line spells them: its cost is the line's head.
_LINE_FIELDS = tuple(name for name in _RECORD_FIELDS if name not in ("request_key", "cost_usd"))


def key_digest(request_key: str) -> bytes:
    """The in-memory form of a request key in the done set (16 bytes: ~3x smaller than the hex string)."""
    return bytes.fromhex(request_key[:32])


@dataclass(slots=True)
class DoneSet:
    """What a run directory already holds: request keys answered (or rejected at generate) and their cost."""

    keys: set[bytes]
    n_traces: int
    n_rejected: int
    cost_usd: float

    def __contains__(self, request_key: str) -> bool:
        return key_digest(request_key) in self.keys

    def add(self, request_key: str) -> None:
        self.keys.add(key_digest(request_key))


def engine_line(request_key: str, cost_usd: float, fields: Mapping[str, Any]) -> bytes:
    """One JSONL line with request_key and cost_usd first (see module docstring), newline included."""
    if "request_key" in fields or "cost_usd" in fields:
        fields = {k: v for k, v in fields.items() if k not in ("request_key", "cost_usd")}
    body = dumps_line(fields)
    head = f'{{"request_key":"{request_key}","cost_usd":{float(cost_usd)!r}'  # !r: the float's repr
    if body == b"{}\n":
        return head.encode() + b"}\n"
    return (head + ",").encode() + body[1:]


class Answer(Protocol):
    """What :func:`answer_line` reads from an answer (an online ChatResult, a batch Outcome)."""

    @property
    def content(self) -> str | None: ...
    @property
    def model_returned(self) -> str: ...
    @property
    def finish_reason(self) -> str | None: ...


def answer_line(
    rec: Record,
    request_key: str,
    answer: Answer,
    *,
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
    cost_usd: float,
    reasoning_tokens: int = 0,
    timing: Mapping[str, Any] | None = None,
) -> tuple[int, bytes]:
    """Fill ``rec``'s answer fields; return the file its line goes to and the line: TRACES, or REJECTED
    (stage ``generate``) when the teacher answered ``content_filter`` (paid for, so done all the same).
    ``timing`` (online mode: ``answered_at``, ``latency_s``, ``retried``) is appended to a traces line."""
    rec.response = answer.content
    rec.model = model
    rec.model_returned = answer.model_returned
    rec.prompt_tokens = prompt_tokens
    rec.completion_tokens = completion_tokens
    rec.cost_usd = cost_usd
    rec.finish_reason = answer.finish_reason
    rec.reasoning_tokens = reasoning_tokens
    if rec.finish_reason == "content_filter":
        fields_ = {name: getattr(rec, name) for name in _RECORD_FIELDS}
        line = engine_line(
            request_key,
            cost_usd,
            {
                "id": rec.id,
                "stage": "generate",
                "reason": "content_filter",
                "detail": "the teacher answered finish_reason=content_filter",
                "record": fields_,
            },
        )
        return REJECTED, line
    fields_ = {name: getattr(rec, name) for name in _LINE_FIELDS}
    if timing:
        fields_.update(timing)
    return TRACES, engine_line(request_key, cost_usd, fields_)


def failed_line(
    request_key: str, rec: Record, attempts: int, error: dict[str, Any], chain: list[dict[str, Any]]
) -> bytes:
    """A failed.jsonl line: the record's id and key, attempts made, the last error and every error
    (redacted: a server may echo a key in any field)."""
    return engine_line(
        request_key,
        0.0,
        {"id": rec.id, "key": rec.key, "attempts": attempts, "error": scrub(error), "chain": scrub(chain)},
    )


def _parse_head(line: bytes) -> tuple[str, float] | None:
    """(request_key, cost_usd) from an engine line's fixed-format head, or None."""
    if not line.startswith(_PREFIX) or line[_COST_AT : _COST_AT + len(_COST_PREFIX)] != _COST_PREFIX:
        return None
    start = _COST_AT + len(_COST_PREFIX)
    end = line.find(b",", start)
    if end < 0:
        end = line.find(b"}", start)
    try:
        return line[len(_PREFIX) : _COST_AT].decode("ascii"), float(line[start:end])
    except ValueError:
        return None


def _slow_head(path: Path, lineno: int, line: bytes) -> tuple[str, float] | None:
    try:
        obj = loads(line)
    except ValueError:
        raise RunDirError(
            f"{path}:{lineno}: corrupt line (not JSON); move the file aside or use a new --output-dir"
        ) from None
    key = obj.get("request_key") if isinstance(obj, dict) else None
    if not isinstance(key, str) or len(key) != 64:
        return None
    return key, float(obj.get("cost_usd") or 0.0)
