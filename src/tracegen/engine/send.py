"""One request's life in the online engine: reserve (budget + limiter), send, retry, check the usage,
settle, record -- and the failures that stop the run (see :mod:`.runner` for dispatch and stopping).

:class:`Sender` is the online driver's half of the generation core (:class:`~.core.Core`): what happens to
one planned record once the dispatcher hands it a reservation and a permit.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import EndpointError, FailingRunError, RunDirError, TracegenError
from ..planning.params import body_cap, with_cap
from ..planning.tokens import count_text_tokens
from ..redact import excerpt
from .breaker import CircuitBreaker
from .budget import Budget, Reservation
from .classify import is_rate_limited
from .client import (
    ChatClient,
    ChatResult,
    TeacherCallError,
    TeacherConnectionError,
    TeacherHTTPError,
    TeacherProtocolError,
    TeacherTimeout,
)
from .core import Core, Request, stop_reason_of
from .events import Progress
from .limiter import Limiter, Permit
from .pool import EndpointPool
from .retry import call_with_retries, fatal_error, retry_failed, retry_policy
from .settings import EngineSettings
from .store import FAILED, REJECTED, RunDir, failed_line
from .usage import ANOMALIES_TO_STOP

__all__ = ["PROTOCOL_ERRORS_TO_STOP", "Sender"]

log = logging.getLogger("tracegen.engine")

#: Answers in a row that are not OpenAI chat completions before the run stops.
PROTOCOL_ERRORS_TO_STOP = 3


class _NoRoom(Exception):
    """A retry could not reserve (budget / token cap exhausted, or the run is stopping)."""


class Sender(Core):
    """The online session's per-request half: budget, limiter, retry policy, circuit breaker, first wave."""

    def __init__(
        self,
        settings: EngineSettings,
        run_dir: RunDir,
        client: ChatClient,
        pool: EndpointPool | None,
        *,
        total: int | None,
        on_progress: Callable[[Progress], None] | None,
        sleep: Callable[[float], Awaitable[None]],
        clock: Callable[[], float],
        endpoint_url: str,
    ) -> None:
        super().__init__(settings, run_dir, total=total, on_progress=on_progress)
        limits = settings.limits
        self.endpoint_url = endpoint_url
        """The endpoint as messages name it (no credentials)."""
        self.client = client
        self.pool = pool
        self.clock = clock
        self.budget = Budget.open(
            run_dir.ledger_path,
            budget_usd=limits.budget_usd,
            max_requests=limits.max_requests,
            max_total_tokens=limits.max_total_tokens,
            trace_cost_usd=self.done.cost_usd,
        )
        # with endpoints, the pool is the limiter: it grants each request on the endpoint free soonest
        self.limiter: Limiter | EndpointPool = pool or Limiter(
            requests_per_minute=limits.requests_per_minute,
            tokens_per_minute=limits.tokens_per_minute,
            concurrency=limits.concurrency,
            clock=clock,
        )
        self.policy = retry_policy(
            limits.max_attempts, should_stop=self._retry_blocked, sleep=sleep, before_sleep=self._on_retry
        )
        # live tasks: in flight + backing off; bounded so a 429 storm cannot pile up tasks
        self.slots = asyncio.Semaphore(limits.concurrency * 2 + 16)
        self.sending: set[asyncio.Task[Any]] = set()
        self.writing: set[asyncio.Task[Any]] = set()
        self.failed_keys: set[bytes] = set()
        self.wave: set[Request] = set()  # records of the first wave not finished yet
        self.wave_opened = (
            False  # the first answer came (or the wave stayed quiet): full concurrency from now on
        )
        self.attempt_errors = (
            0  # attempts that failed other than by load (429/503/timeouts): the wave's check
        )
        self.wave_turn = asyncio.Event()  # wakes the producer: first answer, the wave all failed, or stop
        self.breaker = CircuitBreaker()
        self.wave_items: set[Request] = set()  # first-wave records that finished (for the endpoint check)
        self.stopping = False
        self.protocol_in_a_row = 0
        # tokens the limiter holds against --tpm: prompt + max_tokens per attempt, less refunds on answers
        self.reserved_tokens = 0

    def _begin_stop(self, reason: str) -> None:  # pragma: no cover - the dispatcher's (runner.py)
        raise NotImplementedError

    # ---- stopping --------------------------------------------------------------------------------------
    def _retry_blocked(self) -> bool:
        return self.stopping or self.budget.exhausted in ("budget", "max_total_tokens")

    def _on_retry(self, _state: Any) -> None:
        self.n_retries += 1

    def _stop_fatal(self, err: TracegenError, reason: str) -> None:
        if self.fatal is None:
            self.fatal = err
            log.error("%s", err)
        # requests on the wire get the grace period (their answers may be billed: record them, don't lose
        # them); nothing new is dispatched
        self._begin_stop(reason)

    # ---- one request ------------------------------------------------------------------------------------
    async def _attempt(
        self,
        item: Request,
        body: dict[str, Any],
        payload: bytes | None,
        given: tuple[Reservation, Permit] | None,
        task: asyncio.Task[Any],
    ) -> ChatResult:
        budget, limiter = self.budget, self.limiter
        res_usd, res_tokens, limit_tokens = item.res_usd, item.res_tokens, item.limit_tokens
        cap = limit_tokens - item.prompt_tokens  # the body's completion cap (body_cap(item.body))
        if body is not item.body:  # a retry of a "length" answer with more max_tokens
            cap = body_cap(body)
            extra = cap - self.teacher.max_tokens
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
            self.attempt_errors += 1
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
        result, usd, tokens = self._checked(item, result, cap, res)
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
        self, item: Request, result: ChatResult, cap: int, res: Reservation
    ) -> tuple[ChatResult, float, int]:
        """Check the server's usage (:mod:`.usage`) against the completion cap sent; the answer with the
        counts to record, and the dollars and tokens to charge (the reservation when the usage is impossible)."""
        check = self.check_usage(result, item.prompt_tokens, cap or self.teacher.max_tokens)
        fixed = result
        if check.prompt_tokens != result.prompt_tokens or check.completion_tokens != result.completion_tokens:
            fixed = dataclasses.replace(
                result, prompt_tokens=check.prompt_tokens, completion_tokens=check.completion_tokens
            )
        if check.anomaly is None:
            usd = self.pricer.of(result.model_returned).cost_usd(check.prompt_tokens, check.completion_tokens)
            return fixed, usd, check.prompt_tokens + check.completion_tokens
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

    def _watch_failure(self, e: TeacherCallError) -> None:
        self.attempt_errors += 1
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

    def _usage(self, item: Request, result: ChatResult) -> tuple[int, int]:
        pt = result.prompt_tokens if result.prompt_tokens is not None else item.prompt_tokens
        ct = result.completion_tokens
        if ct is None:
            ct = count_text_tokens(result.content or "", self.encoding)
        return pt, ct

    async def _run_record(
        self, item: Request, res: Reservation, permit: Permit, task: asyncio.Task[Any]
    ) -> None:
        """Answer one record (``task``: the one running it, which the stop logic tells by what it does)."""
        chain: list[TeacherCallError] = []

        def again() -> Awaitable[ChatResult]:
            return self._attempt(item, item.body, item.payload, None, task)

        try:
            try:
                # the first attempt is awaited here directly (one coroutine layer less per request than
                # call_with_retries); only a failure goes through the retry policy, as there
                try:
                    result = await self._attempt(item, item.body, item.payload, (res, permit), task)
                except TeacherCallError as e:
                    result = await retry_failed(self.policy, e, again, chain)
            except BaseException:
                self._wave_finished(item, answered=False)
                raise
            if self.wave:
                self._wave_finished(item, answered=True)
            pt, ct = self._usage(item, result)
            cost = self.pricer.of(result.model_returned).cost_usd(pt, ct)
            if result.finish_reason == "length":
                self.n_length += 1
                self.n_length_empty += not result.content
                if self.limits.retry_length and self.pricer.model_problem is None:
                    result, pt, ct, cost = await self._retry_length(item, result, pt, ct, cost, task)
            self._record(item, result, pt, ct, cost, chain)
            if self.pricer.model_problem is not None:
                self._stop_fatal(EndpointError(self.pricer.model_problem), "model_mismatch")
        except TeacherCallError as e:
            if self.pool is not None and self.pool.all_dead:  # the last endpoint left the pool
                dead = self.pool.dead_error()
                self._stop_fatal(dead, stop_reason_of(dead))
                return
            fatal = fatal_error(e, model=self.teacher.model)
            if fatal is not None:
                self._stop_fatal(fatal, stop_reason_of(fatal))
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

    def _wave_finished(self, item: Request, *, answered: bool) -> None:
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
        self, item: Request, result: ChatResult, pt: int, ct: int, cost: float, task: asyncio.Task[Any]
    ) -> tuple[ChatResult, int, int, float]:
        """One more try with 2x max_tokens, if the budget allows; keep the first answer otherwise."""
        body = with_cap(item.body, self.teacher.max_tokens * 2)
        chain: list[TeacherCallError] = []

        def attempt() -> Awaitable[ChatResult]:  # each attempt reserves its own budget and permit
            return self._attempt(item, body, None, None, task)

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
        self.count_details(result, pt, ct)
        lcost = self.pricer.of(longer.model_returned).cost_usd(lpt, lct)
        return longer, lpt, lct, cost + lcost

    def _record(
        self, item: Request, result: ChatResult, pt: int, ct: int, cost: float, chain: list[TeacherCallError]
    ) -> None:
        """Queue the answer's line; it counts once durable (:meth:`_recorded`, called by the writer's
        commit: the record's task need not wait for it, nor be woken for the count)."""
        which, line = self.answer_line(
            item.rec,
            item.key,
            result,
            pt,
            ct,
            cost,
            timing={  # for the run report (tracegen.report): when, how long, what was retried
                "answered_at": round(time.time(), 3),
                "latency_s": round(item.latency_s, 4),
                "retried": [getattr(e, "status", None) or type(e).__name__ for e in chain],
            },
        )
        self.writer.write_then(which, line, self._recorded)

    def _recorded(self, which: int, error: RunDirError | None) -> None:
        """An answer's line is durable: count it; or it could not be written: stop the run."""
        if error is not None:
            self._stop_fatal(error, "run_dir")
        elif which == REJECTED:
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

    async def _fail(self, item: Request, chain: list[TeacherCallError], error: dict[str, Any]) -> None:
        self.failed_keys.add(item.digest)
        line = failed_line(item.key, item.rec, len(chain), error, [c.describe() for c in chain])
        await self._durable(FAILED, line)
        self.failed += 1
