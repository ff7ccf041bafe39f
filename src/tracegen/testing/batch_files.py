"""The fake Batch API's data: stored files, batch jobs and their limits, and the input-file validation
(checked like the real API). The lifecycle is described in :mod:`tracegen.testing.batches`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BATCH_ENDPOINT",
    "FILE_PURPOSES",
    "MAX_BATCH_FILE_BYTES",
    "MAX_BATCH_LINES",
    "TERMINAL_STATUSES",
    "BatchJob",
    "StoredFile",
    "validate_batch_file",
]

MAX_BATCH_LINES = 50_000
MAX_BATCH_FILE_BYTES = 200 * 1024 * 1024
MAX_REPORTED_ERRORS = 100
TERMINAL_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})
BATCH_ENDPOINT = "/v1/chat/completions"
FILE_PURPOSES = frozenset(
    {
        "assistants",
        "assistants_output",
        "batch",
        "batch_output",
        "fine-tune",
        "fine-tune-results",
        "vision",
        "user_data",
    }
)


def _now() -> int:
    return int(time.time())


@dataclass
class StoredFile:
    """An uploaded (or generated) file."""

    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int = field(default_factory=_now)

    def obj(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }


@dataclass
class BatchJob:
    """One batch and its progress."""

    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None
    created_at: int = field(default_factory=_now)
    status: str = "validating"
    times: dict[str, int | None] = field(
        default_factory=lambda: dict.fromkeys(
            (
                "in_progress_at",
                "finalizing_at",
                "completed_at",
                "failed_at",
                "expired_at",
                "cancelling_at",
                "cancelled_at",
            )
        )
    )
    total: int = 0
    completed: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    model: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[dict[str, Any]] | None = None
    cancel_requested: bool = False

    def set_status(self, status: str) -> None:
        self.status = status
        key = f"{status}_at"
        if key in self.times:
            self.times[key] = _now()

    def obj(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": None if self.errors is None else {"object": "list", "data": self.errors},
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "expires_at": self.created_at + 24 * 3600,
            **self.times,
            "request_counts": {"total": self.total, "completed": self.completed, "failed": self.failed},
            "metadata": self.metadata,
            "model": self.model,
            "usage": {
                "input_tokens": self.input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": self.output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": self.input_tokens + self.output_tokens,
            },
        }


def _line_error(code: str, message: str, line: int | None, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


def validate_batch_file(data: bytes, endpoint: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(request lines, validation errors) of a batch input file, checked like the real API."""
    errors: list[dict[str, Any]] = []
    lines: list[dict[str, Any]] = []
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return [], [_line_error("invalid_file_format", "The input file is not valid UTF-8.", None)]
    seen: set[str] = set()
    model: str | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            line = None
        if not isinstance(line, dict):
            errors.append(
                _line_error("invalid_json_line", "This line is not parseable as valid JSON.", number)
            )
            continue
        custom_id = line.get("custom_id")
        body = line.get("body")
        if not isinstance(custom_id, str) or not custom_id:
            errors.append(
                _line_error(
                    "missing_required_parameter",
                    "Each request needs a string custom_id.",
                    number,
                    "custom_id",
                )
            )
        elif custom_id in seen:
            errors.append(
                _line_error(
                    "duplicate_custom_id",
                    "The custom_id for this request is a duplicate of another request. The custom_id "
                    "parameter must be unique for each request in a batch.",
                    number,
                    "custom_id",
                )
            )
        else:
            seen.add(custom_id)
        if line.get("method") != "POST":
            errors.append(
                _line_error("invalid_method", "The method of every request must be POST.", number, "method")
            )
        if line.get("url") != endpoint:
            errors.append(
                _line_error(
                    "invalid_url",
                    f"The URL provided for this request does not match the batch endpoint {endpoint}.",
                    number,
                    "url",
                )
            )
        if not isinstance(body, dict):
            errors.append(
                _line_error(
                    "missing_required_parameter", "Each request needs a JSON object body.", number, "body"
                )
            )
        else:
            line_model = body.get("model")
            if model is None and isinstance(line_model, str):
                model = line_model
            elif isinstance(line_model, str) and line_model != model:
                errors.append(
                    _line_error(
                        "mismatched_model",
                        f"The model {line_model!r} differs from {model!r} used by earlier lines; "
                        "all requests in a batch must use the same model.",
                        number,
                        "body.model",
                    )
                )
        lines.append(line)
    if not lines and not errors:
        errors.append(
            _line_error(
                "empty_file",
                "The batch input file is empty. Please ensure that the batch contains at least one request.",
                None,
            )
        )
    if len(lines) > MAX_BATCH_LINES:
        errors.append(
            _line_error(
                "too_many_requests",
                f"The batch input file has {len(lines)} requests; a batch holds at most {MAX_BATCH_LINES}.",
                None,
            )
        )
    return lines, errors[:MAX_REPORTED_ERRORS]
