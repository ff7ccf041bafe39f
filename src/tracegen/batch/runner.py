"""The Batch API step: the same guarantees as online mode, at Batch API prices.

    plan ─► parts (≤ limits, reserved at batch prices) ─► upload ─► create ─► poll ─► collect ─► resubmit

- **Done set.** A record whose request key is in traces.jsonl (or rejected at generate) is never sent again,
  whichever mode answered it; a key already in a part of this run directory is never put in another part
  until that part is collected. Collecting the same output twice writes nothing twice.
- **Durability.** Every step is in ``batches.jsonl`` (see :mod:`.journal`) the moment it exists. On resume,
  created batches are polled again; a part with no batch id is found by listing batches (metadata
  ``tracegen_run`` + ``tracegen_part``) or its uploaded file is reused, so no batch is orphaned or doubled.
- **Budget.** Each request's worst case (prompt + max_tokens at *batch* prices) is reserved through the
  engine's :class:`~tracegen.engine.Budget` before its part is created; a part takes only the requests that
  fit. The reservation is made durable in ledger.jsonl as a session of its own, one per part (``open`` +
  ``lease`` of the part's worst case, written before the upload), so every reader of the ledger -- online
  mode included -- counts a batch in flight at its worst case, across crashes and sessions. Collection
  closes that session with the cost billed in the output file (unanswered requests are thereby released),
  after the journal says "collected"; a resume repairs a crash between the two (:mod:`.accounting`).
- **Collect.** Answers go to traces.jsonl (``content_filter`` to rejected.jsonl) with the same fields as the
  online runner; failed lines are resubmitted while retryable (429/5xx, expired, token limit) up to
  ``config.max_attempts`` submissions, then go to failed.jsonl. Cancelled lines are left for a later run.
- **retry_length.** An answer cut by length is resubmitted once with 2x max_tokens, carrying the billed
  first answer (kept if the retry fails or no longer fits; its cost adds to the record's, as online). The
  retries of a part are written to ``batches/part-N.length.jsonl`` before its "collected" line, so a resume
  resubmits them instead of the whole request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .._fileio import atomic_write_bytes
from ..config import RunConfig
from ..engine import Progress, Reservation, ResultWriter, RunDir, RunResult
from ..engine.budget import utc_now_iso
from ..engine.store import FAILED, REJECTED, DoneSet, answer_line, failed_line
from ..engine.usage import check_usage
from ..errors import EndpointError, RunDirError, TracegenError
from ..planning.prices import (
    Pricing,
    ResolvedPrices,
    answered_model_problem,
    answered_pricing,
    resolve_prices,
)
from ..planning.tokens import count_chat_tokens, count_text_tokens, encoding_for_model
from ..records import Record
from .accounting import open_budget
from .api import BatchApi, BatchCallError, BatchInfo
from .collect import Outcome, batch_failure, missing_outcome, parse_file
from .journal import Journal, PartState
from .parts import MAX_BYTES_PER_FILE, MAX_REQUESTS_PER_FILE, Item, Part, read_part, sha256_hex, write_part
from .report import progress, run_result, run_stats
from .rows import batch_row

__all__ = ["DEFAULT_POLL_INTERVAL_S", "BatchRunner", "Checkpoint"]

log = logging.getLogger("tracegen.batch")

#: ``checkpoint(step, part)`` is called right after each durable step: "intent" (journal), "leased" (ledger),
#: "uploaded", "created", "journaled" (collected, ledger not yet closed), "collected" (tests raise or exit
#: there to simulate a crash).
Checkpoint = Callable[[str, int], None]
StageCallback = Callable[[str], None]
DEFAULT_POLL_INTERVAL_S = 30.0
#: Batches listed on resume go back this far before the run's first journal line (clock skew), seconds.
LIST_SLACK_S = 3600
#: Consecutive polling rounds that may fail (after the API call's own retries) before the run stops.
MAX_POLL_FAILURES = 5


@dataclass
class _PartRun:
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


def _write_atomic(path: Path, data: bytes) -> None:
    try:
        atomic_write_bytes(path, data)
    except OSError as e:
        raise RunDirError(
            f"{path}: cannot write ({e.strerror}); free disk space, then rerun the same command"
        ) from None


class BatchRunner:
    """One batch-mode session over a run directory; :meth:`run` does it all. See the module docstring."""

    def __init__(
        self,
        records: Iterable[Record],
        config: RunConfig,
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
        self.config = config
        self.rd = run_dir
        self.api = api
        self.on_stage = on_stage
        self.on_progress = on_progress
        self.on_batches = on_batches
        self.stop_event = stop
        self.sleep = sleep
        self.poll_interval_s = poll_interval_s
        self.max_requests_per_file = max_requests_per_file
        self.max_bytes_per_file = max_bytes_per_file
        self.checkpoint = checkpoint
        self.total = total
        self.encoding = encoding_for_model(config.model, config.price_file)
        self.prices: ResolvedPrices | None = None
        self.answered: dict[str, tuple[Pricing, str | None]] = {}
        self.model_problem: str | None = None
        try:
            self.prices = resolve_prices(
                config.model,
                input_price=config.input_price,
                output_price=config.output_price,
                price_file=config.price_file,
            )
            self.pricing = self.prices.batch
        except TracegenError:
            if config.budget_usd is not None:
                raise
            log.warning("no price known for %s: costs are recorded as 0", config.model)
            self.pricing = Pricing(0.0, 0.0)
        self.plan_iter: Iterator[Record] | None = iter(records)
        self.lookahead: Item | None = None
        self.retry_queue: deque[Item] = deque()
        self.seen: set[bytes] = set()
        self.parts: dict[int, _PartRun] = {}
        self.leftover: list[Record] = []
        """Records that ran out of batch attempts with a retryable error (for finish_online)."""
        self.stopping = False
        self.cancel_seen = False
        self.stop_reason: str | None = None
        self.fatal: BaseException | None = None
        self.last_summary = ""
        self.poll_failures = 0
        # counters
        self.read = 0
        self.skipped_done = 0
        self.skipped_in_batches = 0
        self.attempts = 0
        self.resubmitted = 0
        self.succeeded = 0
        self.failed = 0
        self.rejected = 0
        self.unfinished = 0
        self.duplicates = 0
        self.n_length = 0
        self.usage_anomalies = 0
        self.usage_mismatches = 0
        self.n_expired = 0
        self.n_line_errors = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.reasoning_tokens = 0
        self.cached_tokens = 0
        self.n_length_empty = 0
        self.cost_usd = 0.0
        self.batches_created = 0
        self.collected_usd = 0.0
        """Billed for the parts collected this session."""
        self.parts_collected = 0
        self.files_deleted = 0
        self.started_at = utc_now_iso()
        self.t0 = time.monotonic()
        # run-directory state (read now, so errors surface before anything is sent)
        self.done: DoneSet = run_dir.load_done()
        self.journal = Journal(run_dir.path)
        self.budget, self.accounts, outstanding = open_budget(
            run_dir.ledger_path, self.journal, config, self.done.cost_usd
        )
        for n, res in outstanding.items():
            self.parts[n] = _PartRun(self.journal.parts[n], None, res)
        self.writer = ResultWriter(run_dir)

    # ---- budget -----------------------------------------------------------------------------------------
    def _settle(self, run: _PartRun, usd: float, tokens: int) -> None:
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

    def in_flight(self) -> list[_PartRun]:
        return [r for r in self.parts.values() if r.state.outstanding and r.state.batch_id is not None]

    def _items(self, run: _PartRun) -> list[Item]:
        if run.items is None:
            run.items = read_part(
                self.journal.part_path(run.state.part), self.config, self.pricing, self.encoding
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
            item = Item.make(rec, self.config, self.pricing, self.encoding)
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

    # ---- submitting ----------------------------------------------------------------------------------
    async def _build(self) -> tuple[Part, Reservation] | None:
        """The next part: requests that fit the file limits and the budget now (None: nothing fits)."""
        items: list[Item] = []
        ids: set[str] = set()
        size = 0
        usd = 0.0
        tokens = 0
        while len(items) < self.max_requests_per_file:
            item = await self._peek()
            if item is None:
                break
            if item.custom_id in ids:  # two records with one id: make the custom_id unique in this file
                n = 1
                while f"{item.rec.id}~{n}" in ids:
                    n += 1
                renamed = Item.make(
                    item.rec,
                    self.config,
                    self.pricing,
                    self.encoding,
                    attempt=item.attempt,
                    custom_id=f"{item.rec.id}~{n}",
                )
                renamed.chain = item.chain
                item = renamed
                self._replace_head(item)
            if len(item.line) > self.max_bytes_per_file:
                self._take()
                await self._fail(
                    item,
                    {
                        "type": "TooLarge",
                        "status": None,
                        "code": "request_too_large",
                        "message": f"the request is {len(item.line)} bytes, more than a batch input file may "
                        f"hold ({self.max_bytes_per_file}); answer it with --mode online",
                    },
                    retryable=False,
                )
                continue
            if size + len(item.line) > self.max_bytes_per_file:
                break
            res = self.budget.try_reserve(item.res_usd, item.res_tokens, new_request=item.attempt == 1)
            if res is None:
                break
            self._take()
            items.append(item)
            ids.add(item.custom_id)
            size += len(item.line)
            usd += res.usd
            tokens += res.tokens
        if not items:
            return None
        return Part(self.journal.next_part(), items), Reservation(usd, tokens)

    def _at_batch_cap(self) -> bool:
        """``batch_max_in_flight`` batches are outstanding: submit the next when one is collected."""
        cap = self.config.batch_max_in_flight
        return cap is not None and sum(1 for r in self.parts.values() if r.state.outstanding) >= cap

    async def _submit_ready(self) -> None:
        while not (self.stopping or self.cancel_seen):
            if self.stop_event is not None and self.stop_event.is_set():
                self._begin_stop()
                return
            if self._at_batch_cap():
                return
            built = await self._build()
            if built is None:
                return
            part, res = built
            await self._submit(part, res)

    async def _submit(self, part: Part, res: Reservation) -> None:
        n = part.number
        data = part.data
        filename = f"tracegen-{self.run_id[:12]}-part-{n:05d}.jsonl"
        try:
            write_part(self.journal.part_path(n), part.items)
            self.journal.append(
                {
                    "event": "part",
                    "part": n,
                    "session": uuid.uuid4().hex,
                    "requests": len(part.items),
                    "bytes": len(data),
                    "sha256": sha256_hex(data),
                    "reserve_usd": res.usd,
                    "reserve_tokens": res.tokens,
                    "filename": filename,
                    "time": utc_now_iso(),
                }
            )
        except BaseException:
            self.budget.release(res)  # no part exists: nothing can be billed for it
            raise
        run = _PartRun(self.journal.parts[n], part.items, res)
        self.parts[n] = run
        self._checkpoint("intent", n)
        self.accounts.lease(run.state)  # durable before anything is uploaded
        self.attempts += len(part.items)
        self.resubmitted += sum(1 for it in part.items if it.attempt > 1)
        self._checkpoint("leased", n)
        await self._upload_and_create(run, data)

    async def _upload_and_create(self, run: _PartRun, data: bytes) -> None:
        p = run.state
        n = p.part
        if p.file_id is None:
            try:
                file_id = await self.api.upload(p.filename, data)
            except BatchCallError as e:
                if e.rejected:
                    await self._abandon(run, f"upload refused: {e.cause}", e.cause.describe())
                    return
                raise
            self.journal.append({"event": "uploaded", "part": n, "file_id": file_id})
            self._checkpoint("uploaded", n)
        assert p.file_id is not None
        try:
            info = await self.api.create(p.file_id, self._metadata(n), self._since)
        except BatchCallError as e:
            if e.rejected:
                await self._abandon(run, f"batch creation refused: {e.cause}", e.cause.describe())
                with contextlib.suppress(TracegenError):
                    await self.api.delete_file(p.file_id)
                return
            raise
        self.journal.append({"event": "created", "part": n, "batch_id": info.id})
        self.batches_created += 1
        run.info = info
        self._checkpoint("created", n)
        self._stage(
            f"batch part {n}: {p.requests:,} requests in {info.id} "
            f"(worst case ${p.reserve_usd:,.4f} at batch prices reserved)"
        )

    async def _abandon(self, run: _PartRun, reason: str, error: dict[str, Any]) -> None:
        """The endpoint refused the part for sure: nothing billed, its requests fail (not retried)."""
        p = run.state
        items = self._items(run)
        self.journal.append({"event": "abandoned", "part": p.part, "reason": reason})
        self._settle(run, 0.0, 0)
        self._stage(f"batch part {p.part} abandoned: {reason}")
        for it in items:
            if it.digest not in self.done.keys:
                await self._fail(it, error, retryable=False)

    # ---- resume ----------------------------------------------------------------------------------------
    async def _resume(self) -> None:
        """Claim the keys of outstanding parts; give every part with no batch id its one batch."""
        for n in sorted(self.parts):
            run = self.parts[n]
            for it in self._items(run):
                self.seen.add(it.digest)
        self._resume_length_retries()
        for p in list(self.journal.parts.values()):  # collected, then killed before its files were deleted
            if p.done == "collected" and not p.cleaned:
                await self._clean(p)
        pending = [r for r in self.parts.values() if r.state.batch_id is None]
        if self.parts:
            self._stage(
                f"resuming: {len(self.parts)} batch part(s) of an earlier session "
                f"({len(pending)} without a batch yet)"
            )
        if not pending:
            return
        listed = await self.api.list_batches(since=self._since)
        for run in sorted(pending, key=lambda r: r.state.part):
            await self._resolve(run, listed)

    async def _resolve(self, run: _PartRun, listed: list[BatchInfo]) -> None:
        p = run.state
        n = p.part
        meta = self._metadata(n)
        found = sorted(
            (
                b
                for b in listed
                if all(b.metadata.get(k) == v for k, v in meta.items())
                or (p.file_id is not None and b.input_file_id == p.file_id)
            ),
            key=lambda b: (b.created_at, b.id),
        )
        if found:
            first = found[0]
            self.journal.append({"event": "created", "part": n, "batch_id": first.id, "recovered": True})
            run.info = first
            self._stage(f"batch part {n}: found its batch {first.id} (created before the interruption)")
            for extra in found[1:]:  # cannot happen through tracegen; never pay twice if it did
                log.warning("batch %s duplicates part %d (%s): cancelling it", extra.id, n, first.id)
                if not extra.terminal:
                    await self.api.cancel(extra.id)
            return
        data = b"".join(it.line for it in self._items(run))
        if sha256_hex(data) != p.sha256:
            raise RunDirError(
                f"{self.journal.part_path(n)}: the requests of batch part {n} differ from those recorded in "
                f"{self.journal.path.name} (teacher settings changed?); rerun with this run directory's settings"
            )
        if p.file_id is not None and not await self.api.file_exists(p.file_id):
            self.journal.append({"event": "uploaded", "part": n, "file_id": None})
        if p.file_id is None:
            ids = await self.api.find_files(p.filename, len(data))
            if ids:
                self.journal.append({"event": "uploaded", "part": n, "file_id": ids[0], "recovered": True})
                for extra_id in ids[1:]:
                    await self.api.delete_file(extra_id)  # a second upload of the same part: clean it up
        self._stage(f"batch part {n}: creating the batch an interruption left out")
        await self._upload_and_create(run, data)

    # ---- polling -----------------------------------------------------------------------------------------
    async def _poll(self) -> list[_PartRun]:
        runs = self.in_flight()
        sem = asyncio.Semaphore(8)

        failures: list[BatchCallError] = []

        async def one(run: _PartRun) -> None:
            assert run.state.batch_id is not None
            async with sem:
                try:
                    run.info = await self.api.retrieve(run.state.batch_id)
                except BatchCallError as e:  # a network blip must not end a day-long run: poll again later
                    failures.append(e)

        await asyncio.gather(*(one(r) for r in runs))
        if failures:
            self.poll_failures += 1
            if self.poll_failures >= MAX_POLL_FAILURES:
                raise failures[0]
            log.warning("polling failed (%s); trying again in %g s", failures[0], self.poll_interval_s)
        else:
            self.poll_failures = 0
        for r in runs:
            assert r.info is not None
            if r.info.status in ("cancelling", "cancelled") and not self.cancel_seen:
                self.cancel_seen = True
                self._stage(
                    "a batch of this run was cancelled: collecting what was answered, submitting nothing new"
                )
        self._report()
        return [r for r in runs if r.info is not None and r.info.terminal]

    def rows(self) -> list[dict[str, Any]]:
        """Status rows of every part this session knows (``tracegen batch status`` shape)."""
        return [
            batch_row(self.journal.parts[n], self.parts[n].info if n in self.parts else None)
            for n in sorted(self.journal.parts)
        ]

    def _report(self) -> None:
        rows = [batch_row(r.state, r.info) for r in self.in_flight()]
        summary = ", ".join(f"part {r['part']} {r['status']} {r['completed']}/{r['total']}" for r in rows)
        if summary and summary != self.last_summary:
            self.last_summary = summary
            self._stage(f"batches: {summary}")
        if self.on_batches is not None:
            try:
                self.on_batches(self.rows())
            except Exception:
                log.exception("on_batches callback failed")
        self._emit()

    async def _wait(self) -> None:
        """Sleep one poll interval, or less if the run is asked to stop."""
        if self.stop_event is None:
            await self.sleep(self.poll_interval_s)
            return
        nap = asyncio.ensure_future(self.sleep(self.poll_interval_s))
        stop = asyncio.ensure_future(self.stop_event.wait())
        try:
            await asyncio.wait({nap, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (nap, stop):
                t.cancel()
        if self.stop_event.is_set():
            self._begin_stop()

    def _begin_stop(self) -> None:
        if not self.stopping:
            self.stopping = True
            self.stop_reason = self.stop_reason or "interrupted"
            self._stage("stopping: batches in flight keep running; rerun the same command to collect them")

    # ---- collecting ----------------------------------------------------------------------------------
    async def _fetch(self, file_id: str, path: Path) -> bytes:
        """A result file, from the local copy when an earlier collection already downloaded it."""
        if path.exists():
            return path.read_bytes()
        data = await self.api.download(file_id)
        _write_atomic(path, data)
        return data

    async def _collect(self, run: _PartRun) -> None:
        p, info = run.state, run.info
        assert info is not None
        n = p.part
        outcomes: dict[str, Outcome] = {}
        base = self.journal.part_path(n)
        for file_id, suffix in (
            (info.error_file_id, ".errors.jsonl"),
            (info.output_file_id, ".output.jsonl"),
        ):
            if file_id:
                data = await self._fetch(file_id, base.with_name(base.stem + suffix))
                for cid, oc in parse_file(data):
                    if cid not in outcomes or oc.kind == "answer":
                        outcomes[cid] = oc
        whole = batch_failure(info.errors, info.status) if info.status == "failed" else None
        billed_usd = 0.0
        billed_tokens = 0
        counts = {
            "answered": 0,
            "rejected": 0,
            "given_up": 0,
            "resubmit": 0,
            "cancelled": 0,
            "length_retry": 0,
        }
        writes: list[asyncio.Future[None]] = []
        requeue: list[Item] = []
        length_retries: list[Item] = []
        for it in self._items(run):
            oc = outcomes.get(it.custom_id) or missing_outcome(info.status, whole)
            if oc.kind == "answer":
                pt, ct, cost = self._usage(it, oc)
                billed_usd += cost
                billed_tokens += pt + ct
                if it.digest in self.done.keys:
                    self.duplicates += 1  # collected before (a crash mid-collection): never written twice
                    continue
                if self._length_retry(it, oc):
                    self.n_length += 1
                    length_retries.append(self._lengthened(it, oc, pt, ct, cost))
                    counts["length_retry"] += 1
                    continue
                writes.append(self._record(it, oc, pt, ct, cost))
                counts["rejected" if oc.finish_reason == "content_filter" else "answered"] += 1
            elif oc.kind == "cancelled":
                self.unfinished += 1
                counts["cancelled"] += 1
            else:
                self.n_expired += oc.kind == "expired"
                self.n_line_errors += oc.kind == "error"
                if it.digest in self.done.keys:
                    continue
                if (
                    oc.retryable
                    and it.attempt < self.config.max_attempts
                    and not (self.stopping or self.cancel_seen)
                ):
                    retry = Item.make(
                        it.rec,
                        self.config,
                        self.pricing,
                        self.encoding,
                        attempt=it.attempt + 1,
                        cap=it.cap,
                        cut=it.cut,
                    )
                    retry.chain = [*it.chain, oc.error]
                    requeue.append(retry)
                    counts["resubmit"] += 1
                else:
                    it.chain.append(oc.error)
                    writes.append(self._fail_future(it, oc.error, retryable=oc.retryable))
                    counts["given_up"] += 1
        if writes:
            await asyncio.gather(*writes)
        if length_retries:  # durable before "collected": a resume resubmits them, never the whole request
            write_part(self._length_path(n), length_retries)
        self.journal.append(
            {
                "event": "collected",
                "part": n,
                "batch_id": info.id,
                "output_file_id": info.output_file_id,
                "error_file_id": info.error_file_id,
                "status": info.status,
                "total": info.total,
                "completed": info.completed,
                "failed": info.failed,
                "cost_usd": billed_usd,
                "tokens": billed_tokens,
                **counts,
                "time": utc_now_iso(),
            }
        )
        self._checkpoint("journaled", n)
        self.collected_usd += billed_usd
        self._settle(run, billed_usd, billed_tokens)  # after the journal's line: a resume repairs a crash
        run.items = None
        self.parts_collected += 1
        self.retry_queue.extend(requeue)
        self.retry_queue.extend(length_retries)
        await self._clean(p)
        self._stage(
            f"batch part {n} {info.status}: {counts['answered']} answered, {counts['rejected']} rejected, "
            f"{counts['given_up']} failed, {counts['resubmit']} to resubmit, {counts['length_retry']} cut by "
            f"length to retry, {counts['cancelled']} cancelled (${billed_usd:,.4f})"
        )
        self._checkpoint("collected", n)
        if self.model_problem is not None:
            raise EndpointError(self.model_problem)

    async def _clean(self, p: PartState) -> None:
        """Delete our input, output and error files of a collected part on the provider (they count
        against the organisation's storage), unless ``batch_keep_files``. Local copies stay in batches/."""
        if self.config.batch_keep_files or p.cleaned or p.done != "collected":
            return
        ids = [i for i in (p.file_id, p.final.get("output_file_id"), p.final.get("error_file_id")) if i]
        try:
            for file_id in ids:
                await self.api.delete_file(str(file_id))
        except TracegenError as e:  # storage, not money: never stop a run for it; a rerun tries again
            log.warning("batch part %d: could not delete its files on the provider (%s)", p.part, e)
            return
        self.journal.append({"event": "cleaned", "part": p.part, "file_ids": ids})
        self.files_deleted += len(ids)

    def _usage(self, it: Item, oc: Outcome) -> tuple[int, int, float]:
        """Tokens and cost of one answer, its usage checked first (:mod:`tracegen.engine.usage`): impossible
        usage is charged at the worst case (prompt + the cap sent), a prompt mismatch at the larger count."""
        own_pt = it.rec.prompt_tokens or count_chat_tokens(it.rec.messages(), self.encoding)
        own_ct = count_text_tokens(oc.content or "", self.encoding) if oc.completion_tokens is None else 0
        cap = it.cap or self.config.max_tokens  # a length retry sent a larger cap
        check = check_usage(
            oc.prompt_tokens,
            oc.completion_tokens,
            problem=oc.usage_problem,
            own_prompt_tokens=own_pt,
            own_completion_tokens=own_ct,
            cap_tokens=cap,
        )
        pricing = self._pricing_of(oc.model_returned)
        if check.mismatch is not None:
            self.usage_mismatches += 1
        if check.anomaly is not None:
            self.usage_anomalies += 1
            log.warning("impossible usage in a batch answer (%s): charged at the worst case", check.anomaly)
            return check.prompt_tokens, check.completion_tokens, pricing.cost_usd(own_pt, cap)
        pt, ct = check.prompt_tokens, check.completion_tokens
        return pt, ct, pricing.cost_usd(pt, ct)

    def _pricing_of(self, returned: str) -> Pricing:
        """The batch pricing an answer from ``returned`` bills at; notes a model priced above the reserved."""
        got = self.answered.get(returned)
        if got is None:
            if self.prices is None:
                got = (self.pricing, None)
            else:
                pf = self.config.price_file
                got = (
                    answered_pricing(self.prices, returned, batch=True, price_file=pf),
                    answered_model_problem(self.prices, returned, batch=True, price_file=pf),
                )
            self.answered[returned] = got
        if got[1] is not None and self.model_problem is None:
            self.model_problem = got[1]
        return got[0]

    # ---- retry_length ----------------------------------------------------------------------------------
    def _length_path(self, part: int) -> Path:
        """Length retries of a collected part (its answers cut by length), written before "collected"."""
        base = self.journal.part_path(part)
        return base.with_name(base.stem + ".length.jsonl")

    def _length_retry(self, it: Item, oc: Outcome) -> bool:
        """Retry this answer with a larger cap? (``retry_length``, once, as the online runner does)."""
        return (
            oc.finish_reason == "length"
            and self.config.retry_length
            and it.cap is None
            and not (self.stopping or self.cancel_seen)
        )

    def _lengthened(self, it: Item, oc: Outcome, pt: int, ct: int, cost: float) -> Item:
        """The length retry of ``it``: 2x max_tokens, carrying the billed first answer."""
        cut = {
            "content": oc.content,
            "finish_reason": oc.finish_reason,
            "model_returned": oc.model_returned,
            "prompt_tokens": pt,
            "completion_tokens": ct,
            "cost_usd": cost,
        }
        retry = Item.make(
            it.rec,
            self.config,
            self.pricing,
            self.encoding,
            attempt=it.attempt + 1,
            cap=self.config.max_tokens * 2,
            cut=cut,
        )
        retry.chain = list(it.chain)
        return retry

    def _resume_length_retries(self) -> None:
        """Length retries of collected parts that no later part answered or holds: queue them again."""
        for n in sorted(self.journal.parts):
            p = self.journal.parts[n]
            path = self._length_path(n)
            if p.done != "collected" or not path.exists():
                continue
            for it in read_part(path, self.config, self.pricing, self.encoding):
                if it.digest in self.done.keys or it.digest in self.seen:
                    continue
                self.seen.add(it.digest)
                self.retry_queue.append(it)

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

    async def _keep_cut_answers(self) -> None:
        """The run stops with length retries queued (no room): keep their first answers."""
        kept = [self._keep_cut(it) for it in self.retry_queue if it.cut is not None]
        if kept:
            self.retry_queue = deque(it for it in self.retry_queue if it.cap is None)
            await asyncio.gather(*kept)

    def _record(self, it: Item, oc: Outcome, pt: int, ct: int, cost: float) -> asyncio.Future[None]:
        if it.cut is not None:  # a length retry: the first answer was billed too (as online)
            self.prompt_tokens += int(it.cut["prompt_tokens"])
            self.completion_tokens += int(it.cut["completion_tokens"])
            cost += float(it.cut["cost_usd"])
        which, line = answer_line(
            it.rec,
            it.key,
            oc,
            model=self.config.model,
            prompt_tokens=pt,
            completion_tokens=ct,
            cost_usd=cost,
            reasoning_tokens=oc.reasoning_tokens or 0,
        )
        self.prompt_tokens += pt
        self.completion_tokens += ct
        self.reasoning_tokens += oc.reasoning_tokens or 0
        self.cached_tokens += oc.cached_tokens or 0
        self.cost_usd += cost
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
        if retryable:
            self.leftover.append(Record.from_dict(it.rec.to_dict()))
        return self.writer.write(FAILED, failed_line(it.key, it.rec, it.attempt, error, it.chain))

    async def _fail(self, it: Item, error: dict[str, Any], *, retryable: bool) -> None:
        it.chain.append(error)
        await self._fail_future(it, error, retryable=retryable)

    # ---- the run -------------------------------------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            if self.stop_event is not None and self.stop_event.is_set():
                self._begin_stop()
            if not (self.stopping or self.cancel_seen):
                await self._submit_ready()
            if self.stopping:
                return
            if not self.in_flight():
                if self.cancel_seen:
                    self.stop_reason = "interrupted"
                elif await self._peek() is None:
                    self.stop_reason = "completed"
                else:
                    self.stop_reason = self.budget.exhausted or "budget"
                    await self._keep_cut_answers()
                return
            finished = await self._poll()
            for run in finished:
                await self._collect(run)
            if not finished:
                await self._wait()

    async def run(self) -> RunResult:
        """Resume, submit, poll and collect until done, stopped or out of budget; then write stats.json."""
        cancelled = False
        try:
            await self.writer.start()
            self.journal.ensure_run()
            await self._resume()
            await self._loop()
        except asyncio.CancelledError:
            cancelled = True
            self.stop_reason = "interrupted"
        except RunDirError as e:
            self.fatal = e
            self.stop_reason = "run_dir"
        except TracegenError as e:
            self.fatal = e
            self.stop_reason = _reason_of(e)
        except BaseException as e:  # a bug or a test's simulated crash: still shut down cleanly
            self.fatal = e
            self.stop_reason = "interrupted"
        stats = await self._finish()
        if self.fatal is not None:
            raise self.fatal
        if cancelled:
            raise asyncio.CancelledError
        return self.result(stats)

    async def _finish(self) -> dict[str, Any]:
        errors: list[TracegenError] = []
        await self.writer.close()
        if self.writer.error is not None and self.fatal is None:
            self.fatal = self.writer.error
            self.stop_reason = "run_dir"
        close_plan = getattr(self.plan_iter, "close", None)
        if callable(close_plan):  # a generator over plan.jsonl holds the file open
            close_plan()
        self.accounts.ledger.close()  # parts in flight stay counted at their worst case, by their own sessions
        if self.writer.error is None:
            try:
                self.rd.compact_failed(self.done)
            except RunDirError as e:
                errors.append(e)
        self.journal.close()
        stats = self.stats()
        try:
            self.rd.write_stats(stats)
        except RunDirError as e:
            errors.append(e)
        self._emit()
        if errors and self.fatal is None:
            self.fatal = errors[0]
        return stats

    # ---- reporting ---------------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """stats.json: the online runner's keys plus a ``batch`` section."""
        return run_stats(self)

    def snapshot(self) -> Progress:
        """A :class:`Progress` for the CLI's live display."""
        return progress(self)

    def _emit(self) -> None:
        if self.on_progress is not None:
            try:
                self.on_progress(self.snapshot())
            except Exception:
                log.exception("on_progress callback failed")

    def result(self, stats: Mapping[str, Any]) -> RunResult:
        return run_result(self, stats)


def _reason_of(e: TracegenError) -> str:
    from ..errors import AuthError, QuotaError

    if isinstance(e, AuthError):
        return "auth"
    if isinstance(e, QuotaError):
        return "quota"
    return "endpoint"
