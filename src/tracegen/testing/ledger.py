"""What the fake server billed (the ledger) and what it saw (counters), plus ``request_key``.

Every answer the server computed is billed, delivered or not: a request held past the client's timeout or
cut off mid-answer stays in the ledger with ``delivered: False``, because a real provider would have charged
it. Only the event loop thread mutates these objects; other threads read snapshots taken on that loop.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..planning.tokens import Pricing, model_info, pricing_for

__all__ = ["Counters", "Ledger", "LedgerEntry", "cost_usd", "request_key"]

_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


def request_key(body: dict[str, Any]) -> str:
    """sha256 hex of the canonical JSON of the body's keyed fields.

    A chat body: ``{model, messages, temperature, top_p, max_tokens}`` (missing fields count as null); a
    reasoning body (``max_completion_tokens`` set, no ``max_tokens``): ``{model, messages,
    max_completion_tokens}``; ``reasoning_effort`` is keyed when present. Canonical JSON: sorted keys,
    ``separators=(",", ":")``, ``ensure_ascii=False``, UTF-8.
    """
    if body.get("max_completion_tokens") is not None and body.get("max_tokens") is None:
        subset: dict[str, Any] = {
            "model": body.get("model"),
            "messages": body.get("messages"),
            "max_completion_tokens": body["max_completion_tokens"],
        }
    else:
        subset = {
            "model": body.get("model"),
            "messages": body.get("messages"),
            "temperature": body.get("temperature"),
            "top_p": body.get("top_p"),
            "max_tokens": body.get("max_tokens"),
        }
    if body.get("reasoning_effort") is not None:
        subset["reasoning_effort"] = body["reasoning_effort"]
    return hashlib.sha256(_canonical(subset).encode("utf-8")).hexdigest()


def cost_usd(
    model: str, prompt_tokens: int, completion_tokens: int, *, batch: bool, cached_tokens: int = 0
) -> float:
    """List price of one answer (Batch API prices when ``batch``); 0.0 for a model without a known price.

    ``completion_tokens`` includes reasoning tokens (billed as output); ``cached_tokens`` of the prompt are
    billed at the model's cached-input price when it has one.
    """
    pricing = _pricing(model, batch)
    return 0.0 if pricing is None else pricing.billed_usd(prompt_tokens, completion_tokens, cached_tokens)


@functools.lru_cache(maxsize=256)
def _pricing(model: str, batch: bool) -> Pricing | None:
    return None if model_info(model) is None else pricing_for(model, batch=batch)


@dataclass(slots=True)
class LedgerEntry:
    """One billed answer (slots: a rehearsal of a million requests keeps a million of these)."""

    request_key: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    delivered: bool
    custom_id: str | None
    kind: str  # "online" | "batch"

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_key": self.request_key,
            "model": self.model,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": self.cost_usd,
            "delivered": self.delivered,
            "custom_id": self.custom_id,
            "kind": self.kind,
        }


class Ledger:
    """Billed answers, in billing order."""

    def __init__(self) -> None:
        self.entries: list[LedgerEntry] = []

    def bill(
        self,
        *,
        key: str,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        custom_id: str | None,
        kind: str,
        cached_tokens: int = 0,
    ) -> LedgerEntry:
        """Append one entry (``delivered`` False until the answer reaches the client) and return it."""
        cost = cost_usd(
            model, prompt_tokens, completion_tokens, batch=kind == "batch", cached_tokens=cached_tokens
        )
        entry = LedgerEntry(key, model, prompt_tokens, completion_tokens, cost, False, custom_id, kind)
        self.entries.append(entry)
        return entry

    def snapshot(self) -> list[dict[str, Any]]:
        return [e.to_dict() for e in self.entries]


@dataclass
class Counters:
    """What the server saw. ``snapshot()`` is the JSON of ``GET /_fake/counters``."""

    requests: int = 0  # chat completion requests received
    status: Counter[int] = field(default_factory=Counter)
    rate_limited: int = 0  # 429 rate_limit_exceeded (including "request too large")
    insufficient_quota: int = 0
    unauthorized: int = 0
    injected_500: int = 0
    injected_503: int = 0
    overloaded_503: int = 0  # refused because max_in_flight was reached
    timeouts: int = 0  # held hang_s (billed)
    drops: int = 0  # connection cut mid-answer (billed)
    in_flight: int = 0
    in_flight_max: int = 0
    files_uploaded: int = 0
    batches_created: int = 0
    batch_lines: int = 0  # batch lines answered (billed)
    files_deleted: int = 0
    files_stored: int = 0  # files on the server now (uploads and batch outputs, minus deletions)
    batches_in_flight_max: int = 0  # most batches not yet terminal at once

    def snapshot(self, ledger: Ledger) -> dict[str, Any]:
        billed = ledger.entries
        return {
            "requests": self.requests,
            "status": {str(code): n for code, n in sorted(self.status.items())},
            "rate_limited": self.rate_limited,
            "insufficient_quota": self.insufficient_quota,
            "unauthorized": self.unauthorized,
            "injected_500": self.injected_500,
            "injected_503": self.injected_503,
            "overloaded_503": self.overloaded_503,
            "timeouts": self.timeouts,
            "drops": self.drops,
            "in_flight": self.in_flight,
            "in_flight_max": self.in_flight_max,
            "files_uploaded": self.files_uploaded,
            "batches_created": self.batches_created,
            "batch_lines": self.batch_lines,
            "files_deleted": self.files_deleted,
            "files_stored": self.files_stored,
            "batches_in_flight_max": self.batches_in_flight_max,
            "billed": len(billed),
            "delivered": sum(1 for e in billed if e.delivered),
            "prompt_tokens": sum(e.prompt_tokens for e in billed),
            "completion_tokens": sum(e.completion_tokens for e in billed),
            "cost_usd": sum(e.cost_usd for e in billed),
        }
