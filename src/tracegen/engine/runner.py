"""The generation step: stream the plan through limiter + budget + retries to durable files.

``generate`` reads the plan lazily (millions of records are never materialized), skips records whose
request key is already done in the run directory, and for each of the others: reserves its worst-case cost
(budget) and capacity (limiter), sends it, retries through the one tenacity policy, writes the answer
durably and only then counts it. Every record ends in exactly one of: traces.jsonl (answered;
``finish_reason="length"`` kept and counted), rejected.jsonl (``content_filter``), failed.jsonl (error
chain; retried on rerun) or, when the run stops first, nowhere (sent again on rerun).

The first record is a probe: nothing else is sent until it has an answer, so a bad key (401/403), an empty
account (insufficient_quota), an unknown model (404) or an unreachable endpoint stops the run after one
request, not a storm. Later 401/403/insufficient_quota answers stop the run at once too: dispatch stops,
requests in flight are cancelled (charged at their reservation), files are flushed, stats.json is written,
and the error is raised.

Stopping (``stop`` event or cancellation): dispatch stops, requests waiting or backing off are dropped, the
ones on the wire get ``grace_s`` to finish (then are cancelled and charged at their reservation), every
file is flushed and stats.json written with ``stop_reason="interrupted"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping, Sized
from pathlib import Path
from typing import Any

from .._version import __version__
from ..config import RunConfig
from ..errors import AuthError, EndpointError, QuotaError, RunDirError, TracegenError
from ..records import Record
from ..tokens import Pricing, count_chat_tokens, count_text_tokens, encoding_for_model, pricing_for
from ._gc import fewer_gc_passes
from ._json import canonical_json
from .budget import Budget, Reservation, utc_now_iso
from .client import (
    ChatClient,
    ChatResult,
    TeacherCallError,
    TeacherConnectionError,
    TeacherHTTPError,
    TeacherTimeout,
    make_client,
)
from .events import Progress, RunResult
from .limiter import Limiter, Permit
from .pool import EndpointPool, make_pool
from .retry import call_with_retries, fatal_error, retry_policy
from .store import FAILED, REJECTED, DoneSet, ResultWriter, RunDir, answer_line, failed_line

__all__ = ["generate"]

log = logging.getLogger("tracegen.engine")

PROGRESS_INTERVAL_S = 0.5
RATE_WINDOW_S = 10.0
#: Safety margin on our own prompt-token count when reserving dollars (the API may count a few more).
PROMPT_MARGIN = 1.02
PROMPT_MARGIN_TOKENS = 8


class _NoRoom(Exception):
    """A retry could not reserve (budget / token cap exhausted, or the run is stopping)."""


class _Item:
    """One planned record, prepared for sending."""

    __slots__ = (
        "body",
        "digest",
        "key",
        "limit_tokens",
        "payload",
        "prompt_tokens",
        "rec",
        "res_tokens",
        "res_usd",
    )

    def __init__(self, rec: Record, config: RunConfig, pricing: Pricing, encoding: str) -> None:
        messages = rec.messages()
        body = {
            "model": config.model,
            "messages": messages,
            "temperature": config.temperature,
            "top_p": config.top_p,
            "max_tokens": config.max_tokens,
        }
        payload = canonical_json(body)
        digest = hashlib.sha256(payload).digest()
        prompt_tokens = rec.prompt_tokens or count_chat_tokens(messages, encoding)
        self.rec = rec
        self.body = body
        self.payload = payload
        self.key = digest.hex()
        self.digest = digest[:16]
        self.prompt_tokens = prompt_tokens
        self.limit_tokens = prompt_tokens + config.max_tokens
        worst_prompt = math.ceil(prompt_tokens * PROMPT_MARGIN) + PROMPT_MARGIN_TOKENS
        self.res_usd = pricing.cost_usd(worst_prompt, config.max_tokens)
        self.res_tokens = worst_prompt + config.max_tokens


class _Engine:
    def __init__(
        self,
        config: RunConfig,
        run_dir: RunDir,
        client: ChatClient,
        own_client: bool,
        *,
        on_progress: Callable[[Progress], None] | None,
        stop: asyncio.Event | None,
        sleep: Callable[[float], Awaitable[None]],
        clock: Callable[[], float],
        total: int | None,
        grace_s: float,
        pool: EndpointPool | None = None,
    ) -> None:
        self.config = config
        self.pool = pool
        self.run_dir = run_dir
        self.client = client
        self.own_client = own_client
        self.on_progress = on_progress
        self.stop_event = stop
        self.clock = clock
        self.total = total
        self.grace_s = grace_s
        self.encoding = encoding_for_model(config.model)
        try:
            self.pricing = pricing_for(
                config.model, input_price=config.input_price, output_price=config.output_price
            )
        except TracegenError:
            if config.budget_usd is not None:
                raise
            log.warning("no price known for %s: costs are recorded as 0", config.model)
            self.pricing = Pricing(0.0, 0.0)
        self.done: DoneSet = run_dir.load_done()
        self.budget = Budget.open(
            run_dir.ledger_path,
            budget_usd=config.budget_usd,
            max_requests=config.max_requests,
            max_total_tokens=config.max_total_tokens,
            trace_cost_usd=self.done.cost_usd,
        )
        # with endpoints, the pool is the limiter: it grants each request on the endpoint free soonest
        self.limiter: Limiter | EndpointPool = pool or Limiter(
            requests_per_minute=config.requests_per_minute,
            tokens_per_minute=config.tokens_per_minute,
            concurrency=config.concurrency,
            clock=clock,
        )
        self.policy = retry_policy(
            config.max_attempts, should_stop=self._retry_blocked, sleep=sleep, before_sleep=self._on_retry
        )
        self.writer = ResultWriter(run_dir)
        # live tasks: in flight + backing off; bounded so a 429 storm cannot pile up tasks
        self.slots = asyncio.Semaphore(config.concurrency * 2 + 16)
        self.tasks: set[asyncio.Task[None]] = set()
        self.sending: set[asyncio.Task[Any]] = set()
        self.writing: set[asyncio.Task[Any]] = set()
        self.failed_keys: set[bytes] = set()
        self.producer: asyncio.Task[None] | None = None
        self.probe: _Item | None = None
        self.probe_done = asyncio.Event()
        self.stopping = False
        self.stop_reason: str | None = None
        self.fatal: TracegenError | None = None
        self.grace_handle: asyncio.TimerHandle | None = None
        # counters
        self.read = 0
        self.skipped_done = 0
        self.attempts = 0
        self.succeeded = 0
        self.failed = 0
        self.rejected = 0
        self.dispatched = 0
        self.failed_unsent = 0
        self.last_res_usd = 0.0
        self.n_length = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost_usd = 0.0
        self.n_429 = 0
        self.n_5xx = 0
        self.n_timeouts = 0
        self.n_conn = 0
        self.n_retries = 0
        self.started_at = utc_now_iso()
        self.t0 = clock()
        self.samples: deque[tuple[float, int, int, int]] = deque()
        # tokens the limiter holds against --tpm: prompt + max_tokens per attempt, less refunds on answers
        self.reserved_tokens = 0
        self.last_stats: dict[str, Any] = {}

    # ---- stopping --------------------------------------------------------------------------------------
    def _retry_blocked(self) -> bool:
        return self.stopping or self.budget.exhausted in ("budget", "max_tokens")

    def _on_retry(self, _state: Any) -> None:
        self.n_retries += 1

    def _begin_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        if self.stopping:
            return
        self.stopping = True
        self.budget.exhaust(reason)
        self.probe_done.set()
        if self.producer is not None and not self.producer.done():
            self.producer.cancel()
        for task in list(self.tasks):  # waiting or backing off: not on the wire, nothing to lose
            if task not in self.sending and task not in self.writing:
                task.cancel()
        if self.tasks:
            self.grace_handle = asyncio.get_running_loop().call_later(self.grace_s, self._cancel_all)

    def _cancel_all(self) -> None:
        for task in list(self.tasks):
            if task not in self.writing:
                task.cancel()

    def _stop_fatal(self, err: TracegenError, reason: str) -> None:
        if self.fatal is None:
            self.fatal = err
            log.error("%s", err)
        self._begin_stop(reason)
        self._cancel_all()

    async def _watch_stop(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._begin_stop("interrupted")

    # ---- dispatch ----------------------------------------------------------------------------------------
    async def _produce(self, records: Iterable[Record] | AsyncIterable[Record]) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            if isinstance(records, AsyncIterable):
                async for rec in records:
                    if not await self._offer(rec):
                        return
            else:
                for n, rec in enumerate(records):
                    if not await self._offer(rec):
                        return
                    if n & 1023 == 1023:
                        await asyncio.sleep(0)  # a long run of done records must not starve the loop
            if self.stop_reason is None:
                self.stop_reason = "completed"

    async def _offer(self, rec: Record) -> bool:
        if self.stopping:
            return False
        self.read += 1
        item = _Item(rec, self.config, self.pricing, self.encoding)
        if item.digest in self.done.keys:
            self.skipped_done += 1
            return True
        tpm = self.limiter.max_request_tokens
        if tpm is not None and item.limit_tokens > tpm:
            await self._fail(
                item,
                [],
                {
                    "type": "TooLarge",
                    "status": None,
                    "code": "request_too_large",
                    "message": f"needs {item.limit_tokens} tokens (prompt + max_tokens), more than the "
                    f"tokens-per-minute limit {tpm:g}: lower --max-tokens or raise --tpm",
                },
            )
            self.failed_unsent += 1
            return True
        await self.slots.acquire()
        res = await self.budget.reserve(item.res_usd, item.res_tokens)
        if res is None:
            self.slots.release()
            if self.stop_reason is None:
                self.stop_reason = self.budget.exhausted
            return False
        try:
            permit = await self.limiter.acquire(item.limit_tokens)
        except BaseException:
            self.budget.release(res)
            self.slots.release()
            raise
        self.done.keys.add(item.digest)
        self.dispatched += 1
        self.reserved_tokens += item.limit_tokens
        self.last_res_usd = item.res_usd
        task = asyncio.create_task(self._run_record(item, res, permit))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        if self.probe is None:
            self.probe = item
            await self.probe_done.wait()
        return not self.stopping

    # ---- one request ------------------------------------------------------------------------------------
    async def _attempt(
        self,
        item: _Item,
        body: dict[str, Any],
        payload: bytes | None,
        given: tuple[Reservation, Permit] | None,
    ) -> ChatResult:
        budget, limiter = self.budget, self.limiter
        res_usd, res_tokens, limit_tokens = item.res_usd, item.res_tokens, item.limit_tokens
        if body is not item.body:  # a retry of a "length" answer with more max_tokens
            extra = body["max_tokens"] - self.config.max_tokens
            res_usd += self.pricing.cost_usd(0, extra)
            res_tokens += extra
            limit_tokens += extra
        if given is None:
            if self.stopping:
                raise _NoRoom("the run is stopping")
            res = await budget.reserve(res_usd, res_tokens, new_request=False)
            if res is None:
                raise _NoRoom(f"not retried: {budget.exhausted} exhausted")
            try:
                permit = await limiter.acquire(limit_tokens)
            except BaseException:
                budget.release(res)
                raise
            self.reserved_tokens += limit_tokens
        else:
            res, permit = given
        self.attempts += 1
        task = asyncio.current_task()
        assert task is not None
        self.sending.add(task)
        t0 = self.clock()
        try:
            if self.pool is not None:
                result = await self.pool.complete(permit, body, item.rec.id, payload=payload)
            else:
                result = await self.client.complete(body, item.rec.id, payload=payload)
        except TeacherHTTPError as e:
            status = e.status
            if status == 429:
                self.n_429 += 1
            elif status >= 500:
                self.n_5xx += 1
            limiter.observe(permit, status=status, headers=e.headers, retry_after_s=e.retry_after_s)
            limiter.release(permit, None)
            budget.release(res)  # an error answer is not billed
            raise
        except TeacherCallError as e:
            if isinstance(e, TeacherTimeout):
                self.n_timeouts += 1
            else:
                self.n_conn += 1
            limiter.release(permit, None)
            if e.sent is False:
                budget.release(res)
            else:
                budget.charge_unknown(res)
            raise
        except BaseException:
            limiter.release(permit, None)
            budget.charge_unknown(res)
            raise
        finally:
            self.sending.discard(task)
        pt, ct = self._usage(item, result)
        limiter.observe(permit, status=200, headers=result.headers, latency_s=self.clock() - t0)
        limiter.release(permit, pt + ct)
        if isinstance(limiter, Limiter) and limiter.refunds_unused_tokens:  # else it stays counted
            self.reserved_tokens -= max(0, limit_tokens - (pt + ct))
        budget.settle(res, self.pricing.cost_usd(pt, ct), pt + ct)
        return result

    def _usage(self, item: _Item, result: ChatResult) -> tuple[int, int]:
        pt = result.prompt_tokens if result.prompt_tokens is not None else item.prompt_tokens
        ct = result.completion_tokens
        if ct is None:
            ct = count_text_tokens(result.content or "", self.encoding)
        return pt, ct

    async def _run_record(self, item: _Item, res: Reservation, permit: Permit) -> None:
        chain: list[TeacherCallError] = []
        first: list[tuple[Reservation, Permit]] = [(res, permit)]

        def attempt() -> Awaitable[ChatResult]:
            return self._attempt(item, item.body, item.payload, first.pop() if first else None)

        try:
            try:
                result = await call_with_retries(self.policy, attempt, chain)
            finally:
                if item is self.probe:
                    self.probe_done.set()
            pt, ct = self._usage(item, result)
            cost = self.pricing.cost_usd(pt, ct)
            if result.finish_reason == "length":
                self.n_length += 1
                if self.config.retry_length:
                    result, pt, ct, cost = await self._retry_length(item, result, pt, ct, cost)
            await self._record(item, result, pt, ct, cost)
        except TeacherCallError as e:
            if self.pool is not None and self.pool.all_dead:  # the last endpoint left the pool
                dead = self.pool.dead_error()
                self._stop_fatal(dead, _FATAL_REASON.get(type(dead), "endpoint"))
                return
            fatal = fatal_error(e, model=self.config.model)
            if fatal is not None:
                self._stop_fatal(fatal, "auth" if isinstance(fatal, AuthError) else "quota")
                return
            if item is self.probe and self.succeeded == 0 and self._endpoint_broken(e):
                self._stop_fatal(
                    EndpointError(
                        f"{e}; check --base-url / OPENAI_BASE_URL and --model "
                        "(or start a local server, e.g. `tracegen fake-server`)"
                    ),
                    "endpoint",
                )
                return
            await self._fail(item, chain, e.describe())
        except _NoRoom as e:
            last = chain[-1].describe() if chain else {}
            await self._fail(item, chain, {**last, "message": f"{last.get('message', '')} ({e})".strip()})
        except asyncio.CancelledError:  # counted as unfinished (see stats)
            self.failed_keys.add(item.digest)
        except RunDirError as e:
            self._stop_fatal(e, "run_dir")
        except Exception as e:  # an unexpected client/library error: count it, keep the others going
            await self._fail(
                item,
                chain,
                {"type": type(e).__name__, "status": None, "code": "client_error", "message": str(e)[:300]},
            )
        finally:
            self.slots.release()

    @staticmethod
    def _endpoint_broken(e: TeacherCallError) -> bool:
        if isinstance(e, TeacherConnectionError) and e.sent is False:
            return True
        return isinstance(e, TeacherHTTPError) and e.status == 404

    async def _retry_length(
        self, item: _Item, result: ChatResult, pt: int, ct: int, cost: float
    ) -> tuple[ChatResult, int, int, float]:
        """One more try with 2x max_tokens, if the budget allows; keep the first answer otherwise."""
        body = dict(item.body)
        body["max_tokens"] = self.config.max_tokens * 2
        chain: list[TeacherCallError] = []
        first: list[tuple[Reservation, Permit]] = []

        def attempt() -> Awaitable[ChatResult]:
            return self._attempt(item, body, None, first.pop() if first else None)

        try:
            longer = await call_with_retries(self.policy, attempt, chain)
        except (TeacherCallError, _NoRoom) as e:
            fatal = fatal_error(e) if isinstance(e, TeacherCallError) else None
            if fatal is not None:
                raise
            return result, pt, ct, cost
        lpt, lct = self._usage(item, longer)
        self.prompt_tokens += pt  # the first answer was billed too; its cost is added to the record's
        self.completion_tokens += ct
        lcost = self.pricing.cost_usd(lpt, lct)
        return longer, lpt, lct, cost + lcost

    async def _record(self, item: _Item, result: ChatResult, pt: int, ct: int, cost: float) -> None:
        which, line = answer_line(
            item.rec,
            item.key,
            result,
            model=self.config.model,
            prompt_tokens=pt,
            completion_tokens=ct,
            cost_usd=cost,
        )
        self.prompt_tokens += pt
        self.completion_tokens += ct
        self.cost_usd += cost
        await self._durable(which, line)
        if which == REJECTED:
            self.rejected += 1
        else:
            self.succeeded += 1

    async def _durable(self, which: int, line: bytes) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.writing.add(task)
        try:
            await self.writer.write(which, line)
        finally:
            self.writing.discard(task)

    async def _fail(self, item: _Item, chain: list[TeacherCallError], error: dict[str, Any]) -> None:
        self.failed_keys.add(item.digest)
        line = failed_line(item.key, item.rec, len(chain), error, [c.describe() for c in chain])
        await self._durable(FAILED, line)
        self.failed += 1

    # ---- progress ---------------------------------------------------------------------------------------
    def snapshot(self) -> Progress:
        now = self.clock()
        finished = self.succeeded + self.failed + self.rejected
        tokens = self.prompt_tokens + self.completion_tokens
        samples = self.samples
        samples.append((now, finished, tokens, self.reserved_tokens))
        while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW_S:
            samples.popleft()
        t_then, f_then, tok_then, res_then = samples[0]
        dt = now - t_then
        rps = (finished - f_then) / dt if dt > 0 else 0.0
        tpm = (tokens - tok_then) * 60.0 / dt if dt > 0 else 0.0
        rtpm = (self.reserved_tokens - res_then) * 60.0 / dt if dt > 0 else 0.0
        done = finished + self.skipped_done
        total = self.total
        spent = self.budget.total_spent_usd
        projected: float | None = None
        eta: float | None = None
        affordable: int | None = None
        if total is not None:
            remaining = max(0, total - done)
            mean = self._mean_cost_usd()
            budget = self.config.budget_usd
            if mean is not None and mean > 0:
                projected = spent + remaining * mean
                if budget is not None and projected > budget:  # the budget stops the run first
                    affordable = max(0, min(remaining, int((budget - spent) / mean)))
                    projected = spent + affordable * mean
            elif remaining == 0:
                projected = spent
            if rps > 0:
                eta = (remaining if affordable is None else affordable) / rps
        return Progress(
            done=done,
            total=total,
            succeeded=self.succeeded,
            failed=self.failed,
            rejected=self.rejected,
            skipped_done=self.skipped_done,
            cost_usd=spent,
            committed_usd=self.budget.committed_usd,
            budget_usd=self.config.budget_usd,
            projected_total_usd=projected,
            requests_per_s=rps,
            tokens_per_min=tpm,
            limit_rpm=self.limiter.requests_per_minute,
            limit_tpm=self.limiter.tokens_per_minute,
            n_429=self.n_429,
            n_retries=self.n_retries,
            in_flight=self.limiter.in_flight,
            eta_s=eta,
            elapsed_s=now - self.t0,
            affordable=affordable,
            reserved_tokens_per_min=rtpm,
        )

    def _mean_cost_usd(self) -> float | None:
        """Mean cost of an answer: this session's, else earlier sessions' (traces.jsonl), else None."""
        answered = self.succeeded + self.rejected
        if answered:
            return self.cost_usd / answered
        prior = self.done.n_traces + self.done.n_rejected
        return self.done.cost_usd / prior if prior else None

    def _to_finish(self, planned: int) -> dict[str, Any]:
        """At a budget stop: what is left and what budget would finish it (stats.json ``to_finish``)."""
        left = max(0, planned - self.skipped_done - self.succeeded - self.rejected - self.failed)
        mean = self._mean_cost_usd()
        out: dict[str, Any] = {"requests_left": left, "requests_planned": planned}
        if mean is not None and left:
            more = left * mean
            # the last request must fit its worst case (prompt + max_tokens) when it is reserved
            need = self.budget.total_spent_usd + more + self.last_res_usd
            out["more_usd"] = round(more, 4)
            out["finish_budget_usd"] = math.ceil(need * 100) / 100
        return out

    def _emit(self) -> None:
        if self.on_progress is not None:
            try:
                self.on_progress(self.snapshot())
            except Exception:  # a display bug must not kill the run
                log.exception("on_progress callback failed")

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL_S)
            self._emit()

    # ---- the run ----------------------------------------------------------------------------------------
    @property
    def unfinished(self) -> int:
        """Sent this session but neither answered nor failed: abandoned in flight at a stop (retried on rerun).

        Computed, so that ``sent = succeeded + rejected + failed + unfinished`` holds after any stop (a task
        cancelled before its first step never reaches its own bookkeeping).
        """
        failed_sent = self.failed - self.failed_unsent
        return max(0, self.dispatched - self.succeeded - self.rejected - failed_sent)

    def stats(self) -> dict[str, Any]:
        """stats.json: the run-wide spend first (``total_spent_usd``), then this session's counts.

        ``sent = succeeded + rejected + failed + unfinished`` (``failed_before_sending``, requests larger than
        the tokens-per-minute limit, are in ``failed`` but were never sent: they are added to ``sent`` in
        that identity when not zero).
        """
        budget = self.budget
        stats: dict[str, Any] = {
            "total_spent_usd": round(budget.total_spent_usd, 9),
            "budget_usd": self.config.budget_usd,
            "stop_reason": self.stop_reason or "interrupted",
            "planned": self.total if self.total is not None else self.read,
            "read": self.read,
            "sent": self.dispatched + self.failed_unsent,
            "attempts": self.attempts,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "failed_before_sending": self.failed_unsent,
            "rejected": self.rejected,
            "skipped_done": self.skipped_done,
            "unfinished": self.unfinished,
            "length": self.n_length,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": round(budget.spent_usd, 9),
            "answers_cost_usd": round(self.cost_usd, 9),
            "reserved_usd_unknown": round(budget.unknown_usd, 9),
            "started_at": self.started_at,
            "finished_at": utc_now_iso(),
            "elapsed_s": round(self.clock() - self.t0, 3),
            "tracegen_version": __version__,
            "n_429": self.n_429,
            "n_5xx": self.n_5xx,
            "n_retries": self.n_retries,
            "n_timeouts": self.n_timeouts,
            "n_connection_errors": self.n_conn,
            "limits": {
                "requests_per_minute": self.limiter.requests_per_minute,
                "tokens_per_minute": self.limiter.tokens_per_minute,
            },
            "traces_total": self.done.n_traces + self.succeeded,
            **({"endpoints": self.pool.stats()} if self.pool is not None else {}),
            "config": self.config.public_dict(),
        }
        if stats["stop_reason"] == "budget":
            stats["to_finish"] = self._to_finish(int(stats["planned"]))
        return stats

    async def run(self, records: Iterable[Record] | AsyncIterable[Record]) -> RunResult:
        await self.writer.start()
        ticker = asyncio.create_task(self._tick())
        watcher = asyncio.create_task(self._watch_stop(self.stop_event)) if self.stop_event else None
        self.producer = asyncio.create_task(self._produce(records))
        cancelled = False
        try:
            await self.producer
            while self.tasks:
                await asyncio.wait(set(self.tasks))
        except asyncio.CancelledError:
            cancelled = True
            self._begin_stop("interrupted")
            self._cancel_all()
            pending = set(self.tasks)
            if pending:
                await asyncio.wait(pending)
        finally:
            await self._finish(ticker, watcher)
        if self.fatal is not None:
            raise self.fatal
        if cancelled:
            raise asyncio.CancelledError
        stats = self.last_stats
        return RunResult(
            stop_reason=stats["stop_reason"],
            run_dir=self.run_dir.path,
            planned=stats["planned"],
            sent=stats["sent"],
            succeeded=self.succeeded,
            failed=self.failed,
            rejected=self.rejected,
            skipped_done=self.skipped_done,
            cost_usd=self.budget.spent_usd,
            total_spent_usd=self.budget.total_spent_usd,
            stats=stats,
        )

    async def _finish(self, ticker: asyncio.Task[None], watcher: asyncio.Task[None] | None) -> None:
        if self.grace_handle is not None:
            self.grace_handle.cancel()
        for t in (ticker, watcher, self.producer):
            if t is not None and not t.done():
                t.cancel()
        errors: list[TracegenError] = []
        await self.writer.close()
        if self.writer.error is not None and self.fatal is None:
            self.fatal = self.writer.error
            self.stop_reason = "run_dir"
        try:
            self.budget.close()
        except RunDirError as e:
            errors.append(e)
        if self.writer.error is None:
            keep = self.done
            keep_keys = keep.keys - self.failed_keys
            try:
                self.run_dir.compact_failed(DoneSet(keep_keys, 0, 0, 0.0))
            except RunDirError as e:
                errors.append(e)
        self.last_stats = self.stats()
        try:
            self.run_dir.write_stats(self.last_stats)
        except RunDirError as e:
            errors.append(e)
        self._emit()
        if self.own_client:
            with contextlib.suppress(Exception):
                await self.client.aclose()
            if self.pool is not None:
                await self.pool.aclose()
        if errors and self.fatal is None:
            self.fatal = errors[0]


async def generate(
    records: Iterable[Record] | AsyncIterable[Record],
    config: RunConfig,
    run_dir: Path | RunDir,
    *,
    client: ChatClient | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    stop: asyncio.Event | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    total: int | None = None,
    grace_s: float = 30.0,
    pool: EndpointPool | None = None,
    env: Mapping[str, str] | None = None,
) -> RunResult:
    """Answer ``records`` with the teacher into ``run_dir``, within the config's budget and limits.

    ``run_dir``: a :class:`RunDir` (opened with the plan parameters) or a path (opened checking only the
    teacher settings). ``client``: default :func:`make_client` from the config and environment.
    ``on_progress`` receives a :class:`Progress` about every 0.5 s and once at the end. Setting ``stop``
    stops gracefully. ``sleep``/``clock`` are injectable for tests; ``total`` (planned records) feeds the
    ETA and projected cost. Raises AuthError / QuotaError / EndpointError / RunDirError after a clean
    shutdown (files flushed, stats.json written).

    With ``config.endpoints`` (and no ``client``), requests go to an :class:`~.pool.EndpointPool` of the
    endpoints serving ``config.model`` (keys from ``env``, default os.environ); ``pool`` passes one in.
    """
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir.open(run_dir, None, config.public_dict())
    if total is None and isinstance(records, Sized):
        total = len(records)
    own = client is None and pool is None  # what the engine opens, it closes
    if own and config.endpoints:
        pool = make_pool(config, env, clock=clock)
    engine_client = (
        client if client is not None else _NoClient() if pool is not None else make_client(config, env)
    )
    engine = _Engine(
        config,
        rd,
        engine_client,
        own,
        on_progress=on_progress,
        stop=stop,
        sleep=sleep,
        clock=clock,
        total=total,
        grace_s=grace_s,
        pool=pool,
    )
    with fewer_gc_passes():
        return await engine.run(records)


_FATAL_REASON: dict[type[TracegenError], str] = {AuthError: "auth", QuotaError: "quota"}


class _NoClient:
    """The engine's client when an endpoint pool sends everything."""

    async def complete(
        self, body: dict[str, Any], request_id: str, *, payload: bytes | None = None
    ) -> ChatResult:
        raise AssertionError("with an endpoint pool, requests go through EndpointPool.complete")

    async def aclose(self) -> None:
        return None
