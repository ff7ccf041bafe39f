"""The counters of a generation session, shared by the online engine and the Batch API runner.

A counter lives here and only here: :class:`Counters` declares it, and :meth:`Counters.counter_stats`
names it in stats.json. A driver increments the attributes (``self.succeeded += 1``: plain attributes,
so the online hot path pays nothing for the indirection) and adds its own run-level keys.
"""

from __future__ import annotations

from typing import Any

__all__ = ["USAGE_EXAMPLES", "Counters"]

#: Examples of usage anomalies / mismatches kept in stats.json.
USAGE_EXAMPLES = 5

#: stats.json keys only the online engine reports (a batch has no protocol errors, and its bill is the
#: output file's: it reports neither the cached-price bill nor usage examples).
_ONLINE_ONLY = (
    "answers_billed_usd",
    "n_protocol_errors",
    "usage_anomaly_examples",
    "usage_mismatch_examples",
)


class Counters:
    """What a session counted: records read and finished, tokens, dollars, errors by kind."""

    def __init__(self) -> None:
        self.read = 0
        self.skipped_done = 0
        self.attempts = 0
        self.succeeded = 0
        self.failed = 0
        self.rejected = 0
        self.n_length = 0
        self.n_length_empty = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.reasoning_tokens = 0
        self.cached_tokens = 0
        self.cost_usd = 0.0
        """What the answers of this session cost (every prompt token at the full input price)."""
        self.billed_usd = 0.0
        """Their real bill (cached input at its price)."""
        self.n_429 = 0
        self.n_5xx = 0
        self.n_timeouts = 0
        self.n_conn = 0
        self.n_retries = 0
        self.n_protocol = 0
        self.usage_anomalies = 0
        self.usage_mismatches = 0
        self.usage_examples: list[str] = []
        self.mismatch_examples: list[str] = []

    def note_usage(self, *, anomaly: str | None, mismatch: str | None) -> None:
        """Count what :func:`~.usage.check_usage` found in one answer's usage (keeping a few examples)."""
        if mismatch is not None:
            self.usage_mismatches += 1
            if len(self.mismatch_examples) < USAGE_EXAMPLES:
                self.mismatch_examples.append(mismatch)
        if anomaly is not None:
            self.usage_anomalies += 1
            if len(self.usage_examples) < USAGE_EXAMPLES:
                self.usage_examples.append(anomaly)

    def counter_stats(self, *, batch: bool) -> dict[str, Any]:
        """The counters' stats.json keys (``batch``: without the online-only ones)."""
        stats: dict[str, Any] = {
            "read": self.read,
            "attempts": self.attempts,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "rejected": self.rejected,
            "skipped_done": self.skipped_done,
            "length": self.n_length,
            "length_empty": self.n_length_empty,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cached_tokens": self.cached_tokens,
            "answers_cost_usd": round(self.cost_usd, 9),
            "answers_billed_usd": round(self.billed_usd, 9),
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
        }
        if batch:
            for key in _ONLINE_ONLY:
                stats.pop(key, None)
        return stats
