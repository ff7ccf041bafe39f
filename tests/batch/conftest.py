"""The batch tests' fake server: Batch API jobs that take 0.1 s, answers of ~40 tokens (the resume tests
override ``srv`` with slower jobs, to kill a run while one is in flight)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tracegen.testing import FakeOptions, FakeServer


@pytest.fixture
def srv() -> Iterator[FakeServer]:
    with FakeServer(FakeOptions(batch_delay_s=0.1, mean_completion_tokens=40)) as server:
        yield server
