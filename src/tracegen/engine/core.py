"""The generation core: what the online engine (:mod:`.runner`) and the Batch API runner
(:mod:`tracegen.batch.runner`) share. They differ only in how requests travel (one HTTP call each, or
files and polling); everything else is here, built once:

- :class:`Request`: one planned record prepared for sending -- body, request key, worst-case reservation;
- :class:`Pricer`: the run's pricing, and the pricing of the model an answer names (a model priced above
  the reserved one is a ``model_problem`` that stops the run);
- :func:`stop_reason_of`: the one mapping from a teacher or run-directory error to stats.json's
  ``stop_reason``;
- :func:`finish_figures`: at a budget stop, what is left and the budget that would finish it (stats.json
  ``to_finish``), online, batch and per stage of a staged run;
- :class:`Core`: the session both drivers are -- counters (:class:`~.counters.Counters`), the usage check,
  the record writer (answer lines and their token/dollar accounting), the finish (files flushed,
  failed.jsonl compacted, stats.json written) and the stats keys both report.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .._version import __version__
from ..errors import AuthError, FailingRunError, QuotaError, RunDirError, TracegenError, WaitTooLongError
from ..planning.params import chat_body, with_cap
from ..planning.prices import (
    Pricing,
    ResolvedPrices,
    answered_model_problem,
    answered_pricing,
    prices_stats,
    resolve_prices,
)
from ..planning.tokens import count_chat_tokens, count_text_tokens, encoding_for_model
from ..records import Record
from . import store
from ._json import canonical_json, request_key
from .budget import utc_now_iso
from .counters import Counters
from .events import Progress, RunResult
from .settings import EngineSettings, Teacher
from .store import DoneSet, ResultWriter, RunDir, answer_line
from .usage import UsageCheck, check_usage

__all__ = [
    "PROMPT_MARGIN",
    "PROMPT_MARGIN_TOKENS",
    "Core",
    "Pricer",
    "Request",
    "cents_up",
    "finish_figures",
    "stop_reason_of",
]

log = logging.getLogger("tracegen.engine")

#: Safety margin on our own prompt-token count when reserving dollars (the API may count a few more).
PROMPT_MARGIN = 1.02
PROMPT_MARGIN_TOKENS = 8


class Request:
    """One planned record, prepared for sending: its body, request key and worst-case reservation.

    ``cap`` (a length retry) raises the completion cap in the body; the key stays the record's (a length
    retry answers the same planned request). ``batch`` keys the request as the Batch API runner always has
    (:func:`~._json.request_key` of the body) and keeps no payload; the online engine keys it by the sha256
    of the body's canonical JSON, which is the same key for chat models (for reasoning models the two
    differ, as they always have: changing either would send answered requests again).
    """

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

    def __init__(
        self,
        rec: Record,
        teacher: Teacher,
        pricing: Pricing,
        encoding: str,
        *,
        cap: int | None = None,
        batch: bool = False,
    ) -> None:
        messages = rec.messages()
        body = chat_body(messages, teacher)
        payload: bytes | None
        if batch:
            key = request_key(body)
            digest = bytes.fromhex(key[:32])
            payload = None
        else:
            payload = canonical_json(body)
            full = hashlib.sha256(payload).digest()
            key = full.hex()
            digest = full[:16]
        max_tokens = teacher.max_tokens
        if cap is not None:
            body = with_cap(body, cap)
            max_tokens = cap
            payload = None if payload is None else canonical_json(body)
        prompt_tokens = rec.prompt_tokens or count_chat_tokens(messages, encoding)
        worst_prompt = math.ceil(prompt_tokens * PROMPT_MARGIN) + PROMPT_MARGIN_TOKENS
        self.rec = rec
        self.body = body
        self.payload = payload
        self.key = key
        self.digest = digest
        self.prompt_tokens = prompt_tokens
        self.limit_tokens = prompt_tokens + max_tokens
        self.res_usd = pricing.cost_usd(worst_prompt, max_tokens)
        self.res_tokens = worst_prompt + max_tokens
        self.latency_s = 0.0


class Pricer:
    """The run's pricing (online or batch prices) and the pricing each answering model bills at.

    A model with no known price is an error under a budget (``budget_usd``), else costs are recorded as 0.
    """

    def __init__(self, teacher: Teacher, *, batch: bool, budget_usd: float | None) -> None:
        self.batch = batch
        self.price_file = teacher.price_file
        self.prices: ResolvedPrices | None = None
        try:
            self.prices = resolve_prices(
                teacher.model,
                input_price=teacher.input_price,
                output_price=teacher.output_price,
                price_file=teacher.price_file,
            )
            self.pricing = self.prices.batch if batch else self.prices.online
        except TracegenError:
            if budget_usd is not None:
                raise
            log.warning("no price known for %s: costs are recorded as 0", teacher.model)
            self.pricing = Pricing(0.0, 0.0)
        # per model id the endpoint answered with: the pricing it bills at, and what is wrong with it
        self.answered: dict[str, tuple[Pricing, str | None]] = {}
        self.model_problem: str | None = None
        """Set (once) when an answer came from a model priced above the reserved one."""

    def of(self, returned: str) -> Pricing:
        """The pricing an answer from ``returned`` is billed at; notes a model priced above the reserved."""
        got = self.answered.get(returned)
        if got is None:
            if self.prices is None:
                got = (self.pricing, None)
            else:
                batch, pf = self.batch, self.price_file
                got = (
                    answered_pricing(self.prices, returned, batch=batch, price_file=pf),
                    answered_model_problem(self.prices, returned, batch=batch, price_file=pf),
                )
            self.answered[returned] = got
        if got[1] is not None and self.model_problem is None:
            self.model_problem = got[1]
        return got[0]

    def stats(self) -> dict[str, Any]:
        """stats.json ``prices``."""
        return prices_stats(self.prices, batch=self.batch)


def stop_reason_of(err: BaseException) -> str:
    """stats.json ``stop_reason`` for a run stopped by ``err`` (a teacher or run-directory error)."""
    if isinstance(err, AuthError):
        return "auth"
    if isinstance(err, (QuotaError, WaitTooLongError)):  # a wait of hours: a quota running out (daily cap)
        return "quota"
    if isinstance(err, FailingRunError):
        return "circuit_breaker"
    if isinstance(err, RunDirError):
        return "run_dir"
    return "endpoint"


def cents_up(usd: float) -> float:
    """``usd`` rounded up to the cent (never down: a budget figure must not fall short by float noise)."""
    return math.ceil(usd * 100) / 100


def finish_figures(
    planned: int,
    left: int,
    *,
    mean_usd: float | None,
    spent_usd: float,
    last_worst_usd: float = 0.0,
    all_worst_usd: float | None = None,
) -> dict[str, Any]:
    """stats.json ``to_finish``: ``requests_left`` of ``requests_planned``, and when a cost is known
    ``more_usd`` (about what finishing costs) and ``finish_budget_usd`` (a budget that finishes the plan,
    rounded up to the cent). The rule, by how requests are reserved:

    - **one at a time** (online, ``all_worst_usd`` None): ``more_usd = left x mean`` (``mean_usd``: the
      mean cost of an answer so far) and ``finish_budget_usd = spent_usd + more_usd + last_worst_usd``:
      a reservation is released as its answer comes back, so only the last request must still find room
      for its worst case (prompt + max_tokens) on top of what the others cost. No figures without a mean.
    - **all at once** (Batch API, ``all_worst_usd``: the sum of the worst cases of every request left):
      a part reserves the worst case of all its requests before it is submitted, so the budget that lets
      the rest be submitted is ``spent_usd + all_worst_usd`` (at least ``spent_usd + more_usd``): an
      over-estimate of the bill, never an under-estimate of what the reservations need. ``more_usd`` is
      ``left x mean``, or the worst cases' sum while no answer has a cost yet.
    """
    out: dict[str, Any] = {"requests_left": left, "requests_planned": planned}
    if not left:
        return out
    more = left * mean_usd if mean_usd is not None else all_worst_usd
    if more is None:
        return out
    if all_worst_usd is None:
        need = spent_usd + more + last_worst_usd
    else:
        need = spent_usd + max(all_worst_usd, more)
    out["more_usd"] = round(more, 4)
    out["finish_budget_usd"] = cents_up(need)
    return out


class Answer(store.Answer, Protocol):
    """What the core reads from an answer (an online ChatResult, a batch Outcome): the line's fields and
    the usage."""

    @property
    def prompt_tokens(self) -> int | None: ...
    @property
    def completion_tokens(self) -> int | None: ...
    @property
    def reasoning_tokens(self) -> int | None: ...
    @property
    def cached_tokens(self) -> int | None: ...
    @property
    def usage_problem(self) -> str | None: ...


class Core(Counters):
    """One generation session over a run directory: what both drivers share (see the module docstring).

    A driver sets ``t0`` (its clock's start) and implements :meth:`stats` and :meth:`snapshot`.
    """

    batch = False

    def __init__(
        self,
        settings: EngineSettings,
        run_dir: RunDir,
        *,
        total: int | None,
        on_progress: Callable[[Progress], None] | None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.teacher = teacher = settings.teacher
        self.limits = settings.limits
        self.run_dir = run_dir
        self.total = total
        self.on_progress = on_progress
        self.encoding = encoding_for_model(teacher.model, teacher.price_file)
        self.pricer = Pricer(teacher, batch=self.batch, budget_usd=self.limits.budget_usd)
        self.pricing = self.pricer.pricing
        # run-directory state (read now, so errors surface before anything is sent)
        self.done: DoneSet = run_dir.load_done()
        self.writer = ResultWriter(run_dir)
        self.stop_reason: str | None = None
        self.fatal: BaseException | None = None
        self.started_at = utc_now_iso()

    # ---- answers -----------------------------------------------------------------------------------------
    def check_usage(self, answer: Answer, own_prompt_tokens: int, cap_tokens: int) -> UsageCheck:
        """The server's usage checked against what was sent (:mod:`.usage`), counted."""
        own_ct = (
            count_text_tokens(answer.content or "", self.encoding) if answer.completion_tokens is None else 0
        )
        check = check_usage(
            answer.prompt_tokens,
            answer.completion_tokens,
            problem=answer.usage_problem,
            own_prompt_tokens=own_prompt_tokens,
            own_completion_tokens=own_ct,
            cap_tokens=cap_tokens,
        )
        self.note_usage(anomaly=check.anomaly, mismatch=check.mismatch)
        return check

    def count_details(self, answer: Answer, pt: int, ct: int) -> None:
        """Reasoning and cached tokens, and the real bill (cached input at its price) of one answer."""
        self.reasoning_tokens += answer.reasoning_tokens or 0
        cached = answer.cached_tokens or 0
        self.cached_tokens += cached
        if not self.batch:  # a batch's bill is its output file's
            self.billed_usd += self.pricer.of(answer.model_returned).billed_usd(pt, ct, cached)

    def answer_line(
        self,
        rec: Record,
        key: str,
        answer: Answer,
        pt: int,
        ct: int,
        cost: float,
        timing: dict[str, Any] | None = None,
    ) -> tuple[int, bytes]:
        """The answer's line and the file it goes to (traces or rejected), its tokens and cost counted."""
        which, line = answer_line(
            rec,
            key,
            answer,
            model=self.teacher.model,
            prompt_tokens=pt,
            completion_tokens=ct,
            cost_usd=cost,
            reasoning_tokens=answer.reasoning_tokens or 0,
            timing=timing,
        )
        self.prompt_tokens += pt
        self.completion_tokens += ct
        self.count_details(answer, pt, ct)
        self.cost_usd += cost
        return which, line

    # ---- reporting ---------------------------------------------------------------------------------------
    def mean_cost_usd(self) -> float | None:
        """Mean cost of an answer: this session's, else earlier sessions' (traces.jsonl), else None."""
        answered = self.succeeded + self.rejected
        if answered:
            return self.cost_usd / answered
        prior = self.done.n_traces + self.done.n_rejected
        return self.done.cost_usd / prior if prior else None

    def to_finish(
        self,
        planned: int,
        left: int,
        *,
        spent_usd: float,
        last_worst_usd: float = 0.0,
        all_worst_usd: float | None = None,
    ) -> dict[str, Any]:
        """At a budget stop: what is left and what budget would finish it, at this session's prices
        (online or batch): :func:`finish_figures` with the mean cost of an answer so far."""
        return finish_figures(
            planned,
            left,
            mean_usd=self.mean_cost_usd(),
            spent_usd=spent_usd,
            last_worst_usd=last_worst_usd,
            all_worst_usd=all_worst_usd,
        )

    def stats(self) -> dict[str, Any]:  # pragma: no cover - every driver has its own
        raise NotImplementedError

    def snapshot(self) -> Progress:  # pragma: no cover - every driver has its own
        raise NotImplementedError

    def elapsed_s(self) -> float:  # pragma: no cover - every driver has its own clock
        raise NotImplementedError

    def base_stats(
        self,
        *,
        sent: int,
        unfinished: int,
        cost_usd: float,
        total_spent_usd: float,
        reserved_usd_unknown: float,
        limits: dict[str, float | None],
    ) -> dict[str, Any]:
        """The stats.json keys every session reports (a driver adds its own, then ``config``)."""
        return {
            "total_spent_usd": round(total_spent_usd, 9),
            "budget_usd": self.limits.budget_usd,
            "stop_reason": self.stop_reason or "interrupted",
            "planned": self.total if self.total is not None else self.read,
            "sent": sent,
            "unfinished": unfinished,
            **self.counter_stats(batch=self.batch),
            "cost_usd": round(cost_usd, 9),
            "reserved_usd_unknown": round(reserved_usd_unknown, 9),
            "started_at": self.started_at,
            "finished_at": utc_now_iso(),
            "elapsed_s": round(self.elapsed_s(), 3),
            "tracegen_version": __version__,
            "limits": limits,
            "traces_total": self.done.n_traces + self.succeeded,
            "prices": self.pricer.stats(),
        }

    def result_of(self, stats: Mapping[str, Any], *, cost_usd: float, total_spent_usd: float) -> RunResult:
        """The session's :class:`RunResult` (``cost_usd``: this session's spend, unrounded)."""
        return RunResult(
            stop_reason=str(stats["stop_reason"]),
            run_dir=self.run_dir.path,
            planned=int(stats["planned"]),
            sent=int(stats["sent"]),
            succeeded=self.succeeded,
            failed=self.failed,
            rejected=self.rejected,
            skipped_done=self.skipped_done,
            cost_usd=cost_usd,
            total_spent_usd=total_spent_usd,
            stats=dict(stats),
        )

    def emit(self) -> None:
        """Hand a :class:`Progress` to ``on_progress`` (a display bug must not kill the run)."""
        if self.on_progress is not None:
            try:
                self.on_progress(self.snapshot())
            except Exception:
                log.exception("on_progress callback failed")

    # ---- the finish --------------------------------------------------------------------------------------
    async def finish_files(self, close: Callable[[], None], keep: Callable[[], DoneSet]) -> dict[str, Any]:
        """Flush the result files, ``close`` the driver's own (ledger, journal), compact failed.jsonl to
        the keys not in ``keep()``, write stats.json; the first error becomes ``fatal``. Returns the stats."""
        errors: list[TracegenError] = []
        await self.writer.close()
        if self.writer.error is not None and self.fatal is None:
            self.fatal = self.writer.error
            self.stop_reason = "run_dir"
        try:
            close()
        except RunDirError as e:
            errors.append(e)
        if self.writer.error is None:
            try:
                self.run_dir.compact_failed(keep())
            except RunDirError as e:
                errors.append(e)
        stats = self.stats()
        try:
            self.run_dir.write_stats(stats)
        except RunDirError as e:
            errors.append(e)
        self.emit()
        if errors and self.fatal is None:
            self.fatal = errors[0]
        return stats
