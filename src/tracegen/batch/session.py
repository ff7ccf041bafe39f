"""The state of a batch session and what every step of it uses: the plan read ahead, the parts this
session tracks, the answer and failure writers (over the generation core, :class:`~tracegen.engine.core.Core`).
See :mod:`.runner` for the whole story; :mod:`.harvest` collects, :mod:`.runner` submits and polls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..engine import Progress, Reservation, RunDir
from ..engine.core import Core, Request
from ..engine.settings import EngineSettings
from ..engine.store import FAILED, REJECTED, failed_line
from ..records import Record
from .accounting import open_budget
from .api import BatchApi, BatchInfo
from .collect import Outcome
from .journal import Journal, PartState
from .parts import MAX_BYTES_PER_FILE, MAX_REQUESTS_PER_FILE, Item, read_part

__all__ = ["DEFAULT_POLL_INTERVAL_S", "BatchSession", "Checkpoint", "PartRun", "StageCallback"]

log = logging.getLogger("tracegen.batch")

#: ``checkpoint(step, part)`` is called right after each durable step: "intent" (journal), "leased" (ledger),
#: "uploaded", "created", "journaled" (collected, ledger not yet closed), "collected" (tests raise or exit
#: there to simulate a crash).
Checkpoint = Callable[[str, int], None]
StageCallback = Callable[[str], None]
DEFAULT_POLL_INTERVAL_S = 30.0
#: Batches listed on resume go back this far before the run's first journal line (clock skew), seconds.
LIST_SLACK_S = 3600


@dataclass
class PartRun:
    """An outstanding part, as this session tracks it."""

    state: PartState
    items: list[Item] | None
    res: Reservation | None
    """The in-memory reservation (an earlier session's part is held as one too); None once settled."""
    info: BatchInfo | None = None


def _epoch(iso: str | None) -> int:
    if not iso:
        return 0
    try:
        return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


class BatchSession(Core):
    """A batch-mode session's state over a run directory (see :class:`~.runner.BatchRunner`)."""

    batch = True

    def __init__(
        self,
        records: Iterable[Record],
        settings: EngineSettings,
        run_dir: RunDir,
        api: BatchApi,
        *,
        on_stage: StageCallback | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        on_batches: Callable[[list[dict[str, Any]]], None] | None = None,
        stop: asyncio.Event | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        max_requests_per_file: int = MAX_REQUESTS_PER_FILE,
        max_bytes_per_file: int = MAX_BYTES_PER_FILE,
        checkpoint: Checkpoint | None = None,
        total: int | None = None,
    ) -> None:
        if not 1 <= max_requests_per_file <= MAX_REQUESTS_PER_FILE:
            raise ValueError(f"max_requests_per_file must be in 1..{MAX_REQUESTS_PER_FILE}")
        if not 1 <= max_bytes_per_file <= MAX_BYTES_PER_FILE:
            raise ValueError(f"max_bytes_per_file must be in 1..{MAX_BYTES_PER_FILE}")
        super().__init__(settings, run_dir, total=total, on_progress=on_progress)
        self.rd = run_dir
        self.api = api
        self.on_stage = on_stage
        self.on_batches = on_batches
        self.stop_event = stop
        self.sleep = sleep
        self.poll_interval_s = poll_interval_s
        self.max_requests_per_file = max_requests_per_file
        self.max_bytes_per_file = max_bytes_per_file
        self.checkpoint = checkpoint
        self.plan_iter: Iterator[Record] | None = iter(records)
        self.lookahead: Item | None = None
        self.retry_queue: deque[Item] = deque()
        self.seen: set[bytes] = set()
        self.parts: dict[int, PartRun] = {}
        self.leftover: list[Record] = []
        """Records that ran out of batch attempts with a retryable error (for finish_online)."""
        self.stopping = False
        self.cancel_seen = False
        self.last_summary = ""
        self.poll_failures = 0
        # batch counters (the shared ones are :class:`~tracegen.engine.counters.Counters`')
        self.skipped_in_batches = 0
        self.unfinished = 0
        self.duplicates = 0
        self.n_expired = 0
        self.n_line_errors = 0
        self.batches_created = 0
        self.collected_usd = 0.0
        """Billed for the parts collected this session."""
        self.parts_collected = 0
        self.files_deleted = 0
        self.left: tuple[int, float] | None = None
        """At a budget stop: the requests no part holds and the sum of their worst cases (:meth:`_count_left`)."""
        self.failed_worst_usd = 0.0
        """Worst cases of the requests failed this session: a rerun sends them again (``to_finish``)."""
        self.drained = 0
        """Records of the plan read only by :meth:`_count_left` (not by the run)."""
        self.t0 = time.monotonic()
        self.journal = Journal(run_dir.path)
        self.budget, self.accounts, outstanding = open_budget(
            run_dir.ledger_path, self.journal, settings.limits, self.done.cost_usd
        )
        for n, res in outstanding.items():
            self.parts[n] = PartRun(self.journal.parts[n], None, res)

    # ---- budget -----------------------------------------------------------------------------------------
    def _settle(self, run: PartRun, usd: float, tokens: int) -> None:
        """The part is over (collected: ``usd`` billed; abandoned: 0): close its ledger session."""
        if run.res is None:
            return
        self.accounts.settle(self.budget, run.state, run.res, usd, tokens)
        run.res = None

    # ---- small helpers ---------------------------------------------------------------------------------
    def _stage(self, message: str) -> None:
        log.info("%s", message)
        if self.on_stage is not None:
            try:
                self.on_stage(message)
            except Exception:  # a display bug must not kill the run
                log.exception("on_stage callback failed")

    def _checkpoint(self, step: str, part: int) -> None:
        if self.checkpoint is not None:
            self.checkpoint(step, part)

    @property
    def run_id(self) -> str:
        return self.journal.ensure_run()

    def _metadata(self, part: int) -> dict[str, str]:
        return {"tracegen_run": self.run_id, "tracegen_part": str(part)}

    @property
    def _since(self) -> int:
        return max(0, _epoch(self.journal.run_time) - LIST_SLACK_S)

    def in_flight(self) -> list[PartRun]:
        return [r for r in self.parts.values() if r.state.outstanding and r.state.batch_id is not None]

    def _items(self, run: PartRun) -> list[Item]:
        if run.items is None:
            run.items = read_part(
                self.journal.part_path(run.state.part), self.teacher, self.pricing, self.encoding
            )
        return run.items

    # ---- the plan ----------------------------------------------------------------------------------------
    async def _peek(self) -> Item | None:
        if self.retry_queue:
            return self.retry_queue[0]
        if self.lookahead is not None:
            return self.lookahead
        while self.plan_iter is not None:
            rec = next(self.plan_iter, None)
            if rec is None:
                self.plan_iter = None
                break
            self.read += 1
            if self.read % 1024 == 0:
                await asyncio.sleep(0)  # a long run of done records must not starve the loop
            item = Item.make(rec, self.teacher, self.pricing, self.encoding)
            digest = item.digest
            if digest in self.done.keys:
                self.skipped_done += 1
                continue
            if digest in self.seen:
                self.skipped_in_batches += 1
                continue
            self.seen.add(digest)
            self.lookahead = item
            return item
        return None

    def _count_left(self) -> None:
        """At a budget stop: count the requests no part took (the queued resubmissions, the next record
        and the rest of the plan, less what is done or already in a part) and their worst cases at batch
        prices (stats.json ``to_finish``). Requests in open batches are not left: a rerun collects them.
        Reads the rest of the plan once, as the run would have had the budget allowed."""
        left = len(self.retry_queue) + (self.lookahead is not None)
        worst = sum(it.res_usd for it in self.retry_queue)
        worst += self.lookahead.res_usd if self.lookahead is not None else 0.0
        seen = set(self.seen)
        for rec in self.plan_iter or ():
            self.drained += 1
            req = Request(rec, self.teacher, self.pricing, self.encoding, batch=True)
            if req.digest in self.done.keys or req.digest in seen:
                continue
            seen.add(req.digest)
            left += 1
            worst += req.res_usd
        self.plan_iter = None
        self.left = (left, worst)

    def _take(self) -> None:
        if self.retry_queue:
            self.retry_queue.popleft()
        else:
            self.lookahead = None

    def _replace_head(self, item: Item) -> None:
        if self.retry_queue:
            self.retry_queue[0] = item
        else:
            self.lookahead = item

    def _usage(self, it: Item, oc: Outcome) -> tuple[int, int, float]:
        """Tokens and cost of one answer, its usage checked first (:mod:`tracegen.engine.usage`): impossible
        usage is charged at the worst case (prompt + the cap sent), a prompt mismatch at the larger count."""
        own_pt = it.req.prompt_tokens
        cap = it.cap or self.teacher.max_tokens  # a length retry sent a larger cap
        check = self.check_usage(oc, own_pt, cap)
        pricing = self.pricer.of(oc.model_returned)
        if check.anomaly is not None:
            log.warning("impossible usage in a batch answer (%s): charged at the worst case", check.anomaly)
            return check.prompt_tokens, check.completion_tokens, pricing.cost_usd(own_pt, cap)
        pt, ct = check.prompt_tokens, check.completion_tokens
        return pt, ct, pricing.cost_usd(pt, ct)

    def _keep_cut(self, it: Item) -> asyncio.Future[None]:
        """A length retry that cannot be made: record the first answer (billed), as online mode does."""
        assert it.cut is not None
        cut = dict(it.cut)
        it.cut = None
        oc = Outcome(
            "answer",
            content=cut.get("content"),
            finish_reason=cut.get("finish_reason"),
            model_returned=str(cut.get("model_returned") or ""),
        )
        return self._record(
            it, oc, int(cut["prompt_tokens"]), int(cut["completion_tokens"]), float(cut["cost_usd"])
        )

    def _record(self, it: Item, oc: Outcome, pt: int, ct: int, cost: float) -> asyncio.Future[None]:
        if it.cut is not None:  # a length retry: the first answer was billed too (as online)
            self.prompt_tokens += int(it.cut["prompt_tokens"])
            self.completion_tokens += int(it.cut["completion_tokens"])
            cost += float(it.cut["cost_usd"])
        which, line = self.answer_line(it.rec, it.key, oc, pt, ct, cost)
        self.done.add(it.key)
        if which == REJECTED:
            self.rejected += 1
        else:
            self.succeeded += 1
            if oc.finish_reason == "length":
                self.n_length += 1
                self.n_length_empty += not oc.content
        return self.writer.write(which, line)

    def _fail_future(self, it: Item, error: dict[str, Any], *, retryable: bool) -> asyncio.Future[None]:
        if it.cut is not None:  # the length retry failed: its first answer stands
            return self._keep_cut(it)
        self.failed += 1
        self.failed_worst_usd += it.res_usd
        if retryable:
            self.leftover.append(Record.from_dict(it.rec.to_dict()))
        return self.writer.write(FAILED, failed_line(it.key, it.rec, it.attempt, error, it.chain))

    async def _fail(self, it: Item, error: dict[str, Any], *, retryable: bool) -> None:
        it.chain.append(error)
        await self._fail_future(it, error, retryable=retryable)
