"""Usage from the server, checked before it touches the ledger.

A server (or a gateway in front of it) reports ``usage.prompt_tokens`` and ``usage.completion_tokens``; the
budget charges them. A broken or hostile one can report anything: a negative count (which would *free*
budget), ``1e308``, a string, a completion longer than the cap that was sent. So, for every answer:

- **impossible usage** (an *anomaly*): a count that is not an integer, a negative count, a completion over
  the cap sent (``max_tokens`` / ``max_completion_tokens``) plus :data:`COMPLETION_TOLERANCE_TOKENS`, or a
  prompt count more than :data:`PROMPT_ABSURD_FACTOR` times tracegen's own count plus
  :data:`PROMPT_ABSURD_TOKENS`. The answer is charged at its *reservation* (the worst case tracegen had
  already set aside), the anomaly is counted in stats.json (``usage_anomalies``), and when they repeat
  (:data:`ANOMALIES_TO_STOP`, or more than 1% of answers) the run stops naming the endpoint.
- **a prompt mismatch**: the server's prompt count differs from tracegen's own count of the prompt it sent
  by more than :data:`MISMATCH_FRACTION` (and :data:`MISMATCH_TOKENS`). It is recorded (stats.json
  ``usage_mismatches``, the card) and the ledger charges the *larger* of the two, so a gateway that
  under-reports cannot stretch the budget.

The ledger can never go down: every charge is a finite number >= 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "ANOMALIES_TO_STOP",
    "COMPLETION_TOLERANCE_TOKENS",
    "MISMATCH_FRACTION",
    "MISMATCH_TOKENS",
    "PROMPT_ABSURD_FACTOR",
    "PROMPT_ABSURD_TOKENS",
    "UsageCheck",
    "check_usage",
    "read_count",
]

#: A completion may exceed the cap sent by this many tokens before it is impossible (some servers count a
#: closing special token beyond the cap).
COMPLETION_TOLERANCE_TOKENS = 16
#: A prompt count above ``factor * own + tokens`` is impossible, not a tokenizer difference.
PROMPT_ABSURD_FACTOR = 4.0
PROMPT_ABSURD_TOKENS = 1024
#: A prompt count differing from tracegen's own by more than this share *and* this many tokens is a
#: mismatch (recorded; the larger is charged).
MISMATCH_FRACTION = 0.25
MISMATCH_TOKENS = 16
#: Impossible usage this many times (and in more than 1% of the answers) stops the run.
ANOMALIES_TO_STOP = 3


def read_count(value: Any) -> int | str | None:
    """A usage count as sent: the int, None when absent, or a one-line problem (a string) when malformed."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        return f"not an integer ({_short(value)})"
    if value < 0:
        return f"negative ({value})"
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "…"


@dataclass(frozen=True, slots=True)
class UsageCheck:
    """What to charge for one answer, and what was wrong with the usage the server sent."""

    prompt_tokens: int
    completion_tokens: int
    anomaly: str | None = None
    """Why the usage is impossible (charge the reservation instead), or None."""
    mismatch: str | None = None
    """How the server's prompt count differs from tracegen's own (the larger is charged), or None."""


def check_usage(
    prompt: int | None,
    completion: int | None,
    *,
    problem: str | None = None,
    own_prompt_tokens: int,
    own_completion_tokens: int,
    cap_tokens: int,
) -> UsageCheck:
    """Check the server's usage against what was sent; see the module docstring.

    ``problem``: what was wrong while reading the usage (:func:`read_count`), if anything;
    ``own_completion_tokens`` is tracegen's count of the answer text (used when the server sent none).
    """
    problems: list[str] = [problem] if problem else []
    pt = prompt if prompt is not None else own_prompt_tokens
    ct = completion if completion is not None else own_completion_tokens
    if completion is not None and completion > cap_tokens + COMPLETION_TOLERANCE_TOKENS:
        problems.append(f"completion_tokens {completion} over the cap sent ({cap_tokens})")
    if prompt is not None and prompt > own_prompt_tokens * PROMPT_ABSURD_FACTOR + PROMPT_ABSURD_TOKENS:
        problems.append(f"prompt_tokens {prompt} for a prompt tracegen counts at {own_prompt_tokens}")
    if problems:
        return UsageCheck(own_prompt_tokens, max(0, min(ct, cap_tokens)), anomaly="; ".join(problems))
    mismatch: str | None = None
    if prompt is not None:
        diff = abs(prompt - own_prompt_tokens)
        if diff > MISMATCH_TOKENS and diff > MISMATCH_FRACTION * own_prompt_tokens:
            mismatch = f"server counted {prompt} prompt tokens, tracegen {own_prompt_tokens}"
            pt = max(prompt, own_prompt_tokens)
    return UsageCheck(pt, ct, mismatch=mismatch)
