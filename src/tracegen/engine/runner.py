"""The generation step: stream the plan through limiter + budget + retries to durable files.

``generate`` reads the plan lazily (millions of records are never materialized), skips records whose
request key is already done in the run directory, and for each of the others: reserves its worst-case cost
(budget) and capacity (limiter), sends it, retries through the one tenacity policy, writes the answer
durably and only then counts it. Every record ends in exactly one of: traces.jsonl (answered;
``finish_reason="length"`` kept and counted), rejected.jsonl (``content_filter``), failed.jsonl (error
chain; retried on rerun) or, when the run stops first, nowhere (sent again on rerun).

The first records go out as a wave of at most ``FIRST_WAVE`` (8): nothing else is sent until one of them
has an answer or the wave stayed quiet -- no error back -- for a few round trips of the endpoint (measured by
the pre-flight ``GET /models``; ``WAVE_QUIET_S`` when unmeasured, never less than ``WAVE_QUIET_MIN_S``):
errors come back in one round trip, answers take their generation time (when all of them fail, the next wave goes, so the circuit breaker sees the same error
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
:data:`~.send.PROTOCOL_ERRORS_TO_STOP` in a row stop the run ("does not speak the OpenAI API"); a retry-after
beyond :data:`~.client.MAX_RETRY_AFTER_S` stops the run with the server's figure.

Stopping (``stop`` event or cancellation): dispatch stops, requests waiting or backing off are dropped, the
ones on the wire get ``grace_s`` to finish (then are cancelled and charged at their reservation), every
file is flushed and stats.json written with ``stop_reason="interrupted"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping, Sized
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..records import Record
from ..redact import redact_url
from ..rundir import lock_run_dir
from ._gc import fewer_gc_passes
from .budget import Reservation
from .client import (
    ChatClient,
    ChatResult,
    base_url_of,
    teacher_client,
)
from .core import Request
from .events import Progress, RunResult
from .limiter import Permit
from .pool import EndpointPool, make_pool
from .preflight import round_trip_s
from .send import Sender
from .settings import EngineSettings, Teacher
from .store import DoneSet, RunDir

__all__ = ["generate"]

#: A record handed to a worker: the record prepared, its budget reservation and its limiter permit.
_Job = tuple[Request, Reservation, Permit]

log = logging.getLogger("tracegen.engine")

PROGRESS_INTERVAL_S = 0.5
RATE_WINDOW_S = 10.0
#: Records sent before the rest wait for a first answer (a bad key costs at most this many requests).
FIRST_WAVE = 8
#: A first wave with no error back after this long was accepted by the server: full concurrency (seconds).
#: The most the wave waits; with a measured round trip it waits ``QUIET_ROUND_TRIPS`` of them instead.
WAVE_QUIET_S = 0.5
#: Round trips (the pre-flight's, connection set-up included) a quiet wave waits for an error.
QUIET_ROUND_TRIPS = 4.0
#: The least a quiet wave waits, however close the endpoint (seconds).
WAVE_QUIET_MIN_S = 0.05


def wave_quiet_s(round_trip: float | None) -> float:
    """How long the first wave waits for an error before full concurrency: a few round trips, bounded."""
    if round_trip is None:
        return WAVE_QUIET_S
    return min(WAVE_QUIET_S, max(WAVE_QUIET_MIN_S, QUIET_ROUND_TRIPS * round_trip))


class _Engine(Sender):
    def __init__(
        self,
        settings: EngineSettings,
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
        quiet_s: float = WAVE_QUIET_S,
    ) -> None:
        super().__init__(
            settings,
            run_dir,
            client,
            pool,
            total=total,
            on_progress=on_progress,
            sleep=sleep,
            clock=clock,
            endpoint_url=endpoint_url,
        )
        self.own_client = own_client
        self.stop_event = stop
        self.grace_s = grace_s
        self.tasks: set[asyncio.Task[None]] = set()  # the workers (see _work)
        self.idle: list[asyncio.Future[_Job | None]] = []  # workers waiting for a record
        self.dispatch_closed = False  # the producer is done: workers end after their record
        self.producer: asyncio.Task[None] | None = None
        self.wave_size = min(FIRST_WAVE, settings.limits.concurrency)
        self.quiet_s = quiet_s
        self.grace_handle: asyncio.TimerHandle | None = None
        self.dispatched = 0
        self.failed_unsent = 0
        self.last_res_usd = 0.0
        self.t0 = clock()
        self.samples: deque[tuple[float, int, int, int]] = deque()
        self.last_stats: dict[str, Any] = {}

    # ---- stopping --------------------------------------------------------------------------------------
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
        if self.stopping or self.pricer.model_problem is not None:
            return False
        self.read += 1
        item = Request(rec, self.teacher, self.pricing, self.encoding)
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
        res = self.budget.try_reserve(item.res_usd, item.res_tokens)
        if res is None:  # no room now: wait for some (reserve tries again first, as it always does)
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
        job = (item, res, permit)
        idle = self.idle
        while idle:
            worker = idle.pop()
            if not worker.done():  # (a cancelled worker is done)
                worker.set_result(job)
                break
        else:
            task = asyncio.create_task(self._work(job))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        if not self.wave_opened:
            self.wave.add(item)
            if len(self.wave) >= self.wave_size:
                await self._hold_the_wave()
        return not self.stopping and self.pricer.model_problem is None

    async def _work(self, job: _Job | None) -> None:
        """A worker: answers records one after the other, as :meth:`_offer` hands them over.

        Workers are reused (a task per record costs more CPU than the record's own bookkeeping); one is
        started only when none is idle, so there are never more than records in progress. Cancelling a
        worker (at a stop) ends its record as cancelling its own task did; an idle worker just ends.
        """
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        while job is not None:
            await self._run_record(*job, task)
            if self.stopping or self.dispatch_closed:
                return
            wait: asyncio.Future[_Job | None] = loop.create_future()
            self.idle.append(wait)
            job = await wait

    def _close_dispatch(self) -> None:
        """No more records: idle workers end, busy ones after their record."""
        self.dispatch_closed = True
        idle, self.idle = self.idle, []
        for worker in idle:
            if not worker.done():
                worker.set_result(None)

    async def _hold_the_wave(self) -> None:
        """Wait for the first wave: its first answer, or ``quiet_s`` (:func:`wave_quiet_s`) with no error back.

        A refused key, an empty account or an unknown model answer at once (no generation runs), while an
        accepted request takes as long as its answer: a wave that stayed quiet that long was accepted, so
        full concurrency need not wait a whole answer's latency. Any error keeps the gate shut until an
        answer arrives (or the wave has all failed and the next one goes).
        """
        self.wave_turn.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.wave_turn.wait(), self.quiet_s)
        if self.wave_opened or self.wave_turn.is_set():
            return
        if self.attempt_errors == 0 and not self.stopping:
            self.wave_opened = True
            self.wave.clear()
            return
        await self.wave_turn.wait()

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
            mean = self.mean_cost_usd()
            budget = self.limits.budget_usd
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
            budget_usd=self.limits.budget_usd,
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

    def _to_finish(self, planned: int) -> dict[str, Any]:
        """At a budget stop: what is left and what budget would finish it (stats.json ``to_finish``).

        One request at a time: the last must fit its worst case when reserved (:func:`~.core.finish_figures`).
        """
        left = max(0, planned - self.skipped_done - self.succeeded - self.rejected - self.failed)
        return self.to_finish(
            planned, left, spent_usd=self.budget.total_spent_usd, last_worst_usd=self.last_res_usd
        )

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL_S)
            self.emit()

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
        stats = self.base_stats(
            sent=self.dispatched + self.failed_unsent,
            unfinished=self.unfinished,
            cost_usd=budget.spent_usd,
            total_spent_usd=budget.total_spent_usd,
            reserved_usd_unknown=budget.unknown_usd,
            limits={
                "requests_per_minute": self.limiter.requests_per_minute,
                "tokens_per_minute": self.limiter.tokens_per_minute,
            },
        )
        stats["failed_before_sending"] = self.failed_unsent
        if self.pool is not None:
            stats["endpoints"] = self.pool.stats()
        stats["config"] = self.settings.public_dict()
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
            try:
                await self.producer
            finally:
                self._close_dispatch()
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
        return self.result_of(
            self.last_stats, cost_usd=self.budget.spent_usd, total_spent_usd=self.budget.total_spent_usd
        )

    async def _finish(self, ticker: asyncio.Task[None], watcher: asyncio.Task[None] | None) -> None:
        if self.grace_handle is not None:
            self.grace_handle.cancel()
        for t in (ticker, watcher, self.producer):
            if t is not None and not t.done():
                t.cancel()
        self.last_stats = await self.finish_files(
            self.budget.close, lambda: DoneSet(self.done.keys - self.failed_keys, 0, 0, 0.0)
        )
        if self.own_client:
            with contextlib.suppress(Exception):
                await self.client.aclose()
            if self.pool is not None:
                await self.pool.aclose()

    def elapsed_s(self) -> float:
        return self.clock() - self.t0


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
    on_traces: Callable[[list[bytes]], None] | None = None,
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

    ``on_traces`` (on the event loop, must return quickly) receives each group of traces.jsonl lines once
    they are durable: the pipeline cleans answers while later ones are on the wire.
    """
    with lock_run_dir(run_dir.path if isinstance(run_dir, RunDir) else run_dir, "tracegen run"):
        return await _generate(
            records,
            EngineSettings.of(config),
            run_dir,
            client,
            on_progress,
            stop,
            sleep,
            clock,
            total,
            grace_s,
            pool,
            env,
            on_traces,
        )


async def _generate(
    records: Iterable[Record] | AsyncIterable[Record],
    settings: EngineSettings,
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
    on_traces: Callable[[list[bytes]], None] | None = None,
) -> RunResult:
    teacher = settings.teacher
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir.open(run_dir, None, settings.public_dict())
    if total is None and isinstance(records, Sized):
        total = len(records)
    own = client is None and pool is None  # what the engine opens, it closes
    if own and teacher.endpoints:
        pool = make_pool(settings, env, clock=clock)
    engine_client = (
        client if client is not None else _NoClient() if pool is not None else teacher_client(settings, env)
    )
    engine = _Engine(
        settings,
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
        endpoint_url=_display_url(teacher, env),
        quiet_s=WAVE_QUIET_S if pool is not None else wave_quiet_s(round_trip_s(base_url_of(teacher, env))),
    )
    engine.writer.on_traces = on_traces
    with fewer_gc_passes():
        return await engine.run(records)


def _display_url(teacher: Teacher, env: Mapping[str, str] | None) -> str:
    """The endpoint as messages name it (no credentials): the base URL, or the pool's URLs."""
    if teacher.endpoints:
        return ", ".join(redact_url(e.base_url) for e in teacher.endpoints)
    return redact_url(base_url_of(teacher, env))


class _NoClient:
    """The engine's client when an endpoint pool sends everything."""

    async def complete(
        self, body: dict[str, Any], request_id: str, *, payload: bytes | None = None
    ) -> ChatResult:
        raise AssertionError("with an endpoint pool, requests go through EndpointPool.complete")

    async def aclose(self) -> None:
        return None
