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
  ``max_attempts`` submissions, then go to failed.jsonl. Cancelled lines are left for a later run.
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
from collections.abc import Mapping
from typing import Any

from ..engine import Progress, Reservation, RunResult
from ..engine.budget import utc_now_iso
from ..engine.core import stop_reason_of
from ..errors import RunDirError, TracegenError
from .api import BatchCallError, BatchInfo, matching_batches
from .harvest import Harvest
from .parts import Item, Part, sha256_hex, write_part
from .report import progress, run_result, run_stats
from .rows import batch_row
from .session import DEFAULT_POLL_INTERVAL_S, Checkpoint, PartRun, StageCallback

__all__ = ["DEFAULT_POLL_INTERVAL_S", "BatchRunner", "Checkpoint", "StageCallback"]

log = logging.getLogger("tracegen.batch")

#: Consecutive polling rounds that may fail (after the API call's own retries) before the run stops.
MAX_POLL_FAILURES = 5


class BatchRunner(Harvest):
    """One batch-mode session over a run directory; :meth:`run` does it all. See the module docstring."""

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
                    self.teacher,
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
        cap = self.limits.batch_max_in_flight
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
        run = PartRun(self.journal.parts[n], part.items, res)
        self.parts[n] = run
        self._checkpoint("intent", n)
        self.accounts.lease(run.state)  # durable before anything is uploaded
        self.attempts += len(part.items)
        self.n_retries += sum(1 for it in part.items if it.attempt > 1)
        self._checkpoint("leased", n)
        await self._upload_and_create(run, data)

    async def _upload_and_create(self, run: PartRun, data: bytes) -> None:
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

    async def _abandon(self, run: PartRun, reason: str, error: dict[str, Any]) -> None:
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

    async def _resolve(self, run: PartRun, listed: list[BatchInfo]) -> None:
        p = run.state
        n = p.part
        meta = self._metadata(n)
        found = matching_batches(listed, meta, p.file_id)
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
    async def _poll(self) -> list[PartRun]:
        runs = self.in_flight()
        sem = asyncio.Semaphore(8)

        failures: list[BatchCallError] = []

        async def one(run: PartRun) -> None:
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
        self.emit()

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
                    if self.stop_reason == "budget":
                        self._count_left()
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
        except TracegenError as e:
            self.fatal = e
            self.stop_reason = stop_reason_of(e)
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
        def close() -> None:
            close_plan = getattr(self.plan_iter, "close", None)
            if callable(close_plan):  # a generator over plan.jsonl holds the file open
                close_plan()
            self.accounts.ledger.close()  # parts in flight stay counted at their worst case, by their sessions
            self.journal.close()

        return await self.finish_files(close, lambda: self.done)

    # ---- reporting ---------------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """stats.json: the online runner's keys plus a ``batch`` section."""
        return run_stats(self)

    def snapshot(self) -> Progress:
        """A :class:`Progress` for the CLI's live display."""
        return progress(self)

    def elapsed_s(self) -> float:
        return time.monotonic() - self.t0

    def result(self, stats: Mapping[str, Any]) -> RunResult:
        return run_result(self, stats)
