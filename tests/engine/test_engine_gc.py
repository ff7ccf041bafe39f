"""The engine raises the GC's generation-0 threshold while it runs and puts it back afterwards."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tracegen.config import RunConfig
from tracegen.engine import ChatResult, generate
from tracegen.engine._gc import GEN0_THRESHOLD, fewer_gc_passes
from tracegen.records import Record


@pytest.fixture(autouse=True)
def default_threshold() -> Iterator[None]:
    old = gc.get_threshold()
    gc.set_threshold(700, *old[1:])
    yield
    gc.set_threshold(*old)


def test_raised_inside_restored_after() -> None:
    with fewer_gc_passes():
        assert gc.get_threshold()[0] == GEN0_THRESHOLD
    assert gc.get_threshold()[0] == 700


def test_nested_runs_restore_at_the_outermost_exit() -> None:
    with fewer_gc_passes():
        with fewer_gc_passes():
            assert gc.get_threshold()[0] == GEN0_THRESHOLD
        assert gc.get_threshold()[0] == GEN0_THRESHOLD
    assert gc.get_threshold()[0] == 700


def test_restored_after_an_error() -> None:
    with pytest.raises(RuntimeError), fewer_gc_passes():
        raise RuntimeError("boom")
    assert gc.get_threshold()[0] == 700


@pytest.mark.parametrize("app_threshold", [0, 100_000])
def test_an_application_setting_is_left_alone(app_threshold: int) -> None:
    gc.set_threshold(app_threshold)
    with fewer_gc_passes():
        assert gc.get_threshold()[0] == app_threshold
    assert gc.get_threshold()[0] == app_threshold


def test_a_change_made_during_the_run_is_kept() -> None:
    with fewer_gc_passes():
        gc.set_threshold(5000)
    assert gc.get_threshold()[0] == 5000


class ThresholdClient:
    """A fake teacher that records the GC threshold it sees while answering."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    async def complete(
        self, body: dict[str, Any], request_id: str, *, payload: bytes | None = None
    ) -> ChatResult:
        self.seen.append(gc.get_threshold()[0])
        return ChatResult("An answer.", "stop", 20, 3, "gpt-4o-mini", {})

    async def aclose(self) -> None:
        pass


async def test_generate_runs_with_the_raised_threshold(tmp_path: Path) -> None:
    client = ThresholdClient()
    recs = [Record(id=f"cot.{i}", submix="cot", question=f"Question {i}?") for i in range(5)]
    result = await generate(recs, RunConfig(), tmp_path, client=client)
    assert result.succeeded == 5
    assert client.seen == [GEN0_THRESHOLD] * 5
    assert gc.get_threshold()[0] == 700
