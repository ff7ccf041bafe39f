"""Collecting a finished batch: its output and error files read into traces, rejects, failures and
resubmissions; length retries (``retry_length``); the provider's files deleted once collected.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from pathlib import Path
from typing import Any

from ..engine.budget import utc_now_iso
from ..errors import EndpointError, RunDirError, TracegenError
from ..rundir import atomic_write_bytes
from .collect import Outcome, batch_failure, missing_outcome, parse_file
from .journal import PartState
from .parts import Item, read_part, write_part
from .session import BatchSession, PartRun

__all__ = ["Harvest"]

log = logging.getLogger("tracegen.batch")


def _write_atomic(path: Path, data: bytes) -> None:
    try:
        atomic_write_bytes(path, data)
    except OSError as e:
        raise RunDirError(
            f"{path}: cannot write ({e.strerror}); free disk space, then rerun the same command"
        ) from None


class Harvest(BatchSession):
    """The collecting half of a batch session (:class:`~.runner.BatchRunner` adds submitting and polling)."""

    # ---- collecting ----------------------------------------------------------------------------------
    async def _fetch(self, file_id: str, path: Path) -> bytes:
        """A result file, from the local copy when an earlier collection already downloaded it."""
        if path.exists():
            return path.read_bytes()
        data = await self.api.download(file_id)
        _write_atomic(path, data)
        return data

    async def _collect(self, run: PartRun) -> None:
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
                    and it.attempt < self.limits.max_attempts
                    and not (self.stopping or self.cancel_seen)
                ):
                    retry = self._next_attempt(it, it.cap, it.cut, [*it.chain, oc.error])
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
        if self.pricer.model_problem is not None:
            raise EndpointError(self.pricer.model_problem)

    async def _clean(self, p: PartState) -> None:
        """Delete our input, output and error files of a collected part on the provider (they count
        against the organisation's storage), unless ``batch_keep_files``. Local copies stay in batches/."""
        if self.limits.batch_keep_files or p.cleaned or p.done != "collected":
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

    # ---- retry_length ----------------------------------------------------------------------------------
    def _length_path(self, part: int) -> Path:
        """Length retries of a collected part (its answers cut by length), written before "collected"."""
        base = self.journal.part_path(part)
        return base.with_name(base.stem + ".length.jsonl")

    def _length_retry(self, it: Item, oc: Outcome) -> bool:
        """Retry this answer with a larger cap? (``retry_length``, once, as the online runner does)."""
        return (
            oc.finish_reason == "length"
            and self.limits.retry_length
            and it.cap is None
            and not (self.stopping or self.cancel_seen)
        )

    def _next_attempt(
        self, it: Item, cap: int | None, cut: dict[str, Any] | None, chain: list[dict[str, Any]]
    ) -> Item:
        """``it`` submitted once more (``cap``/``cut``: a length retry), with the errors so far."""
        retry = Item.make(
            it.rec, self.teacher, self.pricing, self.encoding, attempt=it.attempt + 1, cap=cap, cut=cut
        )
        retry.chain = chain
        return retry

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
        return self._next_attempt(it, self.teacher.max_tokens * 2, cut, list(it.chain))

    def _resume_length_retries(self) -> None:
        """Length retries of collected parts that no later part answered or holds: queue them again."""
        for n in sorted(self.journal.parts):
            p = self.journal.parts[n]
            path = self._length_path(n)
            if p.done != "collected" or not path.exists():
                continue
            for it in read_part(path, self.teacher, self.pricing, self.encoding):
                if it.digest in self.done.keys or it.digest in self.seen:
                    continue
                self.seen.add(it.digest)
                self.retry_queue.append(it)

    async def _keep_cut_answers(self) -> None:
        """The run stops with length retries queued (no room): keep their first answers."""
        kept = [self._keep_cut(it) for it in self.retry_queue if it.cut is not None]
        if kept:
            self.retry_queue = deque(it for it in self.retry_queue if it.cap is None)
            await asyncio.gather(*kept)
