"""Status rows (``tracegen batch status``): one per batch part, from the live batch or the journal."""

from __future__ import annotations

from typing import Any

from .api import BatchInfo
from .journal import PartState

__all__ = ["batch_row"]


def batch_row(state: PartState, info: BatchInfo | None) -> dict[str, Any]:
    """part, batch_id, status, total, completed, failed, input_file_id, requests, collected."""
    final = state.final
    if info is not None:
        status, total, completed, failed = info.status, info.total, info.completed, info.failed
        input_file_id: str | None = info.input_file_id
    elif state.done is not None:
        status = str(final.get("status", state.done))
        total = int(final.get("total", state.requests))
        completed = int(final.get("completed", 0))
        failed = int(final.get("failed", 0))
        input_file_id = state.file_id
    else:
        status = "not_created" if state.file_id else "not_uploaded"
        total, completed, failed, input_file_id = state.requests, 0, 0, state.file_id
    return {
        "part": state.part,
        "batch_id": state.batch_id,
        "status": status,
        "total": total,
        "completed": completed,
        "failed": failed,
        "input_file_id": input_file_id,
        "requests": state.requests,
        "collected": state.done == "collected",
    }
