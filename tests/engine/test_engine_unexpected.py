"""An unexpected error inside the client is a failed record (counted, retried on rerun), not a lost one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tracegen.config import RunConfig
from tracegen.engine import ChatResult, generate
from tracegen.records import Record


class FlakyClient:
    """Raises a non-teacher error for one id, answers the others."""

    def __init__(self, broken: set[str]) -> None:
        self.broken = broken
        self.calls: list[str] = []

    async def complete(
        self, body: dict[str, Any], request_id: str, *, payload: bytes | None = None
    ) -> ChatResult:
        self.calls.append(request_id)
        if request_id in self.broken:
            raise RuntimeError("library bug")
        return ChatResult(
            content="An answer, step by step.",
            finish_reason="stop",
            prompt_tokens=20,
            completion_tokens=5,
            model_returned="gpt-4o-mini-2024-07-18",
            headers={},
        )

    async def aclose(self) -> None:
        return None


def _records(n: int) -> list[Record]:
    return [Record(id=f"niv.{i}", submix="niv", question=f"Q{i}?") for i in range(n)]


async def test_unexpected_error_is_failed_not_lost_and_retried_on_rerun(tmp_path: Path) -> None:
    cfg = RunConfig(budget_usd=1.0)
    result = await generate(_records(6), cfg, tmp_path, client=FlakyClient({"niv.3"}))
    assert (result.succeeded, result.failed) == (5, 1)
    (failed,) = [json.loads(x) for x in (tmp_path / "failed.jsonl").read_text().splitlines()]
    assert failed["id"] == "niv.3" and failed["error"]["type"] == "RuntimeError"
    healed = FlakyClient(set())
    again = await generate(_records(6), cfg, tmp_path, client=healed)
    assert healed.calls == ["niv.3"] and again.succeeded == 1
