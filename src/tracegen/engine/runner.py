"""The generation step: stream the plan through limiter + budget + retries to durable files.

``generate`` reads the plan lazily (millions of records are never materialized), skips records whose
request key is already done in the run directory, and for each of the others: reserves its worst-case cost
(budget) and capacity (limiter), sends it, retries through the one tenacity policy, writes the answer
durably and only then counts it. Every record ends in exactly one of: traces.jsonl (answered;
``finish_reason="length"`` kept and counted), rejected.jsonl (``content_filter``), failed.jsonl (error
chain; retried on rerun) or, when the run stops first, nowhere (sent again on rerun).

The first records go out as a wave of at most ``FIRST_WAVE`` (8): nothing else is sent until one of them
has an answer (when all of them fail, the next wave goes, so the circuit breaker sees the same error
again before the window opens), so a bad key (401/403), an empty account (quota exhaustion, also
as a gateway rewrites it), an unknown model (404) or an unreachable endpoint stops the run after at most
that wave, not a storm -- without the cost of one lone probe's full latency. Later auth/quota answers stop
the run at once too: dispatch stops, requests in flight are cancelled (charged at their reservation), files
are flushed, stats.json is written, and the error is raised. A :class:`~.breaker.CircuitBreaker` stops a
run whose recent attempts mostly fail with the same error (:class:`FailingRunError`).

Hostile or broken endpoints (see :mod:`.usage` and :mod:`.client`): usage is checked before it touches the
ledger (impossible usage is charged at the reservation and counted; repeated, it stops the run naming the
endpoint; a prompt count far from tracegen's own is recorded and the larger is charged); an answer that is
not an OpenAI chat completion is a protocol error whose reservation is released, and
:data:`PROTOCOL_ERRORS_TO_STOP` in a row stop the run ("does not speak the OpenAI API"); a retry-after
beyond :data:`~.client.MAX_RETRY_AFTER_S` stops the run with the server's figure.

Stopping (``stop`` event or cancellation): dispatch stops, requests waiting or backing off are dropped, the
ones on the wire get ``grace_s`` to finish (then are cancelled and charged at their reservation), every
file is flushed and stats.json written with ``stop_reason="interrupted"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import math
import os
import time
from collections import deque
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping, Sized
from pathlib import Path
from typing import Any

from .._version import __version__
from ..config import RunConfig
from ..errors import AuthError, EndpointError, FailingRunError, QuotaError, RunDirError, TracegenError
from ..lock import lock_run_dir
from ..params import body_cap, chat_body, with_cap
from ..prices import (
    Pricing,
    ResolvedPrices,
    answered_model_problem,
    answered_pricing,
    prices_stats,
    resolve_prices,
)
from ..records import Record
from ..redact import excerpt, redact_url
from ..tokens import count_chat_tokens, count_text_tokens, encoding_for_model
from ._gc import fewer_gc_passes
from ._json import canonical_json
from .breaker import CircuitBreaker
from .budget import Budget, Reservation, utc_now_iso
from .classify import is_rate_limited
from .client import (
    DEFAULT_BASE_URL,
    ChatClient,
    ChatResult,
    TeacherCallError,
    TeacherConnectionError,
    TeacherHTTPError,
    TeacherProtocolError,
    TeacherTimeout,
    make_client,
)
from .events import Progress, RunResult
from .limiter import Limiter, Permit
from .pool import EndpointPool, make_pool
from .retry import call_with_retries, fatal_error, retry_policy
from .store import FAILED, REJECTED, DoneSet, ResultWriter, RunDir, answer_line, failed_line
from .usage import ANOMALIES_TO_STOP, check_usage

__all__ = ["generate"]

log = logging.getLogger("tracegen.engine")

PROGRESS_INTERVAL_S = 0.5
RATE_WINDOW_S = 10.0
#: Safety margin on our own prompt-token count when reserving dollars (the API may count a few more).
PROMPT_MARGIN = 1.02
PROMPT_MARGIN_TOKENS = 8
#: Answers in a row that are not OpenAI chat completions before the run stops.
PROTOCOL_ERRORS_TO_STOP = 3
#: Examples of usage anomalies / mismatches kept in stats.json.
USAGE_EXAMPLES = 5
#: Records sent before the rest wait for a first answer (a bad key costs at most this many requests).
FIRST_WAVE = 8


class _NoRoom(Exception):
    """A retry could not reserve (budget / token cap exhausted, or the run is stopping)."""


class _Item:
    """One planned record, prepared for sending."""

    __slots__ = (
        "body",
        "digest",
        "key",
        "latency_s",
        "limit_tokens",
        "payload",
        "prompt_tokens",
        "rec",
        "res_tokens",
        "res_usd",
    )

    def __init__(self, rec: Record, config: RunConfig, pricing: Pricing, encoding: str) -> None:
        messages = rec.messages()
        body = chat_body(messages, config)
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
        self.latency_s = 0.0


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
        endpoint_url: str = "",
    ) -> None:
        self.config = config
        self.endpoint_url = endpoint_url
        self.pool = pool
        self.run_dir = run_dir
        self.client = client
        self.own_client = own_client
        self.on_progress = on_progress
        self.stop_event = stop
        self.clock = clock
        self.total = total
        self.grace_s = grace_s
        self.encoding = encoding_for_model(config.model, config.price_file)
        self.prices: ResolvedPrices | None = None
        try:
            self.prices = resolve_prices(
                config.model,
                input_price=config.input_price,
                output_price=config.output_price,
                price_file=config.price_file,
            )
            self.pricing = self.prices.online
        except TracegenError:
            if config.budget_usd is not None:
                raise
            log.warning("no price known for %s: costs are recorded as 0", config.model)
            self.pricing = Pricing(0.0, 0.0)
        # per model id the endpoint answered with: the pricing it bills at, and what is wrong with it
        self.answered: dict[str, tuple[Pricing, str | None]] = {}
        self.model_problem: str | None = None
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
        self.wave: set[_Item] = set()  # records of the first wave not finished yet
        self.wave_size = min(FIRST_WAVE, config.concurrency)
        self.wave_opened = False  # the first answer came: full concurrency from now on
        self.wave_turn = asyncio.Event()  # wakes the producer: first answer, the wave all failed, or stop
        self.breaker = CircuitBreaker()
        self.wave_items: set[_Item] = set()  # first-wave records that finished (for the endpoint check)
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
        self.n_length_empty = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.reasoning_tokens = 0
        self.cached_tokens = 0
        self.billed_usd = 0.0
        self.cost_usd = 0.0
        self.n_429 = 0
        self.n_5xx = 0
        self.n_timeouts = 0
        self.n_conn = 0
        self.n_retries = 0
        self.n_protocol = 0
        self.protocol_in_a_row = 0
        self.usage_anomalies = 0
        self.usage_mismatches = 0
        self.usage_examples: list[str] = []
        self.mismatch_examples: list[str] = []
        self.started_at = utc_now_iso()
        self.t0 = clock()
        self.samples: deque[tuple[float, int, int, int]] = deque()
        # tokens the limiter holds against --tpm: prompt + max_tokens per attempt, less refunds on answers
        self.reserved_tokens = 0
        self.last_stats: dict[str, Any] = {}

    # ---- stopping --------------------------------------------------------------------------------------
    def _retry_blocked(self) -> bool:
        return self.stopping or self.budget.exhausted in ("budget", "max_total_tokens")

    def _on_retry(self, _state: Any) -> None:
        self.n_retries += 1

    def _begin_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        if self.stopping:
            return
        self.stopping = True
        self.budget.exhaust(reason)
        self.wave_turn.set()
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
        # requests on the wire get the grace period (their answers may be billed: record them, don't lose
        # them); nothing new is dispatched
        self._begin_stop(reason)

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
        if self.stopping or self.model_problem is not None:
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
        if not self.wave_opened:
            self.wave.add(item)
            if len(self.wave) >= self.wave_size:
                self.wave_turn.clear()
                await self.wave_turn.wait()
        return not self.stopping and self.model_problem is None

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
            extra = body_cap(body) - self.config.max_tokens
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
            if status != 503 and not is_rate_limited(e):  # load signals are the limiter's business
                self._watch_failure(e)
            raise
        except TeacherProtocolError as e:
            self.n_protocol += 1
            self.protocol_in_a_row += 1
            limiter.release(permit, None)
            if e.billed:
                budget.charge_unknown(res)
            else:
                budget.release(res)  # not a chat completion: no usage, nothing billed
            if self.protocol_in_a_row >= PROTOCOL_ERRORS_TO_STOP:
                self._stop_fatal(
                    EndpointError(
                        f"the endpoint at {self.endpoint_url or 'the configured URL'} does not speak the "
                        f"OpenAI API ({self.protocol_in_a_row} answers in a row were not chat completions; "
                        f"last: {e}); check --base-url / OPENAI_BASE_URL (it usually ends in /v1)"
                    ),
                    "endpoint",
                )
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
            if not isinstance(e, TeacherTimeout):  # slowness is load, like 429/503: not the breaker's
                self._watch_failure(e)
            raise
        except BaseException:
            limiter.release(permit, None)
            budget.charge_unknown(res)
            raise
        finally:
            self.sending.discard(task)
        self.protocol_in_a_row = 0
        result, usd, tokens = self._checked(item, result, body, res)
        pt, ct = self._usage(item, result)
        self.breaker.success()
        item.latency_s = self.clock() - t0
        limiter.observe(permit, status=200, headers=result.headers, latency_s=item.latency_s)
        limiter.release(permit, pt + ct)
        if isinstance(limiter, Limiter) and limiter.refunds_unused_tokens:  # else it stays counted
            self.reserved_tokens -= max(0, limit_tokens - (pt + ct))
        budget.settle(res, usd, tokens)
        return result

    def _checked(
        self, item: _Item, result: ChatResult, body: dict[str, Any], res: Reservation
    ) -> tuple[ChatResult, float, int]:
        """Check the server's usage (:mod:`.usage`); the answer with the counts to record, and the dollars
        and tokens to charge (the reservation when the usage is impossible)."""
        cap = body.get("max_completion_tokens") or body.get("max_tokens") or self.config.max_tokens
        own_ct = (
            count_text_tokens(result.content or "", self.encoding)
            if result.completion_tokens is None or result.usage_problem
            else 0
        )
        check = check_usage(
            result.prompt_tokens,
            result.completion_tokens,
            problem=result.usage_problem,
            own_prompt_tokens=item.prompt_tokens,
            own_completion_tokens=own_ct,
            cap_tokens=int(cap),
        )
        fixed = dataclasses.replace(
            result, prompt_tokens=check.prompt_tokens, completion_tokens=check.completion_tokens
        )
        if check.mismatch is not None:
            self.usage_mismatches += 1
            if len(self.mismatch_examples) < USAGE_EXAMPLES:
                self.mismatch_examples.append(check.mismatch)
        if check.anomaly is None:
            usd = self._pricing_of(result).cost_usd(check.prompt_tokens, check.completion_tokens)
            return fixed, usd, check.prompt_tokens + check.completion_tokens
        self.usage_anomalies += 1
        if len(self.usage_examples) < USAGE_EXAMPLES:
            self.usage_examples.append(check.anomaly)
        log.warning(
            "impossible usage from %s (%s): charged at the reservation", self.endpoint_url, check.anomaly
        )
        if self.usage_anomalies >= ANOMALIES_TO_STOP and self.usage_anomalies * 100 > self.succeeded + 1:
            # on the next loop turn: this answer is paid for and must reach traces.jsonl first
            asyncio.get_running_loop().call_soon(
                self._stop_fatal,
                EndpointError(
                    f"the endpoint at {self.endpoint_url or 'the configured URL'} reported impossible usage "
                    f"{self.usage_anomalies} times (last: {check.anomaly}); each was charged at its "
                    "reservation: check the server or gateway before spending more"
                ),
                "endpoint",
            )
        return fixed, res.usd, res.tokens

    def _pricing_of(self, result: ChatResult) -> Pricing:
        """The pricing ``result`` is billed at; notes (once) an answering model priced above the reserved one."""
        got = self.answered.get(result.model_returned)
        if got is None:
            if self.prices is None:
                got = (self.pricing, None)
            else:
                returned, pf = result.model_returned, self.config.price_file
                got = (
                    answered_pricing(self.prices, returned, batch=False, price_file=pf),
                    answered_model_problem(self.prices, returned, price_file=pf),
                )
            self.answered[result.model_returned] = got
        if got[1] is not None and self.model_problem is None:
            self.model_problem = got[1]
        return got[0]

    def _watch_failure(self, e: TeacherCallError) -> None:
        if fatal_error(e) is None and self.breaker.failure(e):
            same, of = self.breaker.tripped or (0, 0)
            if self.succeeded == 0 and self._endpoint_broken(e):
                self._stop_fatal(self._endpoint_error(e), "endpoint")
                return
            self._stop_fatal(
                FailingRunError(
                    f"stopped: {same} of the last {of} requests failed with the same error: {e}; "
                    "check --base-url, --model and OPENAI_API_KEY (a gateway may answer a bad key or an "
                    "unknown model with 400/500), then rerun the same command to resume"
                ),
                "circuit_breaker",
            )

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
            except BaseException:
                self._wave_finished(item, answered=False)
                raise
            self._wave_finished(item, answered=True)
            pt, ct = self._usage(item, result)
            cost = self._pricing_of(result).cost_usd(pt, ct)
            if result.finish_reason == "length":
                self.n_length += 1
                self.n_length_empty += not result.content
                if self.config.retry_length and self.model_problem is None:
                    result, pt, ct, cost = await self._retry_length(item, result, pt, ct, cost)
            await self._record(item, result, pt, ct, cost, chain)
            if self.model_problem is not None:
                self._stop_fatal(EndpointError(self.model_problem), "model_mismatch")
        except TeacherCallError as e:
            if self.pool is not None and self.pool.all_dead:  # the last endpoint left the pool
                dead = self.pool.dead_error()
                self._stop_fatal(dead, _FATAL_REASON.get(type(dead), "endpoint"))
                return
            fatal = fatal_error(e, model=self.config.model)
            if fatal is not None:
                self._stop_fatal(fatal, "auth" if isinstance(fatal, AuthError) else "quota")
                return
            if item in self.wave_items and self.succeeded == 0 and self._endpoint_broken(e):
                self._stop_fatal(self._endpoint_error(e), "endpoint")
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
                {
                    "type": type(e).__name__,
                    "status": None,
                    "code": "client_error",
                    "message": excerpt(str(e), 300),
                },
            )
        finally:
            self.slots.release()

    def _wave_finished(self, item: _Item, *, answered: bool) -> None:
        """Full concurrency from the first answer; until then, a new wave once all of the last one failed."""
        if item in self.wave:
            self.wave.discard(item)
            self.wave_items.add(item)
            if answered:
                self.wave_opened = True
                self.wave.clear()
            if answered or not self.wave:
                self.wave_turn.set()

    @staticmethod
    def _endpoint_error(e: TeacherCallError) -> EndpointError:
        return EndpointError(
            f"{e}; check --base-url / OPENAI_BASE_URL and --model "
            "(or start a local server, e.g. `tracegen fake-server`)"
        )

    @staticmethod
    def _endpoint_broken(e: TeacherCallError) -> bool:
        if isinstance(e, TeacherConnectionError) and e.sent is False:
            return True
        return isinstance(e, TeacherHTTPError) and e.status == 404

    async def _retry_length(
        self, item: _Item, result: ChatResult, pt: int, ct: int, cost: float
    ) -> tuple[ChatResult, int, int, float]:
        """One more try with 2x max_tokens, if the budget allows; keep the first answer otherwise."""
        body = with_cap(item.body, self.config.max_tokens * 2)
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
        self._count_details(result, pt, ct)
        lcost = self._pricing_of(longer).cost_usd(lpt, lct)
        return longer, lpt, lct, cost + lcost

    def _count_details(self, result: ChatResult, pt: int, ct: int) -> None:
        """Reasoning and cached tokens, and the real bill (cached input at its price) of one answer."""
        self.reasoning_tokens += result.reasoning_tokens or 0
        cached = result.cached_tokens or 0
        self.cached_tokens += cached
        self.billed_usd += self._pricing_of(result).billed_usd(pt, ct, cached)

    async def _record(
        self, item: _Item, result: ChatResult, pt: int, ct: int, cost: float, chain: list[TeacherCallError]
    ) -> None:
        which, line = answer_line(
            item.rec,
            item.key,
            result,
            model=self.config.model,
            prompt_tokens=pt,
            completion_tokens=ct,
            cost_usd=cost,
            reasoning_tokens=result.reasoning_tokens or 0,
            timing={  # for the run report (tracegen.report): when, how long, what was retried
                "answered_at": round(time.time(), 3),
                "latency_s": round(item.latency_s, 4),
                "retried": [getattr(e, "status", None) or type(e).__name__ for e in chain],
            },
        )
        self.prompt_tokens += pt
        self.completion_tokens += ct
        self._count_details(result, pt, ct)
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
            "length_empty": self.n_length_empty,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cached_tokens": self.cached_tokens,
            "cost_usd": round(budget.spent_usd, 9),
            "answers_cost_usd": round(self.cost_usd, 9),
            "answers_billed_usd": round(self.billed_usd, 9),
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
            "n_protocol_errors": self.n_protocol,
            "usage_anomalies": self.usage_anomalies,
            "usage_mismatches": self.usage_mismatches,
            **({"usage_anomaly_examples": self.usage_examples} if self.usage_examples else {}),
            **({"usage_mismatch_examples": self.mismatch_examples} if self.mismatch_examples else {}),
            "limits": {
                "requests_per_minute": self.limiter.requests_per_minute,
                "tokens_per_minute": self.limiter.tokens_per_minute,
            },
            "traces_total": self.done.n_traces + self.succeeded,
            "prices": prices_stats(self.prices, batch=False),
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
    with lock_run_dir(run_dir.path if isinstance(run_dir, RunDir) else run_dir, "tracegen run"):
        return await _generate(
            records, config, run_dir, client, on_progress, stop, sleep, clock, total, grace_s, pool, env
        )


async def _generate(
    records: Iterable[Record] | AsyncIterable[Record],
    config: RunConfig,
    run_dir: Path | RunDir,
    client: ChatClient | None,
    on_progress: Callable[[Progress], None] | None,
    stop: asyncio.Event | None,
    sleep: Callable[[float], Awaitable[None]],
    clock: Callable[[], float],
    total: int | None,
    grace_s: float,
    pool: EndpointPool | None,
    env: Mapping[str, str] | None,
) -> RunResult:
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
        endpoint_url=_display_url(config, env),
    )
    with fewer_gc_passes():
        return await engine.run(records)


def _display_url(config: RunConfig, env: Mapping[str, str] | None) -> str:
    """The endpoint as messages name it (no credentials): the base URL, or the pool's URLs."""
    if config.endpoints:
        return ", ".join(redact_url(e.base_url) for e in config.endpoints)
    env = os.environ if env is None else env
    return redact_url(config.base_url or env.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL)


_FATAL_REASON: dict[type[TracegenError], str] = {
    AuthError: "auth",
    QuotaError: "quota",
    FailingRunError: "circuit_breaker",
}


class _NoClient:
    """The engine's client when an endpoint pool sends everything."""

    async def complete(
        self, body: dict[str, Any], request_id: str, *, payload: bytes | None = None
    ) -> ChatResult:
        raise AssertionError("with an endpoint pool, requests go through EndpointPool.complete")

    async def aclose(self) -> None:
        return None
