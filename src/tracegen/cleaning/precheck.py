"""Clean work done while the teacher is still answering: each answer's check and filter verdict.

While a run waits on the network the client's core is mostly idle (1 s answers, 1,024 in flight: about a
fifth of it busy). :class:`Prechecker` takes each durable ``traces.jsonl`` line (the engine's ``on_traces``)
and, in slices of at most :data:`SLICE_S` on the event loop when a turn of the loop finds the engine idle
(:func:`tracegen._idle.idle_turn`: while answers stream in, it backs off), computes what :func:`~.postprocess.clean`
computes for that line alone: the answer check (``agrees_with_target``), the filters' first rejection and,
for a record the filters keep, its dedup keys (normalized-text hashes, MinHash band keys). Which record is
a duplicate depends on the order of the whole dataset: that decision stays in clean.

:func:`~.postprocess.clean` looks every line up by a 128-bit hash of its bytes: a line found is not
checked again; any other (a resumed run's earlier lines, lines past :data:`MAX_ENTRIES`, a different
filter configuration) is checked as before. ``clean.jsonl`` is byte-identical with or without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator

import orjson
import xxhash

from .._idle import idle_turn
from ..records import Record
from .answer_check import check_answer
from .dedup import DedupConfig, Deduper
from .filters import FilterConfig, FilterPipeline, Rejection, build_filters

__all__ = ["BATCH", "MAX_ENTRIES", "SLICE_S", "Prechecker", "Verdict", "line_key"]

#: Verdicts kept at most (~300 bytes each with their dedup keys: 60 MB at most); later lines are left to clean.
MAX_ENTRIES = 200_000
#: The longest the prechecker holds the event loop before it lets the engine run (seconds).
SLICE_S = 0.002
#: Lines checked together (their dedup keys are hashed as one numpy batch).
BATCH = 64

#: (agrees_with_target, the filters' first rejection or None, packed dedup keys or None)
Verdict = tuple[bool | None, Rejection | None, bytes | None]


def line_key(line: bytes) -> int:
    """The key of a traces.jsonl line (its bytes, newline included)."""
    return int(xxhash.xxh3_128_intdigest(line))


class Prechecker:
    """Answer-check and filter traces lines as they become durable; :meth:`verdict` serves clean()."""

    def __init__(
        self,
        filter_config: FilterConfig,
        dedup_config: DedupConfig | None = None,
        *,
        answer_check: bool = True,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self.filter_config = filter_config
        self.dedup_config = dedup_config
        self.answer_check = answer_check
        self.max_entries = max_entries
        # built on first use: on the event loop when the first answers come in (regexes, permutations)
        self._pipeline: FilterPipeline | None = None
        self._deduper: Deduper | None = None
        self._queue: deque[bytes] = deque()
        self._verdicts: dict[int, Verdict] = {}
        self._wake: asyncio.Event | None = None

    def __len__(self) -> int:
        return len(self._verdicts)

    # ---- feeding -----------------------------------------------------------------------------------------
    def feed(self, lines: list[bytes]) -> None:
        """Queue durable traces lines (the engine's ``on_traces``): returns at once."""
        if len(self._verdicts) + len(self._queue) + len(lines) > self.max_entries:
            return
        self._queue.extend(lines)
        if self._wake is not None:
            self._wake.set()

    def _tools(self) -> tuple[FilterPipeline, Deduper | None]:
        if self._pipeline is None:
            self._pipeline = FilterPipeline(build_filters(self.filter_config))
            self._deduper = Deduper(self.dedup_config) if self.dedup_config is not None else None
        return self._pipeline, self._deduper

    def check_lines(self, lines: list[bytes]) -> None:
        """Compute and keep the verdicts of these lines (an unreadable line is left to clean)."""
        pipeline, deduper = self._tools()
        kept: list[tuple[int, Record]] = []
        for line in lines:
            try:
                record = Record.from_dict(orjson.loads(line))
            except (ValueError, TypeError):
                continue
            if self.answer_check:
                record.agrees_with_target = check_answer(record.question, record.target, record.response)
            key = line_key(line)
            rejection = pipeline.check(record)
            self._verdicts[key] = (record.agrees_with_target, rejection, None)
            if rejection is None:
                kept.append((key, record))
        if deduper is not None and kept:
            packed = deduper.packed_keys([record for _, record in kept])
            for (key, _), keys in zip(kept, packed, strict=True):
                agrees, _, _ = self._verdicts[key]
                self._verdicts[key] = (agrees, None, keys)

    async def _work(self) -> None:
        """Slices of checking while the event loop is idle; none while the engine keeps it busy."""
        assert self._wake is not None
        clock = time.perf_counter
        queue = self._queue
        while True:
            if not queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            # the engine has nothing queued, or the core has spare time: checking costs the run nothing
            end = clock() + max(SLICE_S, await idle_turn(SLICE_S))
            while queue and clock() < end:
                self.check_lines([queue.popleft() for _ in range(min(BATCH, len(queue)))])

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Prechecker]:
        """Check what is fed, in the background, while the block runs (what is left queued, clean does)."""
        self._wake = asyncio.Event()
        task = asyncio.create_task(self._work(), name="tracegen-precheck")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self._wake = None
            self._queue.clear()

    # ---- serving -----------------------------------------------------------------------------------------
    def serves(self, filter_config: FilterConfig, answer_check: bool) -> bool:
        """Were the verdicts computed with these settings (else clean must not use them)?"""
        return answer_check == self.answer_check and filter_config == self.filter_config

    def serves_keys(self, dedup_config: DedupConfig) -> bool:
        """Were the dedup keys computed with this dedup configuration?"""
        return self.dedup_config is not None and dedup_config == self.dedup_config

    def verdict(self, line: bytes) -> Verdict | None:
        """The kept verdict of this exact line, or None."""
        return self._verdicts.get(line_key(line))
